package policy

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
)

// ParentStatus is one entry of a Gateway API route's status.parents: what
// the implementation named ControllerName says of the route for one of its
// parentRefs.
type ParentStatus struct {
	ControllerName string
	// ParentRef is the entry's parentRef; RefOK says it was one (an
	// entry without a readable parentRef has only Raw and ControllerName).
	ParentRef ParentRef
	RefOK     bool
	// Conditions are those of the entry that read as metav1.Conditions.
	Conditions []metav1.Condition
	// Raw is the entry as the route holds it, for a writer that keeps
	// other implementations' entries as they are.
	Raw any
}

// ParentStatuses reads a route's status.parents. One reader for the
// controller's status writer and `conduit check`: an entry of the wrong
// shape reads as empty fields, never as an error.
func ParentStatuses(u *unstructured.Unstructured) []ParentStatus {
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
	out := make([]ParentStatus, 0, len(list))
	for _, e := range list {
		ps := ParentStatus{Raw: e}
		m, _ := e.(map[string]any)
		ps.ControllerName, _ = m["controllerName"].(string)
		if ref, ok := m["parentRef"].(map[string]any); ok {
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(ref, &ps.ParentRef); err == nil {
				ps.RefOK = true
			}
		}
		conds, _ := m["conditions"].([]any)
		for _, c := range conds {
			var cond metav1.Condition
			if cm, ok := c.(map[string]any); ok && runtime.DefaultUnstructuredConverter.FromUnstructured(cm, &cond) == nil {
				ps.Conditions = append(ps.Conditions, cond)
			}
		}
		out = append(out, ps)
	}
	return out
}
