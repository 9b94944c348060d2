package policy

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/conduitmesh/conduit/internal/testenv"
	"github.com/conduitmesh/conduit/internal/testenv/testgrpc"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// serve runs a GRPCServer on src over an in-memory listener and returns a
// client and the server.
func serve(t *testing.T, src Source) (policyv1.InboundPoliciesClient, *GRPCServer) {
	t.Helper()
	reg := prometheus.NewRegistry()
	srv, err := NewGRPCServer(src, nil, reg)
	if err != nil {
		t.Fatal(err)
	}
	cc := testgrpc.Serve(t, func(gs *grpc.Server) { policyv1.RegisterInboundPoliciesServer(gs, srv) })
	return policyv1.NewInboundPoliciesClient(cc), srv
}

// stream is a WatchPort stream whose messages a goroutine reads.
type stream struct {
	msgs chan *policyv1.InboundServer
	errs chan error
}

func watch(t *testing.T, c policyv1.InboundPoliciesClient, ns, pod string, port uint32) *stream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	w, err := c.WatchPort(ctx, &policyv1.PortSpec{Namespace: ns, Pod: pod, Port: port})
	if err != nil {
		t.Fatal(err)
	}
	s := &stream{msgs: make(chan *policyv1.InboundServer, 16), errs: make(chan error, 1)}
	go func() {
		for {
			m, err := w.Recv()
			if err != nil {
				s.errs <- err
				return
			}
			s.msgs <- m
		}
	}()
	return s
}

// next returns the stream's next message, failing after 5 s.
func (s *stream) next(t *testing.T) *policyv1.InboundServer {
	t.Helper()
	select {
	case m := <-s.msgs:
		return m
	case err := <-s.errs:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no policy within 5 s")
	}
	return nil
}

func (s *stream) expect(t *testing.T, want string) *policyv1.InboundServer {
	t.Helper()
	got := s.next(t)
	if diff := cmp.Diff(parseServer(t, want), got, protocmp.Transform()); diff != "" {
		t.Fatalf("policy (-want +got):\n%s", diff)
	}
	return got
}

// TestWatchPortStreams: the current policy at once, the whole new policy
// on a change, nothing on a change that leaves the policy as it is.
func TestWatchPortStreams(t *testing.T) {
	f := startIndex(t, testCluster(), nil, shopNS, webPod, serverAdmin)
	client, srv := serve(t, f.index)
	s := watch(t, client, "shop", "web-1", 9000)
	s.expect(t, `server: {kind: "server" name: "web-admin" namespace: "shop"} protocol: OPAQUE fail_closed: true`)

	f.apply(t, `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: anyone, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs: []
`)
	first := s.expect(t, `server: {kind: "server" name: "web-admin" namespace: "shop"} protocol: OPAQUE fail_closed: true
authorizations: {ref: {kind: "authorizationpolicy" name: "anyone" namespace: "shop"} `+anyNetworks+` unauthenticated: {}}`)

	// Changes that leave the policy as it is: a label on the policy, an
	// unrelated Server, the pod's status, an object in another namespace.
	f.apply(t, `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: anyone, namespace: shop, labels: {team: web}}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs: []
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: unrelated, namespace: shop}
spec:
  podSelector: {matchLabels: {app: db}}
  port: 5432
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-admin, namespace: other}
spec:
  podSelector: {}
  port: 9000
`, webPod+"status: {phase: Running}\n")
	f.seen(t, ServersResource, "other", "web-admin")
	// Then a real change: it must be the next message (a no-op send would
	// have come first, equal to the last one).
	f.apply(t, `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: anyone, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: traffic}]
`)
	got := s.next(t)
	if proto.Equal(got, first) {
		t.Fatal("a change that left the policy as it was was sent again")
	}
	want := parseServer(t, `server: {kind: "server" name: "web-admin" namespace: "shop"} protocol: OPAQUE fail_closed: true
authorizations: {ref: {kind: "authorizationpolicy" name: "anyone" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {identities: "spiffe://cluster.local/ns/shop/sa/traffic"}}`)
	if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
		t.Fatalf("policy (-want +got):\n%s", diff)
	}
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		var m dto.Metric
		if err := srv.updates.Write(&m); err != nil {
			return err
		}
		if n := m.GetCounter().GetValue(); n != 3 {
			return fmt.Errorf("inbound_policy_updates_total = %v, want 3", n)
		}
		return nil
	})

	// The Server goes: the port falls back to the default policy.
	f.servers.Wait(context.Background(), t, 10*time.Second)
	if err := f.dyn.Resource(ServersResource).Namespace("shop").Delete(context.Background(), "web-admin", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	s.expect(t, `server: {kind: "default" name: "deny"} fail_closed: true`)
}

// TestWatchPortWaitsForThePod: a proxy may ask before the pod reaches the
// informer; it gets nothing until then, then the policy.
func TestWatchPortWaitsForThePod(t *testing.T) {
	f := startIndex(t, testCluster(), nil, shopNS)
	client, _ := serve(t, f.index)
	s := watch(t, client, "shop", "web-1", 9000)
	// A change in the namespace before the pod exists sends nothing.
	f.apply(t, serverAdmin)
	f.seen(t, ServersResource, "shop", "web-admin")
	f.apply(t, webPod)
	s.expect(t, `server: {kind: "server" name: "web-admin" namespace: "shop"} protocol: OPAQUE fail_closed: true`)
}

// TestWatchPortErrors: bad PortSpecs are INVALID_ARGUMENT; Shutdown ends
// streams with UNAVAILABLE.
func TestWatchPortErrors(t *testing.T) {
	f := startIndex(t, testCluster(), nil, shopNS, webPod)
	client, srv := serve(t, f.index)
	for _, spec := range []*policyv1.PortSpec{
		{Pod: "web-1", Port: 80},
		{Namespace: "shop", Port: 80},
		{Namespace: "shop", Pod: "web-1"},
		{Namespace: "shop", Pod: "web-1", Port: 65536},
	} {
		w, err := client.WatchPort(context.Background(), spec)
		if err == nil {
			_, err = w.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("WatchPort(%v): %v, want INVALID_ARGUMENT", spec, err)
		}
	}

	s := watch(t, client, "shop", "web-1", 9000)
	s.next(t)
	srv.Shutdown()
	select {
	case err := <-s.errs:
		if status.Code(err) != codes.Unavailable {
			t.Errorf("after Shutdown: %v, want UNAVAILABLE", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the stream outlived Shutdown")
	}
}

// TestStatic: without a cluster, every port gets the default policy.
func TestStatic(t *testing.T) {
	nets, _ := ParseNetworks([]string{"10.0.0.0/8"})
	client, _ := serve(t, Static{Cluster: Cluster{TrustDomain: "cluster.local", DefaultPolicy: ClusterAuthenticated, ClusterNetworks: nets}})
	watch(t, client, "demo", "web", 8080).expect(t, `server: {kind: "default" name: "cluster-authenticated"} fail_closed: true
authorizations: {ref: {kind: "default" name: "cluster-authenticated"} networks: {cidr: "10.0.0.0/8"} mesh_tls: {prefixes: ""}}`)
}
