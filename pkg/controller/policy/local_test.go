package policy

import (
	"context"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// startLocal runs a Local index holding the registry (YAML) and waits
// until it has synced.
func startLocal(t *testing.T, c Cluster, registry string) *Local {
	t.Helper()
	l, err := NewLocal(LocalOptions{Cluster: c})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Apply(parseRegistry(t, registry)); err != nil {
		t.Fatalf("Apply: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := l.WaitSynced(wctx); err != nil {
		t.Fatalf("local index did not sync: %v", err)
	}
	return l
}

func parseRegistry(t *testing.T, doc string) contract.Registry {
	t.Helper()
	var r contract.Registry
	if err := yaml.UnmarshalStrict([]byte(doc), &r); err != nil {
		t.Fatalf("test registry: %v\n%s", err, doc)
	}
	return r
}

// localRegistry is the demo's shape: web and books pods with named ports,
// books's port under a Server that admits web's ServiceAccount only.
const (
	localProxies = `
proxies:
- namespace: demo
  pod: web-0
  adminAddress: 127.0.0.1:41191
  labels: {deployment: web}
  ports: [{name: http, port: 41001}]
- namespace: demo
  pod: books-0
  adminAddress: 127.0.0.1:41192
  labels: {deployment: books}
  ports: [{name: grpc, port: 41002}]
`
	localPolicies = `
policies:
- apiVersion: policy.conduit.io/v1beta1
  kind: Server
  metadata: {name: books-grpc, namespace: demo}
  spec: {podSelector: {matchLabels: {deployment: books}}, port: grpc, proxyProtocol: gRPC}
- apiVersion: policy.conduit.io/v1beta1
  kind: MeshTLSAuthentication
  metadata: {name: web, namespace: demo}
  spec: {identityRefs: [{kind: ServiceAccount, name: web}]}
- apiVersion: policy.conduit.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: books-from-web, namespace: demo}
  spec:
    targetRef: {group: policy.conduit.io, kind: Server, name: books-grpc}
    requiredAuthenticationRefs: [{group: policy.conduit.io, kind: MeshTLSAuthentication, name: web}]
`
	booksPolicyText = `
server: {kind: "server" name: "books-grpc" namespace: "demo"} protocol: GRPC fail_closed: true
authorizations: {
  ref: {kind: "authorizationpolicy" name: "books-from-web" namespace: "demo"}
  ` + anyNetworks + `
  mesh_tls: {identities: "spiffe://cluster.local/ns/demo/sa/web"}
}`
	allUnauthenticatedText = `
server: {kind: "default" name: "all-unauthenticated"}
authorizations: {ref: {kind: "default" name: "all-unauthenticated"} ` + anyNetworks + ` unauthenticated: {}}`
	allAuthenticatedText = `
server: {kind: "default" name: "all-authenticated"}
authorizations: {ref: {kind: "default" name: "all-authenticated"} ` + anyNetworks + ` mesh_tls: {prefixes: ""}}
fail_closed: true`
)

func localCluster() Cluster {
	c := testCluster()
	c.DefaultPolicy = AllUnauthenticated
	return c
}

// inboundEventually waits until l's policy for the port is want (prototext).
func (l *Local) inboundEventually(t *testing.T, ns, pod string, port uint32, want string) {
	t.Helper()
	(&fixture{index: l.Index}).inboundEventually(t, ns, pod, port, want)
}

// TestLocalPolicies: the registry's pods (with named ports), namespaces and
// policy objects give the Index's policies, and every kind of change to
// the registry reaches them and wakes the pod's subscribers.
func TestLocalPolicies(t *testing.T) {
	l := startLocal(t, localCluster(), localProxies+localPolicies)
	(&fixture{index: l.Index}).checkInbound(t, "demo", "books-0", 41002, booksPolicyText)
	(&fixture{index: l.Index}).checkInbound(t, "demo", "web-0", 41001, allUnauthenticatedText)
	if _, err := l.Inbound("demo", "authors-0", 41003); err != ErrPodNotFound {
		t.Errorf("Inbound of a pod the registry lacks: %v, want ErrPodNotFound", err)
	}

	web, cancelWeb := l.Subscribe("demo", "web-0")
	defer cancelWeb()
	books, cancelBooks := l.Subscribe("demo", "books-0")
	defer cancelBooks()
	woken := func(name string, ch <-chan struct{}) {
		t.Helper()
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			t.Fatalf("%s's subscriber was not woken", name)
		}
	}
	drain := func(ch <-chan struct{}) {
		for {
			select {
			case <-ch:
			case <-time.After(100 * time.Millisecond):
				return
			}
		}
	}

	// The same registry again changes no object: nobody is woken.
	if err := l.Apply(parseRegistry(t, localProxies+localPolicies)); err != nil {
		t.Fatal(err)
	}
	select {
	case <-web:
		t.Error("applying the same registry woke a subscriber")
	case <-books:
		t.Error("applying the same registry woke a subscriber")
	case <-time.After(300 * time.Millisecond):
	}

	// A namespace annotation: the ports no Server selects change.
	flipped := localProxies + localPolicies + `
namespaces:
- name: demo
  annotations: {config.conduit.io/default-inbound-policy: all-authenticated}
`
	if err := l.Apply(parseRegistry(t, flipped)); err != nil {
		t.Fatal(err)
	}
	woken("web", web)
	l.inboundEventually(t, "demo", "web-0", 41001, allAuthenticatedText)
	(&fixture{index: l.Index}).checkInbound(t, "demo", "books-0", 41002, booksPolicyText)

	// A port renumbered: the Server follows the name.
	drain(books)
	moved := strings.Replace(flipped, "{name: grpc, port: 41002}", "{name: grpc, port: 42002}", 1)
	if err := l.Apply(parseRegistry(t, moved)); err != nil {
		t.Fatal(err)
	}
	woken("books", books)
	l.inboundEventually(t, "demo", "books-0", 42002, booksPolicyText)
	l.inboundEventually(t, "demo", "books-0", 41002, allAuthenticatedText)

	// The policies and the annotation removed: objects deleted.
	drain(web)
	drain(books)
	if err := l.Apply(parseRegistry(t, localProxies)); err != nil {
		t.Fatal(err)
	}
	woken("books", books)
	l.inboundEventually(t, "demo", "books-0", 41002, allUnauthenticatedText)
	l.inboundEventually(t, "demo", "web-0", 41001, allUnauthenticatedText)

	// A proxy removed: its pod is gone.
	if err := l.Apply(parseRegistry(t, "proxies: []")); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, err := l.Inbound("demo", "web-0", 41001); err != ErrPodNotFound; _, err = l.Inbound("demo", "web-0", 41001) {
		if time.Now().After(deadline) {
			t.Fatalf("web-0 still known after its proxy left the registry: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestLocalOldestServer: a Server keeps the creation time it was first
// applied with, so a later one selecting the same port does not take it
// over, whatever its name.
func TestLocalOldestServer(t *testing.T) {
	l := startLocal(t, localCluster(), localProxies+localPolicies)
	time.Sleep(1100 * time.Millisecond) // creation times have a resolution of a second
	later := localProxies + localPolicies + `
- apiVersion: policy.conduit.io/v1beta1
  kind: Server
  metadata: {name: a-books-all, namespace: demo}
  spec: {podSelector: {}, port: 41002}
`
	if err := l.Apply(parseRegistry(t, later)); err != nil {
		t.Fatal(err)
	}
	(&fixture{index: l.Index}).seen(t, ServersResource, "demo", "a-books-all")
	(&fixture{index: l.Index}).checkInbound(t, "demo", "books-0", 41002, booksPolicyText)
}

// TestLocalInvalid: an invalid object rejects the whole registry, naming
// it, and leaves the objects as they were.
func TestLocalInvalid(t *testing.T) {
	l := startLocal(t, localCluster(), localProxies+localPolicies)
	for _, tc := range []struct{ name, registry, want string }{
		{"unknown kind", `
policies:
- {apiVersion: policy.conduit.io/v1beta1, kind: Sever, metadata: {name: x, namespace: demo}, spec: {}}`,
			"policies[0]: Sever demo/x: apiVersion policy.conduit.io/v1beta1 kind Sever is not a policy object"},
		{"wrong group", `
policies:
- {apiVersion: policy.linkerd.io/v1beta1, kind: Server, metadata: {name: x, namespace: demo}, spec: {}}`,
			"is not a policy object"},
		{"bad field", `
policies:
- {apiVersion: policy.conduit.io/v1beta1, kind: Server, metadata: {name: x, namespace: demo}, spec: {podSelector: {matchLabels: [a]}}}`,
			"policies[0]: Server demo/x:"},
		{"no namespace", `
policies:
- {apiVersion: policy.conduit.io/v1beta1, kind: Server, metadata: {name: x}, spec: {}}`,
			"metadata.name and metadata.namespace are required"},
		{"twice", `
policies:
- {apiVersion: policy.conduit.io/v1beta1, kind: Server, metadata: {name: x, namespace: demo}, spec: {port: 80}}
- {apiVersion: policy.conduit.io/v1beta1, kind: Server, metadata: {name: x, namespace: demo}, spec: {port: 81}}`,
			"policies[1]: servers demo/x is listed twice"},
		{"bad annotation", `
namespaces:
- {name: demo, annotations: {config.conduit.io/default-inbound-policy: none}}`,
			`namespaces[0] (demo): annotation config.conduit.io/default-inbound-policy: "none" is not a default inbound policy`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := l.Apply(parseRegistry(t, localProxies+tc.registry))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Apply: %v, want an error containing %q", err, tc.want)
			}
		})
	}
	time.Sleep(100 * time.Millisecond) // what a wrongly applied change would take to arrive
	(&fixture{index: l.Index}).checkInbound(t, "demo", "books-0", 41002, booksPolicyText)
}
