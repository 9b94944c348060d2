package routes

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"
	"strings"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/destination"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// Services is what outbound routing needs of a discovery backend: its
// authority resolution and its Services — kube.Backend's Service cache, or
// the Services local.Backend synthesizes from its registry. Service
// objects are read only, and a change makes a new object with a new
// resourceVersion.
type Services interface {
	WaitSynced(ctx context.Context) error
	Resolve(authority, ctxToken string) (discovery.Target, error)
	Service(discovery.Target) *corev1.Service
	AddServiceHandler(cache.ResourceEventHandler) error
}

// RouteIndex is what outbound routing needs of the policy index
// (policy.Index, also in local mode through policy.Local): its route
// informers.
type RouteIndex interface {
	WaitSynced(ctx context.Context) error
	AddRouteHandler(cache.ResourceEventHandler) error
	RoutesOfService(gvr schema.GroupVersionResource, namespace, name string) []*unstructured.Unstructured
	RoutesWithBackend(gvr schema.GroupVersionResource, namespace, name string) []*unstructured.Unstructured
	Route(gvr schema.GroupVersionResource, namespace, name string) *unstructured.Unstructured
}

// Options configure a Source.
type Options struct {
	Services Services
	Routes   RouteIndex
	// ClusterDomain of the backends' authorities; default cluster.local.
	ClusterDomain string
	Log           *slog.Logger
}

func (o *Options) defaults() error {
	if o.Services == nil || o.Routes == nil {
		return errors.New("outbound routes need a discovery backend's Services and the policy index")
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	o.ClusterDomain = strings.Trim(o.ClusterDomain, ".")
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return nil
}

// lookup is a ServiceLookup on the discovery backend's cache.
func lookup(s Services) ServiceLookup {
	return func(ns, name string) *corev1.Service {
		return s.Service(discovery.Target{Namespace: ns, Name: name})
	}
}

// Source computes route tables (destination.RouteSource) and wakes the
// watches whose table a change of a route or a Service may concern.
type Source struct {
	opts Options
	tr   translator

	mu sync.Mutex
	// byService are the watches whose table depends on a Service
	// ("namespace/name": the parent, its routes' backends); byIP those of
	// an IP authority, which any Service may come to own.
	byService map[string]map[*watch]bool
	byIP      map[*watch]bool
	// logged is the last annotation problem logged for each Service.
	logged map[string]string
}

// New sets up a Source and adds its handlers to the informers; the
// informers are run by their owners.
func New(opts Options) (*Source, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	s := &Source{
		opts:      opts,
		tr:        translator{clusterDomain: opts.ClusterDomain, service: lookup(opts.Services)},
		byService: map[string]map[*watch]bool{},
		byIP:      map[*watch]bool{},
		logged:    map[string]string{},
	}
	if err := opts.Services.AddServiceHandler(changes(func(old, obj any) {
		for _, o := range []any{old, obj} {
			if svc, ok := o.(*corev1.Service); ok {
				s.wake([]string{svc.Namespace + "/" + svc.Name}, true)
			}
		}
		if svc, ok := old.(*corev1.Service); ok && obj == nil {
			s.forget(svc)
		}
	})); err != nil {
		return nil, err
	}
	if err := opts.Routes.AddRouteHandler(changes(func(old, obj any) {
		s.wake(append(policy.ServiceParents(old), policy.ServiceParents(obj)...), false)
	})); err != nil {
		return nil, err
	}
	return s, nil
}

// changes is a handler that calls f(old, new) for every change: old is nil
// for an addition, new for a deletion. Resyncs (same resourceVersion) are
// not changes.
func changes(f func(old, obj any)) cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { f(nil, obj) },
		UpdateFunc: func(old, obj any) {
			if o, ok1 := old.(interface{ GetResourceVersion() string }); ok1 {
				if n, ok2 := obj.(interface{ GetResourceVersion() string }); ok2 && o.GetResourceVersion() == n.GetResourceVersion() {
					return
				}
			}
			f(old, obj)
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			f(obj, nil)
		},
	}
}

// WaitSynced implements destination.RouteSource.
func (s *Source) WaitSynced(ctx context.Context) error {
	if err := s.opts.Services.WaitSynced(ctx); err != nil {
		return err
	}
	return s.opts.Routes.WaitSynced(ctx)
}

