package routes

import (
	"context"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/internal/testenv/fakekube"
	"github.com/conduitmesh/conduit/internal/testenv/testgrpc"
	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/destination"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
	"github.com/conduitmesh/conduit/pkg/controller/discovery/kube"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// fixture is outbound routing on fake clientsets: the discovery backend,
// the policy index, a Source served by a destination.Server, and a
// StatusWriter.
type fixture struct {
	kube   *fake.Clientset
	dyn    *dynamicfake.FakeDynamicClient
	src    *Source
	status *StatusWriter
	client destinationv1.DestinationClient
	// The informers' watches of what the tests delete (fakekube).
	kubeWatches, dynWatches *fakekube.Watches
	now                     atomic.Int64 // the StatusWriter's clock, Unix seconds
	rv                      atomic.Int64 // the resourceVersion of the next write
}

// servedRoutes serves the Gateway API route resources to the index.
type servedRoutes struct{}

func (servedRoutes) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	if gv != policy.HTTPRoutesResource.GroupVersion().String() {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: gv}, "")
	}
	return &metav1.APIResourceList{GroupVersion: gv, APIResources: []metav1.APIResource{
		{Name: "httproutes", Namespaced: true}, {Name: "grpcroutes", Namespaced: true},
	}}, nil
}

// start runs outbound routing on fake clientsets holding the YAML
// documents (Services in the typed one, routes in the dynamic one).
func start(t *testing.T, docs ...string) *fixture {
	t.Helper()
	return startWith(t, nil, nil, docs...)
}

// startWith is start with the status writes elected by lease (nil: none),
// whose Client is the fixture's typed clientset, which starts with objs.
func startWith(t *testing.T, lease *Lease, objs []runtime.Object, docs ...string) *fixture {
	t.Helper()
	f := &fixture{kube: fake.NewClientset(objs...)}
	if lease != nil {
		lease.Client = f.kube
	}
	f.now.Store(time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC).Unix())
	f.dyn = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), map[schema.GroupVersionResource]string{
		policy.HTTPRoutesResource: "HTTPRouteList",
		policy.GRPCRoutesResource: "GRPCRouteList",
	})
	f.kubeWatches = fakekube.Watch(f.kube, "services")
	f.dynWatches = fakekube.Watch(f.dyn, policy.HTTPRoutesResource.Resource, policy.GRPCRoutesResource.Resource)
	for _, doc := range docs {
		f.apply(t, doc)
	}
	kb, err := kube.New(kube.Options{Client: f.kube})
	if err != nil {
		t.Fatal(err)
	}
	index, err := policy.NewIndex(policy.Options{Client: f.kube, Dynamic: f.dyn, Discovery: servedRoutes{},
		Cluster: policy.Cluster{TrustDomain: "cluster.local"}})
	if err != nil {
		t.Fatal(err)
	}
	opts := Options{Services: kb, Routes: index}
	if f.src, err = New(opts); err != nil {
		t.Fatal(err)
	}
	f.status, err = NewStatusWriter(StatusOptions{Options: opts, Dynamic: f.dyn, Now: func() time.Time { return time.Unix(f.now.Load(), 0) }, Lease: lease})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{}, 3)
	go func() { kb.Run(ctx, nil); done <- struct{}{} }()
	go func() { index.Run(ctx); done <- struct{}{} }()
	go func() { f.status.Run(ctx); done <- struct{}{} }()
	t.Cleanup(func() {
		cancel()
		for range 3 {
			<-done
		}
	})

	f.client = serve(t, kb, f.src)
	return f
}

