package healthcheck

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// policyFake is a healthy install with the meshed pod web-1 and the YAML
// documents: policy resources go to a dynamic fake, the rest to the typed
// one. served are the resources discovery reports.
func policyFake(t *testing.T, served []schema.GroupVersionResource, docs ...string) (*fake.Clientset, dynamic.Interface) {
	t.Helper()
	var typed []string
	var dyn []runtime.Object
	for _, d := range docs {
		for _, y := range strings.Split(d, "\n---\n") {
			if strings.TrimSpace(y) == "" {
				continue
			}
			m := map[string]any{}
			if err := yaml.Unmarshal([]byte(y), &m); err != nil {
				t.Fatalf("test YAML: %v\n%s", err, y)
			}
			u := &unstructured.Unstructured{Object: m}
			if g := u.GroupVersionKind().Group; g == policy.Group || g == policy.GatewayGroup {
				dyn = append(dyn, u)
			} else {
				typed = append(typed, y)
			}
		}
	}
	client := newFakeClient(t, "v1.37.2", append([]string{installYAML(t, healthyCerts(t)), appNamespace, meshedPod("web-1", "v1.0.0", true)}, typed...)...)
	client.Resources = nil // exactly served
	byGV := map[string]*metav1.APIResourceList{}
	for _, gvr := range served {
		gv := gvr.GroupVersion().String()
		if byGV[gv] == nil {
			byGV[gv] = &metav1.APIResourceList{GroupVersion: gv}
			client.Resources = append(client.Resources, byGV[gv])
		}
		byGV[gv].APIResources = append(byGV[gv].APIResources, metav1.APIResource{Name: gvr.Resource, Namespaced: true})
	}
	listKinds := map[schema.GroupVersionResource]string{
		policy.ServersResource:                "ServerList",
		policy.AuthorizationPoliciesResource:  "AuthorizationPolicyList",
		policy.MeshTLSAuthenticationsResource: "MeshTLSAuthenticationList",
		policy.NetworkAuthenticationsResource: "NetworkAuthenticationList",
		policy.HTTPRoutesResource:             "HTTPRouteList",
		policy.GRPCRoutesResource:             "GRPCRouteList",
	}
	return client, dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, dyn...)
}

var policyServed = []schema.GroupVersionResource{
	policy.ServersResource, policy.AuthorizationPoliciesResource,
	policy.MeshTLSAuthenticationsResource, policy.NetworkAuthenticationsResource,
}

func runPolicyChecks(t *testing.T, served []schema.GroupVersionResource, docs ...string) Report {
	t.Helper()
	client, dyn := policyFake(t, served, docs...)
	return runChecks(t, client, Options{Proxy: true, DataPlaneNamespace: "app",
		NewDynamicClient: func() (dynamic.Interface, error) { return dyn, nil }}, nil)
}

// goodPolicy is a Server on web's pods with a policy whose authentication
// and ServiceAccounts exist.
const goodPolicy = `apiVersion: v1
kind: ServiceAccount
metadata: {name: frontend, namespace: app}
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-http, namespace: app}
spec:
  podSelector: {matchLabels: {app: web}}
  port: 8080
---
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: frontend, namespace: app}
spec:
  identityRefs: [{kind: ServiceAccount, name: frontend}, {kind: ServiceAccount, name: "*", namespace: ops}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: web, namespace: app}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-http}
  requiredAuthenticationRefs: [{group: policy.conduit.io, kind: MeshTLSAuthentication, name: frontend}, {kind: ServiceAccount, name: frontend}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: everything, namespace: app}
spec:
  targetRef: {kind: Namespace, name: app}
  requiredAuthenticationRefs: []
`

func TestPolicyChecksPass(t *testing.T) {
	rep := runPolicyChecks(t, append(policyServed, gatewayAPIRoutes...), goodPolicy)
	if f := failures(rep); len(f) > 0 || !rep.Success {
		t.Fatalf("failures %+v", f)
	}
	var policyChecks []string
	for _, c := range rep.Categories {
		if c.ID == Policy {
			for _, r := range c.Results {
				policyChecks = append(policyChecks, r.Description)
			}
		}
	}
	want := []string{
		"policy resources are installed",
		"policy resources are readable",
		"Servers select pods",
		"AuthorizationPolicies' authentications exist",
		"AuthorizationPolicies name existing ServiceAccounts",
		"AuthorizationPolicies' targets exist",
		"Servers with routes declare an HTTP protocol",
		"Service routes are accepted and resolve their backends",
	}
	if diff := cmp.Diff(want, policyChecks); diff != "" {
		t.Errorf("policy checks (-want +got):\n%s", diff)
	}
}

