package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"net/netip"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/internal/testenv"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
	"github.com/conduitmesh/conduit/pkg/install"
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
)

// applyPolicyCRDs applies the policy CRDs exactly as `conduit install`
// renders them, waits until the API server serves them, and deletes them
// (waiting until they are gone, so that a later install does not find
// them) when the test ends.
func applyPolicyCRDs(t *testing.T) {
	t.Helper()
	ctx := context.Background()
	objs, _, err := install.RenderInstall(install.InstallOptions{Values: install.ValueOptions{Namespace: "policy-crds"}, Version: "v0.0.0-test", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	client, err := install.NewClient(testCluster.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	var crds []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == "CustomResourceDefinition" && strings.HasSuffix(o.GetName(), "."+policy.Group) {
			crds = append(crds, o)
		}
	}
	if len(crds) != 4 {
		t.Fatalf("conduit install renders %d policy CRDs, want 4", len(crds))
	}
	t.Cleanup(func() {
		for _, o := range crds {
			if err := client.Delete(ctx, o); err != nil {
				t.Errorf("deleting %s: %v", o.GetName(), err)
			}
		}
		testenv.Eventually(t, time.Minute, 200*time.Millisecond, func() error {
			for _, o := range crds {
				if live, err := client.Get(ctx, o); err != nil || live != nil {
					return fmt.Errorf("%s still there (%v)", o.GetName(), err)
				}
			}
			return nil
		})
	})
	for _, o := range crds {
		if _, err := client.Apply(ctx, o, false, true); err != nil {
			t.Fatalf("the API server rejects the rendered CRD: %v", err)
		}
	}
	dyn := dynamic.NewForConfigOrDie(testCluster.RESTConfig)
	crdGVR := schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}
	testenv.Eventually(t, time.Minute, 100*time.Millisecond, func() error {
		for _, o := range crds {
			u, err := dyn.Resource(crdGVR).Get(ctx, o.GetName(), metav1.GetOptions{})
			if err != nil {
				return err
			}
			conds, _, _ := unstructured.NestedSlice(u.Object, "status", "conditions")
			established := false
			for _, c := range conds {
				c, _ := c.(map[string]any)
				switch {
				case c["type"] == "Established" && c["status"] == "True":
					established = true
				case c["type"] == "NonStructuralSchema" && c["status"] == "True":
					return fmt.Errorf("%s: non-structural schema: %v", o.GetName(), c["message"])
				}
			}
			if !established {
				return fmt.Errorf("%s not established", o.GetName())
			}
		}
		// Discovery may lag behind Established.
		_, err := testCluster.Client.Discovery().ServerResourcesForGroupVersion(policy.Group + "/" + policy.Version)
		return err
	})
}

// createYAML creates each YAML document's object in ns with the dynamic
// client and returns the first error.
func createYAML(t *testing.T, dyn dynamic.Interface, ns, doc string) (*unstructured.Unstructured, error) {
	t.Helper()
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("test YAML: %v\n%s", err, doc)
	}
	u := &unstructured.Unstructured{Object: m}
	gvr := map[string]schema.GroupVersionResource{
		"Server":                policy.ServersResource,
		"MeshTLSAuthentication": policy.MeshTLSAuthenticationsResource,
		"NetworkAuthentication": policy.NetworkAuthenticationsResource,
		"AuthorizationPolicy":   policy.AuthorizationPoliciesResource,
	}[u.GetKind()]
	return dyn.Resource(gvr).Namespace(ns).Create(context.Background(), u, metav1.CreateOptions{})
}

