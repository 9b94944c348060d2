package cmd

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// TestUninstallNeedsYesWithoutTerminal: piped or in CI, uninstall deletes
// nothing unless --yes says so, and says how to review and confirm.
func TestUninstallNeedsYesWithoutTerminal(t *testing.T) {
	inv := []*unstructured.Unstructured{{Object: map[string]any{"apiVersion": "v1", "kind": "ConfigMap", "metadata": map[string]any{"name": "conduit-config", "namespace": "mesh"}}}}
	var errOut bytes.Buffer
	g := &Globals{ProgName: "conduit", Streams: IOStreams{In: strings.NewReader("y\n"), Out: &bytes.Buffer{}, ErrOut: &errOut}}
	err := confirmUninstall(g, false, "mesh", inv, false)
	if err == nil {
		t.Fatal("uninstall without a terminal and without --yes went ahead")
	}
	for _, want := range []string{"1 objects", "namespace mesh", "no terminal", "`conduit uninstall -L mesh -o yaml`", "--yes"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q lacks %q", err, want)
		}
	}
	if strings.Contains(err.Error(), "\n") || errOut.Len() != 0 {
		t.Errorf("want one line and no question, got %q and stderr %q", err, errOut.String())
	}
	if err := confirmUninstall(g, true, "mesh", inv, false); err != nil {
		t.Errorf("with --yes: %v", err)
	}
}