// brokenPolicy has one of each problem the checks find.
const brokenPolicy = `apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-http, namespace: app}
spec:
  podSelector: {matchLabels: {app: web}}
  port: 8080
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: api, namespace: app}
spec:
  podSelector: {matchLabels: {app: api, tier: backend}}
  port: http
---
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: frontend, namespace: app}
spec:
  identityRefs: [{kind: ServiceAccount, name: frontend}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: web, namespace: app}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-http}
  requiredAuthenticationRefs:
  - {group: policy.conduit.io, kind: MeshTLSAuthentication, name: frontend}
  - {group: policy.conduit.io, kind: NetworkAuthentication, name: office, namespace: infra}
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: admin, namespace: app}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-admin}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: admin}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: api-route, namespace: app}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}
  requiredAuthenticationRefs: []
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: other-ns, namespace: app}
spec:
  targetRef: {kind: Namespace, name: shop}
  requiredAuthenticationRefs: []
`

func TestPolicyChecksFindProblems(t *testing.T) {
	rep := runPolicyChecks(t, policyServed, brokenPolicy)
	if !rep.Success {
		t.Errorf("policy problems are warnings; the run failed: %+v", failures(rep))
	}
	got := map[string]string{}
	for k, r := range failures(rep) {
		if r.Status != StatusWarning {
			t.Errorf("%s: status %s, want a warning", k, r.Status)
		}
		got[strings.TrimPrefix(k, string(Policy)+"/")] = r.Error
	}
	want := map[string]string{
		"Servers select pods":                          "Server app/api selects no pod (podSelector app=api,tier=backend)",
		"AuthorizationPolicies' authentications exist": "AuthorizationPolicy app/web requires NetworkAuthentication infra/office, which does not exist",
		"AuthorizationPolicies name existing ServiceAccounts": "2 AuthorizationPolicies name ServiceAccounts that do not exist:\n" +
			"AuthorizationPolicy app/admin names ServiceAccount app/admin, which does not exist\n" +
			"AuthorizationPolicy app/web names ServiceAccount app/frontend (in MeshTLSAuthentication app/frontend), which does not exist",
		"AuthorizationPolicies' targets exist": "3 AuthorizationPolicies target nothing:\n" +
			"AuthorizationPolicy app/admin targets Server app/web-admin, which does not exist\n" +
			"AuthorizationPolicy app/api-route targets HTTPRoute app/api, but the API server does not serve httproutes.gateway.networking.k8s.io (the Gateway API CRDs are not installed)\n" +
			"AuthorizationPolicy app/other-ns targets Namespace shop, but a policy applies only in its own namespace app",
		// Not served either: the routes of Services are not applied.
		"gateway-api/Gateway API routes are served": "the API server does not serve httproutes and grpcroutes in gateway.networking.k8s.io/v1: routes, retries and timeouts of Services' routes do not apply",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}
	var b strings.Builder
	PrintBasic(&b, rep, false, true)
	golden(t, "check_policy_warnings.golden", b.String())
}

// routeWithStatus is a route of namespace app whose one parent is the
// Service parent ("namespace/name"), with the status entries of each
// controller: its conditions, "Type=Status/Reason/Message" each.
func routeWithStatus(kind, name, parent string, entries map[string][]string) string {
	ns, svc, _ := strings.Cut(parent, "/")
	ref := `{group: "", kind: Service, name: ` + svc + `, namespace: ` + ns + `}`
	doc := "apiVersion: gateway.networking.k8s.io/v1\nkind: " + kind + "\nmetadata: {name: " + name + ", namespace: app}\n" +
		"spec:\n  parentRefs: [" + ref + "]\nstatus:\n  parents:\n"
	for _, controller := range slices.Sorted(maps.Keys(entries)) {
		doc += "  - parentRef: " + ref + "\n    controllerName: " + controller + "\n    conditions:\n"
		for _, c := range entries[controller] {
			typ, rest, _ := strings.Cut(c, "=")
			parts := strings.SplitN(rest, "/", 3)
			doc += fmt.Sprintf("    - {type: %s, status: %q, reason: %s, message: %q, lastTransitionTime: \"2026-12-01T10:00:00Z\"}\n", typ, parts[0], parts[1], parts[2])
		}
	}
	return doc
}