// TestPolicyCRDs: the CRDs of `conduit install` apply to a real API server,
// accept good objects (defaulting the protocol), reject bad ones with a
// message that names the field, and print their columns.
func TestPolicyCRDs(t *testing.T) {
	applyPolicyCRDs(t)
	ns := createNamespace(t, "policy-crds")
	dyn := dynamic.NewForConfigOrDie(testCluster.RESTConfig)

	good := []string{`
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-http}
spec:
  podSelector: {matchLabels: {app: web}}
  port: 8080
`, `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-admin}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [web]}, {key: canary, operator: DoesNotExist}]
  port: admin-http
  proxyProtocol: HTTP/2
`, `
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: anyone-meshed}
spec:
  identities: ["*", "spiffe://cluster.local/ns/shop/sa/web"]
`, `
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: refs}
spec:
  identityRefs:
  - {kind: ServiceAccount, name: web}
  - {kind: ServiceAccount, name: "*", namespace: batch}
  - {kind: Namespace, name: ops}
  - {group: "", kind: Namespace, name: "*"}
`, `
apiVersion: policy.conduit.io/v1beta1
kind: NetworkAuthentication
metadata: {name: nodes}
spec:
  networks:
  - {cidr: 10.0.0.0/8, except: [10.1.0.0/16, 10.2.3.4/32]}
  - {cidr: "fd00::/8"}
`, `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: anyone}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-http}
  requiredAuthenticationRefs: []
`, `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: namespace-wide}
spec:
  targetRef: {kind: Namespace, name: shop}
  requiredAuthenticationRefs:
  - {group: policy.conduit.io, kind: NetworkAuthentication, name: nodes}
  - {kind: ServiceAccount, name: prometheus, namespace: monitoring}
`, `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: route}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: GRPCRoute, name: books}
  requiredAuthenticationRefs: [{kind: MeshTLSAuthentication, name: refs}]
`}
	for _, doc := range good {
		u, err := createYAML(t, dyn, ns, doc)
		if err != nil {
			t.Errorf("a good object was rejected: %v\n%s", err, doc)
			continue
		}
		if u.GetKind() == "Server" && u.GetName() == "web-http" {
			if p, _, _ := unstructured.NestedString(u.Object, "spec", "proxyProtocol"); p != "unknown" {
				t.Errorf("Server without proxyProtocol got %q, want the default unknown", p)
			}
		}
	}

	bad := []struct {
		name, doc string
		want      []string // substrings of the API server's message
	}{
		{"Server port 0", `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: port-zero}
spec: {podSelector: {}, port: 0}
`, []string{"spec.port", "port must be a number from 1 to 65535"}},
		{"Server port 65536", `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: port-big}
spec: {podSelector: {}, port: 65536}
`, []string{"spec.port"}},
		{"Server port name not a port name", `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: port-name}
spec: {podSelector: {}, port: Admin_HTTP}
`, []string{"spec.port", "container port name"}},
		{"Server without podSelector", `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: no-selector}
spec: {port: 80}
`, []string{"spec.podSelector", "Required value"}},
		{"Server protocol", `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: http3}
spec: {podSelector: {}, port: 80, proxyProtocol: HTTP/3}
`, []string{"spec.proxyProtocol", `Unsupported value: "HTTP/3"`}},
		{"Server selector In without values", `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: in-nothing}
spec:
  podSelector: {matchExpressions: [{key: app, operator: In}]}
  port: 80
`, []string{"spec.podSelector.matchExpressions[0]", "values must be non-empty"}},
		{"MeshTLSAuthentication with identities and identityRefs", `
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: both}
spec:
  identities: ["*"]
  identityRefs: [{kind: Namespace, name: shop}]
`, []string{"spec", "exactly one of identities and identityRefs must be set"}},
		{"MeshTLSAuthentication with neither", `
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: neither}
spec: {}
`, []string{"spec", "exactly one of identities and identityRefs must be set"}},
		{"MeshTLSAuthentication identity not SPIFFE", `
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: dns-name}
spec: {identities: [web.shop.serviceaccount.identity.linkerd.cluster.local]}
`, []string{"spec.identities[0]"}},
		{"MeshTLSAuthentication identityRef kind", `
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: pod-ref}
spec: {identityRefs: [{kind: Pod, name: web-1}]}
`, []string{"spec.identityRefs[0].kind", `Unsupported value: "Pod"`}},
		{"MeshTLSAuthentication Namespace ref with namespace", `
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: ns-ns}
spec: {identityRefs: [{kind: Namespace, name: shop, namespace: shop}]}
`, []string{"spec.identityRefs[0]", "namespace is only for a ServiceAccount"}},
		{"AuthorizationPolicy targetRef kind", `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: pod-target}
spec:
  targetRef: {kind: Pod, name: web-1}
  requiredAuthenticationRefs: []
`, []string{"spec.targetRef.kind", `Unsupported value: "Pod"`}},
		{"AuthorizationPolicy targetRef group", `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: linkerd-server}
spec:
  targetRef: {group: policy.linkerd.io, kind: Server, name: web-http}
  requiredAuthenticationRefs: []
`, []string{"spec.targetRef", "group must be policy.conduit.io for a Server"}},
		{"AuthorizationPolicy without requiredAuthenticationRefs", `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: no-refs}
spec:
  targetRef: {kind: Server, name: web-http}
`, []string{"spec.requiredAuthenticationRefs", "Required value"}},
		{"AuthorizationPolicy authentication kind", `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: secret-ref}
spec:
  targetRef: {kind: Server, name: web-http}
  requiredAuthenticationRefs: [{kind: Secret, name: token}]
`, []string{"spec.requiredAuthenticationRefs[0].kind", `Unsupported value: "Secret"`}},
		{"AuthorizationPolicy two identities", `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: two-ids}
spec:
  targetRef: {kind: Server, name: web-http}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: a}, {kind: MeshTLSAuthentication, name: refs}]
`, []string{"spec.requiredAuthenticationRefs", "at most one MeshTLSAuthentication or ServiceAccount"}},
		{"NetworkAuthentication cidr", `
apiVersion: policy.conduit.io/v1beta1
kind: NetworkAuthentication
metadata: {name: bad-cidr}
spec: {networks: [{cidr: 10.0.0.0/33}]}
`, []string{"spec.networks[0].cidr", "cidr"}},
		{"NetworkAuthentication cidr not an address", `
apiVersion: policy.conduit.io/v1beta1
kind: NetworkAuthentication
metadata: {name: word}
spec: {networks: [{cidr: "10.0.0.0/8"}, {cidr: cluster}]}
`, []string{"spec.networks[1].cidr"}},
		{"NetworkAuthentication except", `
apiVersion: policy.conduit.io/v1beta1
kind: NetworkAuthentication
metadata: {name: bad-except}
spec: {networks: [{cidr: 10.0.0.0/8, except: [10.1.2.3]}]}
`, []string{"spec.networks[0].except[0]"}},
		{"NetworkAuthentication without networks", `
apiVersion: policy.conduit.io/v1beta1
kind: NetworkAuthentication
metadata: {name: empty}
spec: {networks: []}
`, []string{"spec.networks"}},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			_, err := createYAML(t, dyn, ns, tc.doc)
			if err == nil {
				t.Fatalf("accepted:\n%s", tc.doc)
			}
			if !apierrors.IsInvalid(err) {
				t.Fatalf("rejected with %v, want Invalid", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("message lacks %q:\n%v", w, err)
				}
			}
			t.Logf("rejected: %v", err)
		})
	}

	// kubectl get's columns.
	raw, err := testCluster.Client.CoreV1().RESTClient().Get().
		AbsPath("/apis/policy.conduit.io/v1beta1/namespaces/"+ns+"/servers").
		SetHeader("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io").DoRaw(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var table metav1.Table
	if err := json.Unmarshal(raw, &table); err != nil {
		t.Fatal(err)
	}
	var cols []string
	for _, c := range table.ColumnDefinitions {
		cols = append(cols, c.Name)
	}
	rows := map[string]string{}
	for _, r := range table.Rows {
		rows[fmt.Sprint(r.Cells[0])] = fmt.Sprint(r.Cells[1:3])
	}
	if strings.Join(cols, ",") != "Name,Port,Protocol,Age" || rows["web-admin"] != "[admin-http HTTP/2]" || rows["web-http"] != "[8080 unknown]" {
		t.Errorf("kubectl get servers: columns %v, rows %v", cols, rows)
	}
}