// WatchRoutes implements destination.RouteSource.
func (s *Source) WatchRoutes(authority, ctxToken string) (destination.RouteWatch, error) {
	t, err := s.opts.Services.Resolve(authority, ctxToken)
	if err != nil {
		return nil, err
	}
	w := &watch{s: s, target: t, callerNS: discovery.ParseContextToken(ctxToken).Namespace, changed: make(chan struct{}, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if t.IP.IsValid() {
		s.byIP[w] = true
	}
	if t.Name != "" {
		s.dependLocked(w, []string{t.Namespace + "/" + t.Name})
	}
	return w, nil
}

// wake signals the watches that depend on any of the Services (and those
// of IP authorities when a Service changed).
func (s *Source) wake(keys []string, serviceChanged bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, k := range keys {
		for w := range s.byService[k] {
			w.signal()
		}
	}
	if serviceChanged {
		for w := range s.byIP {
			w.signal()
		}
	}
}

// dependLocked makes w depend on exactly keys. s.mu is held.
func (s *Source) dependLocked(w *watch, keys []string) {
	for _, k := range w.deps {
		if !slices.Contains(keys, k) {
			delete(s.byService[k], w)
			if len(s.byService[k]) == 0 {
				delete(s.byService, k)
			}
		}
	}
	for _, k := range keys {
		if s.byService[k] == nil {
			s.byService[k] = map[*watch]bool{}
		}
		s.byService[k][w] = true
	}
	w.deps = keys
}

// watch is one GetRoutes stream's authority.
type watch struct {
	s        *Source
	target   discovery.Target
	callerNS string
	changed  chan struct{} // buffered: a pending change absorbs later ones
	deps     []string      // guarded by s.mu
	closed   bool          // guarded by s.mu
}

func (w *watch) signal() {
	select {
	case w.changed <- struct{}{}:
	default:
	}
}

// Changed implements destination.RouteWatch.
func (w *watch) Changed() <-chan struct{} { return w.changed }

// Close implements destination.RouteWatch.
func (w *watch) Close() {
	w.s.mu.Lock()
	defer w.s.mu.Unlock()
	w.s.dependLocked(w, nil)
	delete(w.s.byIP, w)
	w.closed = true
}

// Table implements destination.RouteWatch.
func (w *watch) Table() *destinationv1.OutboundRoutes {
	var deps []string
	if w.target.Name != "" {
		deps = append(deps, w.target.Namespace+"/"+w.target.Name)
	}
	var svc *corev1.Service
	if w.target.Hostname == "" { // one pod of a headless Service is not routed
		svc = w.s.opts.Services.Service(w.target)
	}
	table := &destinationv1.OutboundRoutes{}
	if svc != nil && svc.Spec.Type != corev1.ServiceTypeExternalName {
		var backends []string
		table, backends = w.s.table(svc, w.target.Port, w.callerNS)
		deps = append(deps, svc.Namespace+"/"+svc.Name)
		deps = append(deps, backends...)
	}
	slices.Sort(deps)
	deps = slices.Compact(deps)
	w.s.mu.Lock()
	if !w.closed {
		w.s.dependLocked(w, deps)
	}
	w.s.mu.Unlock()
	return table
}

// table computes the table of a Service's port for a client in callerNS,
// and the Services its routes name as backends.
func (s *Source) table(svc *corev1.Service, port uint16, callerNS string) (*destinationv1.OutboundRoutes, []string) {
	out := &destinationv1.OutboundRoutes{Found: true}
	var problems []string
	out.ServicePolicy, problems = servicePolicy(svc.Annotations)
	var more []string
	out.FailureAccrual, more = failureAccrual(svc.Annotations)
	s.logProblems(svc, append(problems, more...))

	routes := s.attached(svc, port, callerNS)
	var backends []string
	for _, r := range routes {
		tr := r.translate(&s.tr)
		if tr.unsupported != nil {
			continue // not accepted: its status says why
		}
		out.Routes = append(out.Routes, tr.route)
		backends = append(backends, r.backends...)
	}
	return out, backends
}

// route is a route attached to a Service, not yet translated.
type route struct {
	kind      string // RefKindHTTPRoute or RefKindGRPCRoute
	http      *policy.HTTPRoute
	grpc      *policy.GRPCRoute
	namespace string
	name      string
	created   int64
	// refs are each rule's backendRefs; backends the Services
	// ("namespace/name") they name.
	refs     [][]policy.BackendRef
	backends []string
}

func (r *route) translate(t *translator) translated {
	if r.http != nil {
		return t.httpRoute(r.http)
	}
	return t.grpcRoute(r.grpc)
}

// attached returns the routes that apply to a client in callerNS calling a
// port of svc, in a stable order (oldest first, then by namespace, name
// and kind). Routes in the Service's namespace (producer routes) apply to
// every client, unless routes in the client's own namespace (consumer
// routes) name the Service: those then apply instead, to the clients of
// that namespace only. Routes in other namespaces apply to no one.
func (s *Source) attached(svc *corev1.Service, port uint16, callerNS string) []*route {
	var producer, consumer []*route
	for _, gvr := range policy.RouteResources {
		for _, u := range s.opts.Routes.RoutesOfService(gvr, svc.Namespace, svc.Name) {
			if u.GetNamespace() != svc.Namespace && (callerNS == "" || u.GetNamespace() != callerNS) {
				continue
			}
			r, parents := convert(gvr, u)
			if r == nil || !slices.ContainsFunc(parents, func(p policy.ParentRef) bool { return parentIsPort(p, r.namespace, svc, port) }) {
				continue
			}
			if r.namespace == svc.Namespace {
				producer = append(producer, r)
			} else {
				consumer = append(consumer, r)
			}
		}
	}
	routes := producer
	if len(consumer) > 0 {
		routes = consumer
	}
	slices.SortFunc(routes, func(a, b *route) int {
		return cmp.Or(cmp.Compare(a.created, b.created), cmp.Compare(a.namespace, b.namespace), cmp.Compare(a.name, b.name), cmp.Compare(a.kind, b.kind))
	})
	return routes
}

// convert reads an informer's route; nil when it does not convert (the
// API server validated it, so hardly ever).
func convert(gvr schema.GroupVersionResource, u *unstructured.Unstructured) (*route, []policy.ParentRef) {
	r := &route{namespace: u.GetNamespace(), name: u.GetName(), created: unixNano(u.GetCreationTimestamp())}
	var parents []policy.ParentRef
	switch gvr {
	case policy.HTTPRoutesResource:
		hr, err := policy.FromUnstructured[policy.HTTPRoute](u)
		if err != nil {
			return nil, nil
		}
		r.kind, r.http, parents = RefKindHTTPRoute, hr, hr.Spec.ParentRefs
		for _, rule := range hr.Spec.Rules {
			r.refs = append(r.refs, rule.BackendRefs)
		}
	case policy.GRPCRoutesResource:
		gr, err := policy.FromUnstructured[policy.GRPCRoute](u)
		if err != nil {
			return nil, nil
		}
		r.kind, r.grpc, parents = RefKindGRPCRoute, gr, gr.Spec.ParentRefs
		for _, rule := range gr.Spec.Rules {
			r.refs = append(r.refs, rule.BackendRefs)
		}
	default:
		return nil, nil
	}
	for _, refs := range r.refs {
		for _, b := range refs {
			if b.IsService() {
				r.backends = append(r.backends, b.ServiceNamespace(r.namespace)+"/"+b.Name)
			}
		}
	}
	return r, parents
}

// parentIsPort reports whether a parentRef of a route in routeNS names
// port of svc: the Service, and the port when it gives one (port, or
// sectionName as the port's name).
func parentIsPort(p policy.ParentRef, routeNS string, svc *corev1.Service, port uint16) bool {
	if !p.IsService() || p.Name != svc.Name || p.ServiceNamespace(routeNS) != svc.Namespace {
		return false
	}
	if p.Port != nil && *p.Port != int32(port) {
		return false
	}
	if p.SectionName != nil && *p.SectionName != "" {
		return slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
			return sp.Name == *p.SectionName && sp.Port == int32(port)
		})
	}
	return true
}

// logProblems logs a Service's ignored annotations once (again when they
// change).
func (s *Source) logProblems(svc *corev1.Service, problems []string) {
	key := svc.Namespace + "/" + svc.Name
	text := strings.Join(problems, "; ")
	s.mu.Lock()
	same := s.logged[key] == text
	if text == "" {
		delete(s.logged, key)
	} else {
		s.logged[key] = text
	}
	s.mu.Unlock()
	if !same && text != "" {
		s.opts.Log.Warn("outbound routes: Service annotations ignored", "service", key, "problems", text)
	}
}

// forget drops what is remembered of a deleted Service.
func (s *Source) forget(svc *corev1.Service) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.logged, svc.Namespace+"/"+svc.Name)
}
