package main

import (
	"bytes"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCurrent fails when the committed standard install is not the one of
// the sigs.k8s.io/gateway-api version go.mod requires: run
// `go run ./hack/mkgatewaycrds` after changing that version.
func TestCurrent(t *testing.T) {
	dir, version, err := moduleDir()
	if err != nil {
		t.Fatal(err)
	}
	want, err := Render(dir, version)
	if err != nil {
		t.Fatal(err)
	}
	have, err := os.ReadFile(filepath.Join("..", "..", Output))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(have, want) {
		t.Fatalf("%s is not the standard install of %s %s: run go run ./hack/mkgatewaycrds", Output, Module, version)
	}
}

// Render refuses files of another version or channel, so a file copied by
// hand from elsewhere is caught.
func TestRenderChecksVersion(t *testing.T) {
	dir := t.TempDir()
	std := filepath.Join(dir, "config", "crd", "standard")
	if err := os.MkdirAll(std, 0o755); err != nil {
		t.Fatal(err)
	}
	crd := `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  annotations: {gateway.networking.k8s.io/bundle-version: v1.0.0, gateway.networking.k8s.io/channel: experimental}
  name: httproutes.gateway.networking.k8s.io
`
	if err := os.WriteFile(filepath.Join(std, "gateway.networking.k8s.io_httproutes.yaml"), []byte(crd), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Render(dir, "v1.0.0"); err == nil || !strings.Contains(err.Error(), `channel "experimental"`) {
		t.Errorf("experimental channel: %v", err)
	}
	if _, err := Render(dir, "v1.2.0"); err == nil || !strings.Contains(err.Error(), `version "v1.0.0"`) {
		t.Errorf("other version: %v", err)
	}
	if err := run([]string{"-check", "-out", filepath.Join(dir, "missing.yaml")}, io.Discard, io.Discard); err == nil {
		t.Error("-check of a missing file passed")
	}
}
