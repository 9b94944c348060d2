package policy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// ErrPodNotFound is Inbound's answer for a pod the index does not know
// (yet): proxies may ask before the pod reaches the informer.
var ErrPodNotFound = errors.New("pod not found")

// Options configure an Index.
type Options struct {
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	// Discovery tells which resources the API server serves; default
	// Client's.
	Discovery Discovery
	Cluster   Cluster
	Log       *slog.Logger
	// Rediscover is how often the index asks the API server again which of
	// the policy resources and Gateway API routes it serves, to watch those
	// whose CRDs were installed after the index started; default 1 minute.
	Rediscover time.Duration
}

// Discovery is the part of discovery.DiscoveryInterface the index uses.
type Discovery interface {
	ServerResourcesForGroupVersion(groupVersion string) (*metav1.APIResourceList, error)
}

// watched are the resources the index watches when the API server serves
// them, and whether a change to one may concern any namespace (an
// authentication can be required from another namespace) or only its own.
var watched = []struct {
	gvr       schema.GroupVersionResource
	anyNSUses bool
}{
	{ServersResource, false},
	{AuthorizationPoliciesResource, false},
	{MeshTLSAuthenticationsResource, true},
	{NetworkAuthenticationsResource, true},
	{HTTPRoutesResource, false},
	{GRPCRoutesResource, false},
}

// Index computes the inbound policy of pods' ports from informer caches
// (typed for Pods and Namespaces, dynamic for the policy resources and the
// Gateway API routes, each only when served) and tells subscribers when a
// pod's policy may have changed.
type Index struct {
	opts       Options
	kube       informers.SharedInformerFactory
	dyn        dynamicinformer.DynamicSharedInformerFactory
	pods       corelisters.PodLister
	namespaces corelisters.NamespaceLister

	mu sync.RWMutex
	// listers of the watched resources whose caches are filled; a resource
	// without one has no objects as far as the index knows. Replaced, never
	// modified, so a reader may keep the map it got.
	listers map[schema.GroupVersionResource]cache.GenericLister

	started map[schema.GroupVersionResource]bool // by Run only
	// routeHandlers are the route informers' extra handlers
	// (AddRouteHandler), routeInformers those informers once set up; both
	// guarded by mu.
	routeHandlers  []cache.ResourceEventHandler
	routeInformers map[schema.GroupVersionResource]cache.SharedIndexInformer
	synced         chan struct{} // closed once the first caches are filled
	subs           subscribers
}

// NewIndex sets up the informers; Run starts them.
func NewIndex(opts Options) (*Index, error) {
	if opts.Client == nil || opts.Dynamic == nil {
		return nil, errors.New("the policy index needs a Kubernetes client and a dynamic client")
	}
	if opts.Cluster.TrustDomain == "" {
		return nil, errors.New("the policy index needs the trust domain")
	}
	if opts.Cluster.DefaultPolicy == "" {
		opts.Cluster.DefaultPolicy = AllUnauthenticated
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	if opts.Discovery == nil {
		opts.Discovery = opts.Client.Discovery()
	}
	if opts.Rediscover <= 0 {
		opts.Rediscover = time.Minute
	}
	x := &Index{
		opts:    opts,
		kube:    informers.NewSharedInformerFactoryWithOptions(opts.Client, 0, informers.WithTransform(stripManagedFields)),
		dyn:     dynamicinformer.NewDynamicSharedInformerFactory(opts.Dynamic, 0),
		listers: map[schema.GroupVersionResource]cache.GenericLister{},
		started: map[schema.GroupVersionResource]bool{},
		synced:  make(chan struct{}),
	}
	podInf := x.kube.Core().V1().Pods()
	nsInf := x.kube.Core().V1().Namespaces()
	x.pods, x.namespaces = podInf.Lister(), nsInf.Lister()
	if _, err := podInf.Informer().AddEventHandler(x.handler(func(m metav1Object) { x.subs.notify(m.GetNamespace(), m.GetName()) })); err != nil {
		return nil, err
	}
	if _, err := nsInf.Informer().AddEventHandler(x.handler(func(m metav1Object) { x.subs.notify(m.GetName(), "") })); err != nil {
		return nil, err
	}
	return x, nil
}

type metav1Object interface {
	GetNamespace() string
	GetName() string
}

// handler calls changed with the metadata of every added, updated or
// deleted object.
func (x *Index) handler(changed func(metav1Object)) cache.ResourceEventHandler {
	on := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		if m, err := meta.Accessor(obj); err == nil {
			changed(m)
		}
	}
	return cache.ResourceEventHandlerFuncs{AddFunc: on, UpdateFunc: func(_, obj any) { on(obj) }, DeleteFunc: on}
}

