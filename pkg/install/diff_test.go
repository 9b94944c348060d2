package install

import (
	"bytes"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

func obj(m map[string]any) *unstructured.Unstructured { return &unstructured.Unstructured{Object: m} }

func TestDiffObjects(t *testing.T) {
	live := obj(map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "c", "namespace": "n", "resourceVersion": "7", "uid": "u",
			"managedFields": []any{map[string]any{"manager": "conduit"}}},
		"data":   map[string]any{"a": "1", "b": "2"},
		"status": map[string]any{"x": "y"},
	})
	same := obj(map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "c", "namespace": "n", "resourceVersion": "8"},
		"data":     map[string]any{"a": "1", "b": "2"},
	})
	changed := obj(map[string]any{
		"apiVersion": "v1", "kind": "ConfigMap",
		"metadata": map[string]any{"name": "c", "namespace": "n"},
		"data":     map[string]any{"a": "1", "b": "3"},
	})
	key := KeyOf(live)
	if d, err := diffObjects(key, live, same); err != nil || d != "" {
		t.Errorf("server-owned fields counted as a change: %q %v", d, err)
	}
	d, err := diffObjects(key, live, changed)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--- live/ConfigMap/n/c", "+++ planned/ConfigMap/n/c", "-  b: \"2\"", "+  b: \"3\""} {
		if !strings.Contains(d, want) {
			t.Errorf("diff lacks %q:\n%s", want, d)
		}
	}
	if strings.Contains(d, "resourceVersion") || strings.Contains(d, "managedFields") {
		t.Errorf("diff shows server-owned fields:\n%s", d)
	}
	if d, _ := diffObjects(key, live, nil); !strings.Contains(d, "-kind: ConfigMap") {
		t.Errorf("delete diff:\n%s", d)
	}
}

func TestDiffMasksSecrets(t *testing.T) {
	secret := func(crt, key string) *unstructured.Unstructured {
		return obj(map[string]any{"apiVersion": "v1", "kind": "Secret",
			"metadata": map[string]any{"name": "s", "namespace": "n"},
			"data":     map[string]any{"tls.crt": crt, "tls.key": key}})
	}
	d, err := diffObjects(ObjectKey{}, secret("AAAA", "SECRETKEY1"), secret("AAAA", "SECRETKEY2"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(d, "SECRETKEY") || strings.Contains(d, "AAAA") {
		t.Errorf("diff leaks secret data:\n%s", d)
	}
	if !strings.Contains(d, "-  tls.key: '*** (before)'") || !strings.Contains(d, "+  tls.key: '*** (after)'") {
		t.Errorf("diff does not mark the changed key:\n%s", d)
	}
}

func TestWritePlan(t *testing.T) {
	var b bytes.Buffer
	WritePlan(&b, nil)
	if !strings.HasPrefix(b.String(), "No changes") {
		t.Errorf("empty plan: %q", b.String())
	}
	b.Reset()
	WritePlan(&b, []Change{{Key: ObjectKey{Name: "x"}, Action: ActionDelete, Diff: "-a\n"}})
	if !strings.Contains(b.String(), "Plan: 0 to create, 0 to update, 1 to delete.") {
		t.Errorf("plan: %q", b.String())
	}
}

func TestPlainReporter(t *testing.T) {
	var b bytes.Buffer
	r := PlainReporter(&b)
	err := step(r, "Applying 2 objects", func(detail func(string)) error {
		detail("1/2 a")
		detail("1/2 a")
		detail("2/2 b")
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := "• Applying 2 objects\n  1/2 a\n  2/2 b\n✓ Applying 2 objects\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
