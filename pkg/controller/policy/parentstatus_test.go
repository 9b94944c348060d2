package policy

import (
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func TestParentStatuses(t *testing.T) {
	var obj map[string]any
	if err := yaml.Unmarshal([]byte(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: books, namespace: demo}
status:
  parents:
  - controllerName: conduit.io/controller
    parentRef: {group: "", kind: Service, name: books, namespace: shop, port: 8080}
    conditions:
    - {type: Accepted, status: "True", reason: Accepted, message: "", lastTransitionTime: "2026-12-06T12:00:00Z"}
    - {type: ResolvedRefs, status: "False", reason: BackendNotFound, message: no Service books-v3, lastTransitionTime: "2026-12-06T12:00:00Z"}
    - not a condition
  - controllerName: example.com/other
    parentRef: {name: gw}
    conditions: []
  - controllerName: conduit.io/controller
    parentRef: not a map
  - just a string
`), &obj); err != nil {
		t.Fatal(err)
	}
	got := ParentStatuses(&unstructured.Unstructured{Object: obj})
	if len(got) != 4 {
		t.Fatalf("%d entries, want 4 (every one, each kept Raw): %+v", len(got), got)
	}
	first := got[0]
	if !first.RefOK || first.ParentRef.Name != "books" || first.ParentRef.Namespace == nil || *first.ParentRef.Namespace != "shop" ||
		first.ParentRef.Port == nil || *first.ParentRef.Port != 8080 || !first.ParentRef.IsService() {
		t.Errorf("first parentRef = %+v (ok %v)", first.ParentRef, first.RefOK)
	}
	if len(first.Conditions) != 2 || first.Conditions[1].Type != "ResolvedRefs" || first.Conditions[1].Status != metav1.ConditionFalse ||
		first.Conditions[1].Reason != "BackendNotFound" || first.Conditions[1].Message != "no Service books-v3" {
		t.Errorf("first conditions = %+v, want the two that are conditions", first.Conditions)
	}
	if got[1].ControllerName != "example.com/other" || !got[1].RefOK || got[1].ParentRef.Name != "gw" || got[1].Raw == nil {
		t.Errorf("another implementation's entry = %+v", got[1])
	}
	if got[2].ControllerName != "conduit.io/controller" || got[2].RefOK {
		t.Errorf("an entry whose parentRef is not one reads RefOK: %+v", got[2])
	}
	if got[3].Raw != "just a string" || got[3].ControllerName != "" || got[3].RefOK {
		t.Errorf("an entry that is not a map = %+v, want only Raw", got[3])
	}
	if none := ParentStatuses(&unstructured.Unstructured{Object: map[string]any{"kind": "HTTPRoute"}}); len(none) != 0 {
		t.Errorf("a route without status: %+v", none)
	}
}