func stripManagedFields(obj any) (any, error) {
	if m, err := meta.Accessor(obj); err == nil {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

// Run starts the informers and fills their caches, then keeps watching
// for newly served resources until ctx is done.
func (x *Index) Run(ctx context.Context) error {
	x.kube.Start(ctx.Done())
	defer x.kube.Shutdown()
	defer x.dyn.Shutdown()
	for typ, ok := range x.kube.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("policy index: the %v cache did not sync", typ)
		}
	}
	// The first discovery must succeed: without it, ports under a Server
	// would get the default policy.
	for {
		err := x.discover(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		x.opts.Log.Warn("policy index: asking the API server which policy resources it serves; retrying", "err", err)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(2 * time.Second):
		}
	}
	close(x.synced)
	x.subs.notifyAll()
	x.opts.Log.Info("policy index synced", "resources", x.watching())
	t := time.NewTicker(x.opts.Rediscover)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			if err := x.discover(ctx); err != nil && ctx.Err() == nil {
				x.opts.Log.Warn("policy index: asking the API server which policy resources it serves", "err", err)
			}
		}
	}
}

// WaitSynced blocks until the caches are filled or ctx is done.
func (x *Index) WaitSynced(ctx context.Context) error {
	select {
	case <-x.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (x *Index) watching() []string {
	x.mu.RLock()
	defer x.mu.RUnlock()
	var out []string
	for gvr := range x.listers {
		out = append(out, gvr.GroupResource().String())
	}
	slices.Sort(out)
	return out
}

// discover starts informers for the watched resources the API server
// serves and that are not watched yet, and waits for their caches.
func (x *Index) discover(ctx context.Context) error {
	var fresh []schema.GroupVersionResource
	served := map[schema.GroupVersion][]string{}
	for _, w := range watched {
		if x.started[w.gvr] {
			continue
		}
		gv := w.gvr.GroupVersion()
		names, ok := served[gv]
		if !ok {
			list, err := x.opts.Discovery.ServerResourcesForGroupVersion(gv.String())
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("discovering %s: %w", gv, err)
			}
			names = []string{}
			if list != nil {
				for _, r := range list.APIResources {
					names = append(names, r.Name)
				}
			}
			served[gv] = names
		}
		if !slices.Contains(names, w.gvr.Resource) {
			continue
		}
		inf := x.dyn.ForResource(w.gvr).Informer()
		if err := inf.SetTransform(stripManagedFields); err != nil {
			return err
		}
		if slices.Contains(RouteResources, w.gvr) {
			if err := x.addRouteInformer(w.gvr, inf); err != nil {
				return err
			}
		}
		anyNS := w.anyNSUses
		if _, err := inf.AddEventHandler(x.handler(func(m metav1Object) {
			if anyNS {
				x.subs.notifyAll()
			} else {
				x.subs.notify(m.GetNamespace(), "")
			}
		})); err != nil {
			return err
		}
		x.started[w.gvr] = true
		fresh = append(fresh, w.gvr)
	}
	if len(fresh) == 0 {
		return nil
	}
	x.dyn.Start(ctx.Done())
	// A cache that does not fill (no RBAC for it, say) holds back every
	// stream rather than serve a policy without its objects: say so.
	warn := time.NewTicker(30 * time.Second)
	defer warn.Stop()
	for _, gvr := range fresh {
		inf := x.dyn.ForResource(gvr).Informer()
		for !inf.HasSynced() {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-warn.C:
				x.opts.Log.Warn("policy index: waiting for the cache to fill; check the controller's RBAC", "resource", gvr.GroupResource().String())
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	x.mu.Lock()
	listers := make(map[schema.GroupVersionResource]cache.GenericLister, len(x.listers)+len(fresh))
	for k, v := range x.listers {
		listers[k] = v
	}
	for _, gvr := range fresh {
		listers[gvr] = x.dyn.ForResource(gvr).Lister()
	}
	x.listers = listers
	x.mu.Unlock()
	select {
	case <-x.synced: // a resource served since: its objects may change policies
		x.opts.Log.Info("policy index: watching newly served resources", "resources", fmt.Sprint(fresh))
		x.subs.notifyAll()
	default:
	}
	return nil
}

// Inbound computes the policy of a port of a pod (ErrPodNotFound when the
// index does not know the pod).
func (x *Index) Inbound(namespace, pod string, port uint32) (*policyv1.InboundServer, error) {
	p, err := x.pods.Pods(namespace).Get(pod)
	if apierrors.IsNotFound(err) {
		return nil, ErrPodNotFound
	}
	if err != nil {
		return nil, err
	}
	ns, err := x.namespaces.Get(namespace)
	if err != nil {
		ns = nil // no annotation to read
	}
	x.mu.RLock()
	listers := x.listers
	x.mu.RUnlock()
	log := x.opts.Log
	v := &view{
		pod:       p,
		namespace: ns,
		skipped: func(what string, err error) {
			log.Debug("inbound policy: ignored", "object", what, "reason", err)
		},
	}
	v.servers = list[Server](listers[ServersResource], namespace, v.skipped)
	v.policies = list[AuthorizationPolicy](listers[AuthorizationPoliciesResource], namespace, v.skipped)
	v.httpRoutes = list[HTTPRoute](listers[HTTPRoutesResource], namespace, v.skipped)
	v.grpcRoutes = list[GRPCRoute](listers[GRPCRoutesResource], namespace, v.skipped)
	v.meshTLS = func(ns, name string) *MeshTLSAuthentication {
		return get[MeshTLSAuthentication](listers[MeshTLSAuthenticationsResource], ns, name, v.skipped)
	}
	v.network = func(ns, name string) *NetworkAuthentication {
		return get[NetworkAuthentication](listers[NetworkAuthenticationsResource], ns, name, v.skipped)
	}
	return inbound(&x.opts.Cluster, v, port), nil
}

// list converts the objects of namespace ns; those that do not convert are
// skipped.
func list[T any](l cache.GenericLister, ns string, skipped func(string, error)) []*T {
	if l == nil {
		return nil
	}
	objs, err := l.ByNamespace(ns).List(labels.Everything())
	if err != nil {
		skipped("list in "+ns, err)
		return nil
	}
	out := make([]*T, 0, len(objs))
	for _, o := range objs {
		t, err := fromUnstructured[T](o)
		if err != nil {
			skipped("object", err)
			continue
		}
		out = append(out, t)
	}
	return out
}

// get converts one object, nil when it does not exist or does not convert.
func get[T any](l cache.GenericLister, ns, name string, skipped func(string, error)) *T {
	if l == nil {
		return nil
	}
	o, err := l.ByNamespace(ns).Get(name)
	if err != nil {
		return nil
	}
	t, err := fromUnstructured[T](o)
	if err != nil {
		skipped("object", err)
		return nil
	}
	return t
}

// Subscribe returns a channel that receives a value whenever the policy
// of a port of ns/pod may have changed (several changes may arrive as
// one), until cancel is called.
func (x *Index) Subscribe(ns, pod string) (changed <-chan struct{}, cancel func()) {
	return x.subs.add(ns, pod)
}

// subscribers are the streams waiting for changes, by namespace.
type subscribers struct {
	mu   sync.Mutex
	byNS map[string]map[*subscription]bool // guarded by mu
}

type subscription struct {
	pod string
	ch  chan struct{} // buffered: a pending change absorbs later ones
}

func (s *subscribers) add(ns, pod string) (<-chan struct{}, func()) {
	sub := &subscription{pod: pod, ch: make(chan struct{}, 1)}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byNS == nil {
		s.byNS = map[string]map[*subscription]bool{}
	}
	if s.byNS[ns] == nil {
		s.byNS[ns] = map[*subscription]bool{}
	}
	s.byNS[ns][sub] = true
	return sub.ch, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		delete(s.byNS[ns], sub)
		if len(s.byNS[ns]) == 0 {
			delete(s.byNS, ns)
		}
	}
}

// notify wakes the subscribers of pod in ns, or of every pod of ns when
// pod is empty.
func (s *subscribers) notify(ns, pod string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for sub := range s.byNS[ns] {
		if pod == "" || sub.pod == pod {
			wake(sub)
		}
	}
}

func (s *subscribers) notifyAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, subs := range s.byNS {
		for sub := range subs {
			wake(sub)
		}
	}
}

func wake(sub *subscription) {
	select {
	case sub.ch <- struct{}{}:
	default:
	}
}