// TestPolicyWatchPort: a proxy's WatchPort stream, on the conduit-controller
// binary running against the real API server, receives a policy change
// less than a second after the AuthorizationPolicy is created.
func TestPolicyWatchPort(t *testing.T) {
	applyPolicyCRDs(t)
	ctx := context.Background()
	ns := createNamespace(t, "policy-watch")
	dyn := dynamic.NewForConfigOrDie(testCluster.RESTConfig)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{
			Name: "app", Image: "web:1",
			Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
		}}},
	}
	if _, err := testCluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := createYAML(t, dyn, ns, `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-http}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
  proxyProtocol: HTTP/1
`); err != nil {
		t.Fatal(err)
	}

	ctrl := startController(t, "--default-inbound-policy", "all-authenticated")
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := policyv1.NewInboundPoliciesClient(ctrl.conn).WatchPort(sctx, &policyv1.PortSpec{Namespace: ns, Pod: "web-1", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	type recv struct {
		msg *policyv1.InboundServer
		err error
		at  time.Time
	}
	msgs := make(chan recv, 8)
	go func() {
		for {
			m, err := stream.Recv()
			msgs <- recv{m, err, time.Now()}
			if err != nil {
				return
			}
		}
	}()
	next := func() recv {
		t.Helper()
		select {
		case r := <-msgs:
			if r.err != nil {
				t.Fatalf("WatchPort: %v", r.err)
			}
			return r
		case <-time.After(updateDeadline):
			t.Fatalf("no policy within %s", updateDeadline)
		}
		return recv{}
	}

	first := next().msg
	if first.GetServer().GetName() != "web-http" || first.GetProtocol() != policyv1.Protocol_HTTP1 || len(first.GetAuthorizations()) != 0 || !first.GetFailClosed() {
		t.Fatalf("first policy: %v", first)
	}
	// A port no Server selects: the controller's default.
	other, err := policyv1.NewInboundPoliciesClient(ctrl.conn).WatchPort(sctx, &policyv1.PortSpec{Namespace: ns, Pod: "web-1", Port: 9999})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := other.Recv(); err != nil || m.GetServer().GetName() != "all-authenticated" || m.GetServer().GetKind() != "default" {
		t.Fatalf("default policy: %v, %v", m, err)
	}

	// The proxy's own client: the policy store conduit-proxy enforces from,
	// over its hand-written gRPC client.
	wire, err := grpcwire.New(ctrl.grpcAddr, grpcwire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer wire.Close()
	store := authz.NewStore(authz.Pending("all-authenticated"))
	go store.Watch(sctx, wire, ns, "web-1", []uint16{8080}, authz.WatchOptions{})
	traffic := authz.Conn{Client: netip.MustParseAddr("10.1.2.3"), TLS: true, Identity: "spiffe://cluster.local/ns/" + ns + "/sa/traffic"}
	testenv.Eventually(t, updateDeadline, 5*time.Millisecond, func() error {
		if srv, ok := store.Lookup(8080); !ok || srv.Ref().Name != "web-http" {
			return fmt.Errorf("the proxy's store has %v (arrived %v)", srv, ok)
		}
		return nil
	})
	if srv, _ := store.Lookup(8080); srv.AllowConn(traffic).Allowed {
		t.Fatal("the proxy admits traffic before any AuthorizationPolicy")
	}
	proxySaw := make(chan time.Time, 1)
	go func() {
		for sctx.Err() == nil {
			if srv, _ := store.Lookup(8080); srv.AllowConn(traffic).Allowed {
				proxySaw <- time.Now()
				return
			}
			time.Sleep(time.Millisecond)
		}
	}()

	created := time.Now()
	if _, err := createYAML(t, dyn, ns, `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-clients}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-http}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: traffic}]
`); err != nil {
		t.Fatal(err)
	}
	r := next()
	took := r.at.Sub(created)
	t.Logf("the AuthorizationPolicy reached the WatchPort stream %s after its creation was requested", took.Round(time.Millisecond))
	authz := r.msg.GetAuthorizations()
	if len(authz) != 1 || authz[0].GetRef().GetName() != "web-clients" ||
		strings.Join(authz[0].GetMeshTls().GetIdentities(), ",") != "spiffe://cluster.local/ns/"+ns+"/sa/traffic" {
		t.Fatalf("policy after the AuthorizationPolicy: %v", r.msg)
	}
	if took >= time.Second {
		t.Errorf("the change took %s to reach the stream; the issue wants less than 1 s", took)
	}
	select {
	case at := <-proxySaw:
		took := at.Sub(created)
		t.Logf("the proxy's policy store admitted traffic %s after the AuthorizationPolicy's creation was requested", took.Round(time.Millisecond))
		if took >= time.Second {
			t.Errorf("the change took %s to reach the proxy; the issue wants less than 1 s", took)
		}
	case <-time.After(updateDeadline):
		t.Fatalf("the proxy's policy store never admitted traffic (within %s)", updateDeadline)
	}
}