// serve serves Destination with the backend and the route source over an
// in-memory connection, once the source is synced, until the test ends.
func serve(t *testing.T, backend discovery.Backend, src *Source) destinationv1.DestinationClient {
	t.Helper()
	srv, err := destination.NewServer(backend, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv.SetRouteSource(src, 5*time.Millisecond)
	conn := testgrpc.Serve(t, func(gs *grpc.Server) { destinationv1.RegisterDestinationServer(gs, srv) })
	t.Cleanup(srv.Shutdown)
	wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer wcancel()
	if err := src.WaitSynced(wctx); err != nil {
		t.Fatal(err)
	}
	return destinationv1.NewDestinationClient(conn)
}

// apply creates or updates the object of a YAML document (with a new
// resourceVersion, as the API server would give it).
func (f *fixture) apply(t *testing.T, doc string) {
	t.Helper()
	// Through JSON, as the API server's answers arrive (numbers are int64).
	data, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(data); err != nil {
		t.Fatal(err)
	}
	m := u.Object
	u.SetResourceVersion(strconv.FormatInt(f.rv.Add(1), 10))
	ctx := context.Background()
	if u.GetKind() == "Service" {
		svc := &corev1.Service{}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(m, svc); err != nil {
			t.Fatal(err)
		}
		_, err := f.kube.CoreV1().Services(svc.Namespace).Update(ctx, svc, metav1.UpdateOptions{})
		if apierrors.IsNotFound(err) {
			_, err = f.kube.CoreV1().Services(svc.Namespace).Create(ctx, svc, metav1.CreateOptions{})
		}
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	gvr := policy.HTTPRoutesResource
	if u.GetKind() == policy.KindGRPCRoute {
		gvr = policy.GRPCRoutesResource
	}
	if u.GetAPIVersion() == "" {
		u.SetAPIVersion(gvr.GroupVersion().String())
	}
	ri := f.dyn.Resource(gvr).Namespace(u.GetNamespace())
	if old, err := ri.Get(ctx, u.GetName(), metav1.GetOptions{}); err == nil {
		// Keep the status, as an update of the spec does.
		if st, ok := old.Object["status"]; ok {
			u.Object["status"] = st
		}
		_, err = ri.Update(ctx, u, metav1.UpdateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return
	}
	if _, err := ri.Create(ctx, u, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// deleteService deletes a Service.
func (f *fixture) deleteService(t *testing.T, ns, name string) {
	t.Helper()
	f.kubeWatches.Wait(context.Background(), t, 10*time.Second)
	if err := f.kube.CoreV1().Services(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// deleteRoute deletes a route.
func (f *fixture) deleteRoute(t *testing.T, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	f.dynWatches.Wait(context.Background(), t, 10*time.Second)
	if err := f.dyn.Resource(gvr).Namespace(ns).Delete(context.Background(), name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
}

// routesStream is an open GetRoutes stream.
type routesStream struct {
	tables chan *destinationv1.OutboundRoutes
	errs   chan error
}

func (f *fixture) getRoutes(t *testing.T, authority, token string) *routesStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	s, err := f.client.GetRoutes(ctx, &destinationv1.GetDestination{Authority: authority, ContextToken: token})
	if err != nil {
		t.Fatal(err)
	}
	rs := &routesStream{tables: make(chan *destinationv1.OutboundRoutes, 100), errs: make(chan error, 1)}
	go func() {
		for {
			m, err := s.Recv()
			if err != nil {
				rs.errs <- err
				return
			}
			rs.tables <- m
		}
	}()
	return rs
}

// next returns the next table, failing the test when none arrives in time.
func (rs *routesStream) next(t *testing.T) *destinationv1.OutboundRoutes {
	t.Helper()
	select {
	case m := <-rs.tables:
		return m
	case err := <-rs.errs:
		t.Fatalf("stream ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("no table within 5s")
	}
	return nil
}

// quiet fails the test if a table arrives within d.
func (rs *routesStream) quiet(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case m := <-rs.tables:
		t.Fatalf("unexpected table: %v", m)
	case <-time.After(d):
	}
}

// backends lists a table's backends, rule by rule: "authority=weight"
// (with "!" and the reason for an invalid one).
func backends(table *destinationv1.OutboundRoutes) string {
	var rules []string
	for _, r := range table.GetRoutes() {
		for _, rule := range r.GetRules() {
			var bs []string
			for _, b := range rule.GetBackends() {
				s := b.GetAuthority() + "=" + strconv.Itoa(int(b.GetWeight()))
				if b.GetInvalid() != "" {
					s += "!" + b.GetInvalid()
				}
				bs = append(bs, s)
			}
			rules = append(rules, r.GetRef().GetName()+":"+strings.Join(bs, ","))
		}
	}
	return strings.Join(rules, " | ")
}
