package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/yaml"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/healthcheck"
	"github.com/conduitmesh/conduit/pkg/install"
)

// TestBadOutputFormat: every command with -o rejects a format it does not
// offer in one line naming the value and the choices, writes nothing to
// stdout and exits non-zero, before touching any cluster.
func TestBadOutputFormat(t *testing.T) {
	t.Setenv("KUBECONFIG", "/nonexistent")
	for _, tc := range []struct {
		args    []string
		choices string
	}{
		{[]string{"install"}, "yaml or json"},
		{[]string{"upgrade"}, "json or yaml"},
		{[]string{"uninstall"}, "yaml or json"},
		{[]string{"check"}, "basic, short, json, yaml or junit"},
		{[]string{"version"}, "json or yaml, or leave it out for text"},
		{[]string{"stat", "deploy"}, "table, wide, json or yaml"},
		{[]string{"edges", "deploy"}, "table, wide, json or yaml"},
		{[]string{"top", "deploy/web"}, "table, json or yaml"},
		{[]string{"tap", "deploy/web"}, "wide, json or yaml"},
		{[]string{"demo"}, "table, json or yaml"},
	} {
		var out, errOut bytes.Buffer
		err := Run(context.Background(), IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, append(append([]string{"conduit"}, tc.args...), "-o", "xml"))
		want := `-o "xml" is not an output format of this command: use ` + tc.choices
		if err == nil || err.Error() != want {
			t.Errorf("%v -o xml: err %v, want %q", tc.args, err, want)
		}
		if code := ExitCode(&errOut, err); code == 0 || out.Len() != 0 || strings.Count(errOut.String(), "\n") != 1 {
			t.Errorf("%v -o xml: exit %d, stdout %q, stderr %q; want non-zero, nothing and one line", tc.args, code, out.String(), errOut.String())
		}
	}
}

// TestYAMLIsTheJSON: -o yaml prints the same document as -o json.
func TestYAMLIsTheJSON(t *testing.T) {
	addr := serveController(t, &fakeStats{rows: cannedRows(), edges: []*statsv1.Edge{
		{Src: &statsv1.Resource{Namespace: "demo", Name: "web"}, Dst: &statsv1.Resource{Namespace: "demo", Name: "books"}, Secured: true},
	}}, nil)
	for _, args := range [][]string{
		{"stat", "deploy", "-n", "demo", "--controller-addr", addr},
		{"edges", "deploy", "-n", "demo", "--controller-addr", addr},
		{"version", "--client"},
	} {
		outJSON, _, err := runObsCLI(context.Background(), t, append(args, "-o", "json")...)
		if err != nil {
			t.Fatalf("%v -o json: %v", args, err)
		}
		outYAML, _, err := runObsCLI(context.Background(), t, append(args, "-o", "yaml")...)
		if err != nil {
			t.Fatalf("%v -o yaml: %v", args, err)
		}
		sameDocument(t, strings.Join(args[:2], " "), outJSON, outYAML)
	}
}

// TestTopAndTapYAML: top's snapshot and tap's stream as YAML.
func TestTopAndTapYAML(t *testing.T) {
	px, addr := tapMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go makeTraffic(ctx, px, "/books/1", 200)
	out, _, err := runObsCLI(ctx, t, "top", "deploy/web", "-n", "demo", "--controller-addr", addr, "--duration", "1s", "-o", "yaml")
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := yaml.Unmarshal([]byte(out), &rows); err != nil || len(rows) != 1 || rows[0]["path"] != "/books/1" {
		t.Errorf("top -o yaml: %v, %v:\n%s", rows, err, out)
	}

	// tap: one document per event, each starting with ---.
	w := &lineWriter{n: 40, cancel: cancel}
	if err := Run(ctx, IOStreams{In: strings.NewReader(""), Out: w, ErrOut: &bytes.Buffer{}},
		[]string{"conduit", "tap", "deploy/web", "-n", "demo", "--controller-addr", addr, "-o", "yaml"}); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	stream := w.buf.String()
	if !strings.HasPrefix(stream, "---\n") {
		t.Fatalf("tap -o yaml does not start a document:\n%s", stream)
	}
	docs := strings.Split(stream, "---\n")[1:]
	for _, doc := range docs[:len(docs)-1] { // the last may be cut short by the cancel
		var ev map[string]any
		if err := yaml.Unmarshal([]byte(doc), &ev); err != nil || ev["type"] == nil || ev["source"] == nil {
			t.Errorf("tap -o yaml document %q: %v, %v", doc, ev, err)
		}
	}
	if len(docs) < 3 {
		t.Errorf("tap -o yaml wrote %d documents:\n%s", len(docs), stream)
	}
}