// routesWithStatus are routes as the controller left them: one accepted
// and resolved, one whose backend is missing, one whose parent Service is
// gone (and whose other parent's entry is another implementation's).
var routesWithStatus = strings.Join([]string{
	routeWithStatus("HTTPRoute", "fine", "app/web", map[string][]string{
		"conduit.io/controller": {"Accepted=True/Accepted/", "ResolvedRefs=True/ResolvedRefs/"}}),
	routeWithStatus("HTTPRoute", "canary", "app/web", map[string][]string{
		"conduit.io/controller": {"Accepted=True/Accepted/", "ResolvedRefs=False/BackendNotFound/backendRef Service app/web-v2 not found"}}),
	routeWithStatus("GRPCRoute", "orphan", "shop/books", map[string][]string{
		"conduit.io/controller":  {"Accepted=False/NoMatchingParent/Service shop/books not found", "ResolvedRefs=True/ResolvedRefs/"},
		"example.com/other-mesh": {"Accepted=False/NotOurs/not ours"}}),
}, "---\n")

// TestRouteStatusCheck: the routes whose conditions the controller set to
// False are listed, with their parent, reason and message; another
// implementation's entries are not Conduit's to report.
func TestRouteStatusCheck(t *testing.T) {
	rep := runPolicyChecks(t, append(policyServed, gatewayAPIRoutes...), goodPolicy, routesWithStatus)
	if !rep.Success {
		t.Errorf("route problems are warnings; the run failed: %+v", failures(rep))
	}
	got := map[string]string{}
	for k, r := range failures(rep) {
		got[k] = r.Error
	}
	want := map[string]string{
		"policy/Service routes are accepted and resolve their backends": "2 routes are not accepted or do not resolve their backends:\n" +
			"GRPCRoute app/orphan, parent Service shop/books: Accepted is False (NoMatchingParent): Service shop/books not found\n" +
			"HTTPRoute app/canary, parent Service app/web: ResolvedRefs is False (BackendNotFound): backendRef Service app/web-v2 not found",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("warnings (-want +got):\n%s", diff)
	}

	// Only GRPCRoutes served: theirs are still read.
	rep = runPolicyChecks(t, append(policyServed, policy.GRPCRoutesResource), goodPolicy, routesWithStatus)
	if r := failures(rep)["policy/Service routes are accepted and resolve their backends"]; r.Error !=
		"GRPCRoute app/orphan, parent Service shop/books: Accepted is False (NoMatchingParent): Service shop/books not found" {
		t.Errorf("with GRPCRoutes only: %q", r.Error)
	}
}

// serversWithRoutes are Servers of each protocol with routes: web
// (proxyProtocol left to its default) and raw (opaque) have routes a
// connection can pass; api declares HTTP/1 and books gRPC; the route
// named "elsewhere" names a Server of another namespace, "outbound" a
// Service.
const serversWithRoutes = `apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web, namespace: app}
spec: {podSelector: {matchLabels: {app: web}}, port: 8080}
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: api, namespace: app}
spec: {podSelector: {matchLabels: {app: web}}, port: 8081, proxyProtocol: HTTP/1}
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: books, namespace: app}
spec: {podSelector: {matchLabels: {app: web}}, port: 8082, proxyProtocol: gRPC}
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: raw, namespace: app}
spec: {podSelector: {matchLabels: {app: web}}, port: 9000, proxyProtocol: opaque}
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: plain, namespace: app}
spec: {podSelector: {matchLabels: {app: web}}, port: 9001, proxyProtocol: unknown}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-admin, namespace: app}
spec: {parentRefs: [{group: policy.conduit.io, kind: Server, name: web}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: app}
spec: {parentRefs: [{group: policy.conduit.io, kind: Server, name: api}, {group: policy.conduit.io, kind: Server, name: raw}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: web-grpc, namespace: app}
spec: {parentRefs: [{group: policy.conduit.io, kind: Server, name: web}, {group: policy.conduit.io, kind: Server, name: books}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: elsewhere, namespace: app}
spec: {parentRefs: [{group: policy.conduit.io, kind: Server, name: plain, namespace: shop}]}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: outbound, namespace: app}
spec: {parentRefs: [{group: "", kind: Service, name: plain}]}
`

