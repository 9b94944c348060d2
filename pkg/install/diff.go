package install

import (
	"fmt"
	"reflect"
	"strings"

	"github.com/pmezard/go-difflib/difflib"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

// Action is what an upgrade does to one object.
type Action string

// Actions.
const (
	ActionCreate Action = "create"
	ActionUpdate Action = "update"
	ActionDelete Action = "delete"
)

// Change is one object an upgrade creates, updates or prunes, with its
// unified diff (live → planned).
type Change struct {
	Key    ObjectKey
	Action Action
	Diff   string
	// Object is the live object for deletes, the planned one otherwise.
	Object *unstructured.Unstructured
}

// serverOwned are fields the server maintains; they never count as changes.
var serverOwned = [][]string{
	{"metadata", "managedFields"},
	{"metadata", "resourceVersion"},
	{"metadata", "generation"},
	{"metadata", "uid"},
	{"metadata", "creationTimestamp"},
	{"metadata", "selfLink"},
	{"status"},
}

// normalize copies obj without server-owned fields.
func normalize(obj *unstructured.Unstructured) map[string]any {
	if obj == nil {
		return nil
	}
	out := obj.DeepCopy().Object
	for _, path := range serverOwned {
		unstructured.RemoveNestedField(out, path...)
	}
	return out
}

// maskSecrets hides Secret values in both sides of a diff, marking which
// changed (as `kubectl diff` does).
func maskSecrets(before, after map[string]any) {
	kind := func(m map[string]any) string { s, _, _ := unstructured.NestedString(m, "kind"); return s }
	if kind(before) != "Secret" && kind(after) != "Secret" {
		return
	}
	bd, _, _ := unstructured.NestedMap(before, "data")
	ad, _, _ := unstructured.NestedMap(after, "data")
	for k, bv := range bd {
		if av, ok := ad[k]; ok && reflect.DeepEqual(av, bv) {
			bd[k], ad[k] = "***", "***"
			continue
		}
		bd[k] = "*** (before)"
	}
	for k, av := range ad {
		if av != "***" {
			ad[k] = "*** (after)"
		}
	}
	if before != nil && bd != nil {
		_ = unstructured.SetNestedMap(before, bd, "data")
	}
	if after != nil && ad != nil {
		_ = unstructured.SetNestedMap(after, ad, "data")
	}
}

// diffObjects returns the unified diff between two objects ("" when equal,
// ignoring server-owned fields).
func diffObjects(key ObjectKey, live, planned *unstructured.Unstructured) (string, error) {
	before, after := normalize(live), normalize(planned)
	if reflect.DeepEqual(before, after) {
		return "", nil
	}
	maskSecrets(before, after)
	a, err := toYAML(before)
	if err != nil {
		return "", err
	}
	b, err := toYAML(after)
	if err != nil {
		return "", err
	}
	name := strings.ReplaceAll(key.String(), " ", "/")
	return difflib.GetUnifiedDiffString(difflib.UnifiedDiff{
		A: difflib.SplitLines(a), B: difflib.SplitLines(b),
		FromFile: "live/" + name, ToFile: "planned/" + name, Context: 3,
	})
}

func toYAML(m map[string]any) (string, error) {
	if m == nil {
		return "", nil
	}
	data, err := yaml.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encoding for diff: %w", err)
	}
	return string(data), nil
}
