package main

import (
	"os/exec"
	"strings"
	"testing"
)

// forbiddenDeps are the module path prefixes conduit-proxy must never link:
// they would cost megabytes of RSS in every pod (bench/notes.md measured
// grpc-go and client_golang; the proxy speaks gRPC with grpcwire, writes its
// metrics by hand and its nftables rules over netlink itself). Each names a
// package of this repository that does link it, with its tests when test,
// to prove the check finds it.
var forbiddenDeps = []struct {
	prefix, linkedBy string
	test             bool
}{
	{prefix: "k8s.io/client-go", linkedBy: "../conduit"},
	{prefix: "k8s.io/apimachinery", linkedBy: "../conduit"},
	{prefix: "github.com/charmbracelet", linkedBy: "../conduit"},
	{prefix: "helm.sh", linkedBy: "../conduit"},
	{prefix: "google.golang.org/grpc", linkedBy: "../conduit-controller"},
	{prefix: "github.com/prometheus/client_golang", linkedBy: "../conduit-controller"},
	{prefix: "github.com/google/nftables", linkedBy: "../../integration/netns", test: true},
}

// forbiddenIn lists the packages pkg depends on (transitively, and through
// its tests when test) that match forbiddenDeps.
func forbiddenIn(t *testing.T, pkg string, test bool) []string {
	t.Helper()
	args := []string{"list", "-deps"}
	if test {
		args = append(args, "-test")
	}
	out, err := exec.Command("go", append(args, pkg)...).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go %s %s: %v\n%s", strings.Join(args, " "), pkg, err, msg)
	}
	var bad []string
	for _, dep := range strings.Fields(string(out)) {
		for _, f := range forbiddenDeps {
			if inModule(dep, f.prefix) {
				bad = append(bad, dep)
			}
		}
	}
	return bad
}

// inModule reports whether the package path pkg is prefix or below it.
func inModule(pkg, prefix string) bool {
	return pkg == prefix || strings.HasPrefix(pkg, prefix+"/")
}

func TestProxyHasNoHeavyDependencies(t *testing.T) {
	if bad := forbiddenIn(t, ".", false); len(bad) > 0 {
		var prefixes []string
		for _, f := range forbiddenDeps {
			prefixes = append(prefixes, f.prefix)
		}
		t.Errorf("cmd/conduit-proxy depends on %d forbidden packages (%s stay out of the proxy): %s",
			len(bad), strings.Join(prefixes, ", "), strings.Join(bad, ", "))
	}
}

// TestDependencyCheckFindsEachForbiddenModule shows the check can fail: for
// every forbidden prefix it finds a package of it where one is linked (the
// CLI links client-go, the controller grpc-go, …).
func TestDependencyCheckFindsEachForbiddenModule(t *testing.T) {
	found := map[string][]string{}
	for _, f := range forbiddenDeps {
		key := f.linkedBy
		if f.test {
			key += " (with tests)"
		}
		if _, ok := found[key]; !ok {
			found[key] = forbiddenIn(t, f.linkedBy, f.test)
		}
		hit := false
		for _, dep := range found[key] {
			hit = hit || inModule(dep, f.prefix)
		}
		if !hit {
			t.Errorf("the dependency check found no %s package in %s (found %q): the check is broken, or %s no longer links it",
				f.prefix, key, found[key], f.linkedBy)
		}
	}
}
