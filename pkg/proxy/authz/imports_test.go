package authz

import (
	"os/exec"
	"strings"
	"testing"
)

// linkable are the only packages outside the standard library this package
// may link (itself, and what they import): the proxy decodes protobuf by
// hand and speaks gRPC with grpcwire. cmd/conduit-proxy/deps_test.go bans
// heavy modules from the proxy binary once it imports this package; this
// allowlist is stricter and holds before it does.
var linkable = []string{
	"github.com/conduitmesh/conduit/pkg/proxy/authz",
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire",
	"github.com/conduitmesh/conduit/pkg/contract",
	"google.golang.org/protobuf/encoding/protowire",
	"google.golang.org/protobuf/internal/", // protowire's own imports
	"golang.org/x/net/",
}

func TestImports(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", ".").Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list -deps: %v\n%s", err, msg)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatal("go list -deps listed nothing, not even this package")
	}
	for _, dep := range deps {
		ok := false
		for _, l := range linkable {
			ok = ok || dep == l || (strings.HasSuffix(l, "/") && strings.HasPrefix(dep, l))
		}
		if !ok {
			t.Errorf("pkg/proxy/authz links %s: the proxy's policy code may link only the standard library, protowire, grpcwire and golang.org/x/net", dep)
		}
	}
}
