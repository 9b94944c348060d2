package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

func TestVersion(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runMain(context.Background(), []string{"--version"}, &stdout, &stderr); code != 0 || stdout.String() != "dev\n" {
		t.Errorf("--version: exit %d, stdout %q, stderr %q", code, stdout.String(), stderr.String())
	}
}

// TestHelp: --cluster-networks's usage names policy's defaults (an empty
// list means them).
func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := runMain(context.Background(), []string{"-h"}, &stdout, &stderr); code != 0 {
		t.Fatalf("-h: exit %d", code)
	}
	if want := "(default " + strings.Join(policy.DefaultClusterNetworks, ",") + ")"; !strings.Contains(stderr.String(), want) {
		t.Errorf("-h lacks %q:\n%s", want, stderr.String())
	}
}

func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	garbage := filepath.Join(dir, "garbage.yaml")
	if err := os.WriteFile(garbage, []byte("services: [{name: web, bogus: 1}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		args []string
		code int
		want string
	}{
		{[]string{"--discovery", "consul"}, 2, `--discovery "consul": want kubernetes or local`},
		{[]string{"--discovery", "local"}, 2, "--discovery local needs --registry-file"},
		{[]string{"--discovery", "local", "--registry-file", garbage, "--identity-issuer-dir", dir}, 2, "needs --local-tokens-file"},
		{[]string{"--discovery", "local", "--registry-file", garbage, "--admin-addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"}, 1, "--registry-file: registry file " + garbage},
		{[]string{"--discovery", "local", "--registry-file", filepath.Join(dir, "missing.yaml")}, 1, "no such file"},
		{[]string{"--identity-lifetime", "1s"}, 2, "--identity-lifetime 1s: want at least 1m"},
		{[]string{"extra"}, 2, `unexpected argument "extra"`},
		{[]string{"--log-level", "loud", "--discovery", "local", "--registry-file", garbage}, 1, `--log-level "loud"`},
		{[]string{"--default-inbound-policy", "allow"}, 2, `--default-inbound-policy: "allow" is not a default inbound policy: want all-unauthenticated, all-authenticated,`},
		{[]string{"--cluster-networks", "10.0.0.0/8,10.0.0.0/33"}, 2, `--cluster-networks: "10.0.0.0/33" is not a CIDR`},
	}
	for _, tt := range tests {
		var stdout, stderr bytes.Buffer
		code := runMain(context.Background(), tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%v: exit %d, stderr %q; want exit %d and %q", tt.args, code, stderr.String(), tt.code, tt.want)
		}
		if stdout.Len() > 0 {
			t.Errorf("%v: wrote to stdout: %q", tt.args, stdout.String())
		}
	}
}