func TestCheckYAML(t *testing.T) {
	rep := healthcheck.Report{Success: true}
	var j, y bytes.Buffer
	if err := healthcheck.PrintJSON(&j, rep); err != nil {
		t.Fatal(err)
	}
	if err := asYAML(healthcheck.PrintJSON)(&y, rep); err != nil {
		t.Fatal(err)
	}
	sameDocument(t, "check", j.String(), y.String())
}

// TestUpgradePlanDocument: upgrade -o json|yaml prints the plan as data.
func TestUpgradePlanDocument(t *testing.T) {
	changes := []install.Change{
		{Key: install.ObjectKey{GroupKind: schema.GroupKind{Group: "apps", Kind: "Deployment"}, Namespace: "mesh", Name: "conduit-controller"},
			Action: install.ActionUpdate, Diff: "--- live\n+++ planned\n-image: a\n+image: b\n"},
		{Key: install.ObjectKey{GroupKind: schema.GroupKind{Kind: "ConfigMap"}, Namespace: "mesh", Name: "conduit-legacy"}, Action: install.ActionDelete, Diff: "-x\n"},
		{Key: install.ObjectKey{GroupKind: schema.GroupKind{Group: "rbac.authorization.k8s.io", Kind: "ClusterRole"}, Name: "conduit-new"}, Action: install.ActionCreate, Diff: "+y\n"},
	}
	var out bytes.Buffer
	if err := writeStructured(&out, "json", upgradePlan("mesh", "v1", "v2", changes)); err != nil {
		t.Fatal(err)
	}
	want := `{
  "namespace": "mesh",
  "fromVersion": "v1",
  "toVersion": "v2",
  "changes": [
    {
      "action": "update",
      "group": "apps",
      "kind": "Deployment",
      "namespace": "mesh",
      "name": "conduit-controller",
      "diff": "--- live\n+++ planned\n-image: a\n+image: b\n"
    },
    {
      "action": "delete",
      "kind": "ConfigMap",
      "namespace": "mesh",
      "name": "conduit-legacy",
      "diff": "-x\n"
    },
    {
      "action": "create",
      "group": "rbac.authorization.k8s.io",
      "kind": "ClusterRole",
      "name": "conduit-new",
      "diff": "+y\n"
    }
  ],
  "create": 1,
  "update": 1,
  "delete": 1
}
`
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("plan (-want +got):\n%s", diff)
	}
	out.Reset()
	if err := writeStructured(&out, "json", upgradePlan("conduit", "v2", "v2", nil)); err != nil || !strings.Contains(out.String(), `"changes": [],`) {
		t.Errorf("no changes: %v\n%s", err, out.String())
	}
}

// sameDocument fails unless yamlOut, converted to JSON, equals jsonOut.
func sameDocument(t *testing.T, what, jsonOut, yamlOut string) {
	t.Helper()
	converted, err := yaml.YAMLToJSON([]byte(yamlOut))
	if err != nil {
		t.Fatalf("%s -o yaml is not YAML: %v\n%s", what, err, yamlOut)
	}
	var a, b any
	if err := json.Unmarshal([]byte(jsonOut), &a); err != nil {
		t.Fatalf("%s -o json: %v\n%s", what, err, jsonOut)
	}
	if err := json.Unmarshal(converted, &b); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, b); diff != "" || strings.HasPrefix(yamlOut, "{") {
		t.Errorf("%s: -o yaml differs from -o json (-json +yaml):\n%s\n%s", what, diff, yamlOut)
	}
}
