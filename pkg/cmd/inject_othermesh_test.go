package cmd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestInjectOtherMesh: pods of Linkerd and Istio are skipped with the
// reason, and replaced with --force; the report says which.
func TestInjectOtherMesh(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("..", "inject", "testdata", "othermesh", "linkerd.input.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runInjectCLI(t, string(in), "inject", "-")
	if code != 0 || out != string(in) {
		t.Fatalf("exit %d, output changed: %v\n%s", code, out != string(in), errOut)
	}
	if !strings.Contains(errOut, `deployment "web" skipped: it is meshed by Linkerd (container linkerd-init): two proxies in one pod cannot work; migrate it with --force`) {
		t.Errorf("report:\n%s", errOut)
	}
	_, errOut, code = runInjectCLI(t, string(in), "inject", "--force", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if !strings.Contains(errOut, `deployment "web" annotated for injection, replacing Linkerd`) || strings.Contains(errOut, "skipped") {
		t.Errorf("--force report:\n%s", errOut)
	}
	_, errOut, code = runInjectCLI(t, injectDeploy, "inject", "--other-mesh-container", "web", "-")
	if code != 0 || !strings.Contains(errOut, `skipped: it is meshed by another mesh (container web)`) {
		t.Errorf("--other-mesh-container: exit %d: %s", code, errOut)
	}
	_, errOut, code = runInjectCLI(t, injectDeploy, "inject", "--other-mesh-annotation", "=x", "-")
	if code == 0 || !strings.Contains(errOut, `"=x" is not an annotation key`) {
		t.Errorf("bad --other-mesh-annotation: exit %d: %s", code, errOut)
	}
}

// TestReencodedNote: a document inject must rewrite (flow style) is named
// on stderr, with why it will not come back byte for byte.
func TestReencodedNote(t *testing.T) {
	flow := "apiVersion: v1\nkind: Pod\nmetadata: {name: p, annotations: {a: b}}\nspec:\n  containers:\n  - name: app\n    image: x\n"
	_, errOut, code := runInjectCLI(t, flow, "inject", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want := "-: document 1 was written anew, not edited in place, because a mapping to add conduit.io/inject to is written in flow style ({...})"
	if !strings.Contains(errOut, want) {
		t.Errorf("report:\n%s\nwant a line with:\n%s", errOut, want)
	}
	_, errOut, _ = runInjectCLI(t, injectDeploy, "inject", "-")
	if strings.Contains(errOut, "written anew") {
		t.Errorf("a block-style document was reported re-encoded:\n%s", errOut)
	}
}

// TestUninjectControlPlane: uninject leaves the control plane's objects
// as they are, and says so.
func TestUninjectControlPlane(t *testing.T) {
	in := strings.Replace(injectDeploy, "  name: web\n", "  name: web\n  namespace: conduit\n", 1)
	in = strings.Replace(in, "      labels:\n        app: web\n    spec:", "      labels:\n        app: web\n        conduit.io/proxy-version: v1\n    spec:", 1)
	out, errOut, code := runInjectCLI(t, in, "uninject", "-")
	if code != 0 || out != in {
		t.Fatalf("exit %d, changed %v: %s", code, out != in, errOut)
	}
	if errOut != "deployment \"web\" skipped: it is in the control plane namespace conduit; inject never meshes it, so it is left as it is\n" {
		t.Errorf("report %q", errOut)
	}
	// -L names another control plane namespace: conduit is then a user's.
	out, errOut, code = runInjectCLI(t, in, "uninject", "-L", "mesh", "-")
	if code != 0 || out == in || errOut != "deployment \"web\" uninjected\n" {
		t.Errorf("uninject -L mesh: exit %d, changed %v: %s", code, out != in, errOut)
	}
}