// TestServerProtocolCheck: a Server whose routes a connection can pass
// (one that detects, one that is opaque) is warned of, with its routes;
// Servers that declare an HTTP protocol, and routes that name no Server
// of theirs, are not.
func TestServerProtocolCheck(t *testing.T) {
	const name = "policy/Servers with routes declare an HTTP protocol"
	rep := runPolicyChecks(t, append(policyServed, gatewayAPIRoutes...), serversWithRoutes)
	if !rep.Success {
		t.Errorf("these are warnings; the run failed: %+v", failures(rep))
	}
	r := failures(rep)[name]
	if r.Status != StatusWarning {
		t.Fatalf("%s: %+v, want a warning", name, r)
	}
	want := "2 Servers have routes that a connection can pass:\n" +
		"Server app/raw is opaque: its routes (HTTPRoute app/api) never apply, only the Server's own authorizations\n" +
		"Server app/web detects its protocol (proxyProtocol unknown): a connection that is not HTTP to detection passes its routes (GRPCRoute app/web-grpc, HTTPRoute app/web-admin), under the Server's own authorizations"
	if diff := cmp.Diff(want, r.Error); diff != "" {
		t.Errorf("warning (-want +got):\n%s", diff)
	}
	if wantHint := `kubectl patch server -n app raw --type merge -p '{"spec":{"proxyProtocol":"HTTP/1"}}'`; !strings.Contains(r.Hint, wantHint) {
		t.Errorf("hint %q does not name the first listed Server's fix %q", r.Hint, wantHint)
	}

	// Only HTTPRoutes served: web's GRPCRoute is not read.
	rep = runPolicyChecks(t, append(policyServed, policy.HTTPRoutesResource), serversWithRoutes)
	if got := failures(rep)[name].Error; !strings.Contains(got, "passes its routes (HTTPRoute app/web-admin), under") {
		t.Errorf("with HTTPRoutes only: %q", got)
	}
	// Only GRPCRoutes served: web's are all GRPCRoutes, so the hint's
	// patch declares gRPC.
	rep = runPolicyChecks(t, append(policyServed, policy.GRPCRoutesResource), serversWithRoutes)
	r = failures(rep)[name]
	if !strings.Contains(r.Error, "passes its routes (GRPCRoute app/web-grpc), under") || strings.Contains(r.Error, "app/raw") {
		t.Errorf("with GRPCRoutes only: %q", r.Error)
	}
	if wantHint := `kubectl patch server -n app web --type merge -p '{"spec":{"proxyProtocol":"gRPC"}}'`; !strings.Contains(r.Hint, wantHint) {
		t.Errorf("with GRPCRoutes only, hint %q lacks %q", r.Hint, wantHint)
	}
	// No routes served: nothing to pass.
	rep = runPolicyChecks(t, policyServed, serversWithRoutes)
	if r, ok := failures(rep)[name]; ok {
		t.Errorf("without the Gateway API: %+v", r)
	}
}

func TestPolicyChecksWithoutCRDs(t *testing.T) {
	rep := runPolicyChecks(t, nil, "")
	f := failures(rep)
	if len(f) != 2 || f["policy/policy resources are installed"].Status != StatusWarning ||
		f["gateway-api/Gateway API routes are served"].Status != StatusWarning || !rep.Success {
		t.Fatalf("without the CRDs: want two warnings (policy, Gateway API), got %+v", f)
	}
	if r := f["policy/policy resources are installed"]; r.Error != "the API server does not serve policy.conduit.io/v1beta1: every port has the default inbound policy" ||
		!strings.Contains(r.Hint, "`conduit upgrade` installs the policy.conduit.io CRDs") {
		t.Errorf("got %+v", r)
	}
}

// TestPolicyChecksOnlyWithADynamicClient: a caller without one (and
// without --proxy) gets the checks it had.
func TestPolicyChecksOnlyWithADynamicClient(t *testing.T) {
	client, _ := policyFake(t, policyServed)
	rep := runChecks(t, client, Options{Proxy: true, DataPlaneNamespace: "app"}, nil)
	for _, c := range rep.Categories {
		if c.ID == Policy {
			t.Errorf("policy checks ran without a dynamic client")
		}
	}
}
