package install

import (
	"slices"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// TestControllerRoleGrantsTheRouteStatusLease: the controller's Role, in
// its namespace, lets it create the Lease that elects the replica writing
// route status and get and update it by the name the controller uses.
func TestControllerRoleGrantsTheRouteStatusLease(t *testing.T) {
	objs, _ := renderForTest(t, ValueOptions{})
	var role *rbacv1.Role
	for _, o := range objs {
		if o.GetKind() == "Role" && o.GetName() == "conduit-controller" {
			role = &rbacv1.Role{}
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, role); err != nil {
				t.Fatal(err)
			}
		}
	}
	if role == nil {
		t.Fatal("no Role conduit-controller in the chart")
	}
	for _, verb := range []string{"create", "get", "update"} {
		name := contract.RouteStatusLease
		if verb == "create" {
			name = "" // (resourceNames cannot restrict a create)
		}
		if !roleAllows(role.Rules, "coordination.k8s.io", "leases", name, verb) {
			t.Errorf("the controller's Role does not allow %s on Lease %q: %+v", verb, name, role.Rules)
		}
	}
}

// roleAllows reports whether rules allow verb on the resource (of group)
// named name ("": any name, as for a create or a list).
func roleAllows(rules []rbacv1.PolicyRule, group, resource, name, verb string) bool {
	return slices.ContainsFunc(rules, func(r rbacv1.PolicyRule) bool {
		return slices.Contains(r.APIGroups, group) && slices.Contains(r.Resources, resource) && slices.Contains(r.Verbs, verb) &&
			(len(r.ResourceNames) == 0 || name != "" && slices.Contains(r.ResourceNames, name))
	})
}
