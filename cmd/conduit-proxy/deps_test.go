package main

import (
	"os/exec"
	"strings"
	"testing"
)

// forbiddenDeps are the module path prefixes conduit-proxy must never link:
// they would cost megabytes of RSS in every pod.
var forbiddenDeps = []string{
	"k8s.io/client-go",
	"k8s.io/apimachinery",
	"github.com/charmbracelet",
	"helm.sh",
}

// forbiddenIn lists the packages pkg depends on (transitively) that match
// forbiddenDeps.
func forbiddenIn(t *testing.T, pkg string) []string {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", pkg).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, msg)
	}
	var bad []string
	for _, dep := range strings.Fields(string(out)) {
		for _, prefix := range forbiddenDeps {
			if dep == prefix || strings.HasPrefix(dep, prefix+"/") {
				bad = append(bad, dep)
			}
		}
	}
	return bad
}

func TestProxyHasNoHeavyDependencies(t *testing.T) {
	if bad := forbiddenIn(t, "."); len(bad) > 0 {
		t.Errorf("cmd/conduit-proxy depends on %d forbidden packages (client-go, apimachinery, charmbracelet, Helm stay out of the proxy): %s",
			len(bad), strings.Join(bad, ", "))
	}
}

// TestDependencyCheckFindsClientGo shows the check can fail: the CLI does
// link client-go.
func TestDependencyCheckFindsClientGo(t *testing.T) {
	bad := forbiddenIn(t, "../conduit")
	for _, dep := range bad {
		if strings.HasPrefix(dep, "k8s.io/client-go/") {
			return
		}
	}
	t.Fatalf("the dependency check found no client-go package in cmd/conduit (found %q): the check is broken", bad)
}
