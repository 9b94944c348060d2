package main

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// Each proxy variant builds from this repository's conduit-proxy and links
// the library it is named for (the plain proxy links neither).
func TestProxyVariantsBuild(t *testing.T) {
	if testing.Short() {
		t.Skip("builds conduit-proxy twice")
	}
	links := map[string]string{
		"conduit-grpcgo":     "google.golang.org/grpc",
		"conduit-promclient": "github.com/prometheus/client_golang",
	}
	for name := range proxyVariants {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, name)
			args, err := variantBuildArgs(name, "../../..", dir, out)
			if err != nil {
				t.Fatal(err)
			}
			if err := goBuild(context.Background(), "../../..", args); err != nil {
				t.Fatal(err)
			}
			mods, err := exec.Command("go", "version", "-m", out).Output()
			if err != nil {
				t.Fatalf("go version -m %s: %v", out, err)
			}
			if want := "\tdep\t" + links[name] + "\t"; !strings.Contains(string(mods), want) {
				t.Errorf("%s does not link %s:\n%s", name, links[name], mods)
			}
		})
	}
}
