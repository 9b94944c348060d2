package controller

import (
	"os"
	"path/filepath"
	"testing"
)

// TestRESTConfigRateLimit: the controller's API client is not held to
// client-go's default 5 requests/s, which capped certificate issuance
// (each Certify is a TokenReview).
func TestRESTConfigRateLimit(t *testing.T) {
	path := filepath.Join(t.TempDir(), "kubeconfig")
	kubeconfig := `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:6443"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`
	if err := os.WriteFile(path, []byte(kubeconfig), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := restConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS != kubeAPIQPS || cfg.Burst != kubeAPIBurst || cfg.Host != "https://127.0.0.1:6443" {
		t.Errorf("QPS %v, burst %d, host %s; want %d, %d and the kubeconfig's server", cfg.QPS, cfg.Burst, cfg.Host, kubeAPIQPS, kubeAPIBurst)
	}
}
