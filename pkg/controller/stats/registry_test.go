package stats

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

func TestRegistryFilePods(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.yaml")
	write := func(s string) {
		if err := os.WriteFile(path, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	src := RegistryFilePods(path)
	if _, err := src.Pods(context.Background()); err == nil {
		t.Fatal("a missing file gave no error")
	}
	write(`services: []
proxies:
- namespace: demo
  pod: web-0
  adminAddress: 127.0.0.1:4191
  identity: spiffe://cluster.local/ns/demo/sa/web
  labels: {deployment: web, service: web}
`)
	pods, err := src.Pods(context.Background())
	if err != nil || len(pods) != 1 || pods[0].AdminAddr != "127.0.0.1:4191" || pods[0].Labels["deployment"] != "web" || !pods[0].Meshed() {
		t.Fatalf("pods = %+v, %v", pods, err)
	}
	write("proxies: [{namespace: demo}]")
	if again, err := src.Pods(context.Background()); err != nil || len(again) != 1 {
		t.Errorf("an invalid file did not keep the last good list: %+v, %v", again, err)
	}
	if _, err := ParseRegistryPods([]byte("proxies: [{namespace: demo, pod: x, adminAddress: nope}]")); err == nil {
		t.Errorf("bad adminAddress accepted")
	}
}
