// Package kube is the Kubernetes discovery backend: informers on Services,
// EndpointSlices, Pods and ReplicaSets turn an authority into the ready
// endpoints behind it, each with its pod's identity (when meshed) and labels.
package kube

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// ProxyVersionLabel marks a pod whose proxy was injected; only such pods get an identity.
const ProxyVersionLabel = "conduit.io/proxy-version"

const (
	indexClusterIP = "clusterIP"
	indexPodIP     = "podIP"
	indexService   = "service"
)

// Options configure a Backend.
type Options struct {
	Client kubernetes.Interface
	// TrustDomain of the identities announced; default cluster.local.
	TrustDomain string
	// ClusterDomain of service names; default cluster.local.
	ClusterDomain string
	// Resync is the informers' resync period; 0 disables resyncs.
	Resync time.Duration
	Log    *slog.Logger
}

// Backend implements discovery.Backend on informer caches.
type Backend struct {
	opts    Options
	factory informers.SharedInformerFactory
	hub     discovery.Hub[key]
	synced  atomic.Bool
	syncCh  chan struct{} // closed once the caches are filled

	services    corelisters.ServiceLister
	pods        corelisters.PodLister
	replicaSets appslisters.ReplicaSetLister
	namespaces  corelisters.NamespaceLister // for stat's namespace rows
	svcIndex    cache.Indexer
	sliceIndex  cache.Indexer
	podIndex    cache.Indexer
}

// key is what a subscriber watches.
type key struct {
	// namespace and service name the service; hostname narrows it to one
	// pod of a headless service.
	namespace, service, hostname string
	// ip is set for an authority that is an IP address: a cluster IP or a pod IP.
	ip   netip.Addr
	port uint16
	// external is set for a name that is not a service in this cluster.
	external string
}

// New sets up the informers. Call Run to start them.
func New(opts Options) (*Backend, error) {
	if opts.Client == nil {
		return nil, errors.New("kubernetes discovery needs a client")
	}
	if opts.TrustDomain == "" {
		opts.TrustDomain = "cluster.local"
	}
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = "cluster.local"
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	f := informers.NewSharedInformerFactoryWithOptions(opts.Client, opts.Resync,
		informers.WithTransform(stripManagedFields))
	b := &Backend{opts: opts, factory: f, syncCh: make(chan struct{})}

	svcInf := f.Core().V1().Services()
	sliceInf := f.Discovery().V1().EndpointSlices()
	podInf := f.Core().V1().Pods()
	rsInf := f.Apps().V1().ReplicaSets()
	if err := svcInf.Informer().AddIndexers(cache.Indexers{indexClusterIP: serviceClusterIPs}); err != nil {
		return nil, err
	}
	if err := sliceInf.Informer().AddIndexers(cache.Indexers{indexService: sliceService}); err != nil {
		return nil, err
	}
	if err := podInf.Informer().AddIndexers(cache.Indexers{indexPodIP: podIPs}); err != nil {
		return nil, err
	}
	b.services, b.svcIndex = svcInf.Lister(), svcInf.Informer().GetIndexer()
	b.sliceIndex = sliceInf.Informer().GetIndexer()
	b.pods, b.podIndex = podInf.Lister(), podInf.Informer().GetIndexer()
	b.replicaSets = rsInf.Lister()
	nsInf := f.Core().V1().Namespaces()
	nsInf.Informer() // registered with the factory: started and synced with the others
	b.namespaces = nsInf.Lister()

	for inf, affected := range map[cache.SharedIndexInformer]func(obj any) func(key) bool{
		svcInf.Informer(): func(obj any) func(key) bool {
			m := meta(obj)
			return func(k key) bool { return k.ip.IsValid() || k.namespace == m.GetNamespace() && k.service == m.GetName() }
		},
		sliceInf.Informer(): func(obj any) func(key) bool {
			m := meta(obj)
			svc := m.GetLabels()[discoveryv1.LabelServiceName]
			// Keys of IP authorities may be a cluster IP of this service.
			return func(k key) bool { return k.ip.IsValid() || k.namespace == m.GetNamespace() && k.service == svc }
		},
		// Pods change the identities and labels of their endpoints.
		podInf.Informer(): b.podAffected,
		// ReplicaSets change the deployment label of pods in their namespace (rarely).
		rsInf.Informer(): func(obj any) func(key) bool {
			m := meta(obj)
			return func(k key) bool { return k.ip.IsValid() || k.namespace == m.GetNamespace() }
		},
	} {
		if _, err := inf.AddEventHandler(b.handler(affected)); err != nil {
			return nil, err
		}
	}
	return b, nil
}

// Run starts the informers, waits until their caches are filled, calls
// ready, and blocks until ctx is done.
func (b *Backend) Run(ctx context.Context, ready func()) error {
	b.factory.Start(ctx.Done())
	defer b.factory.Shutdown()
	for typ, ok := range b.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("kubernetes discovery: the %v cache did not sync", typ)
		}
	}
	b.synced.Store(true)
	close(b.syncCh)
	// Subscribers that arrived before the caches were full get the real state now.
	b.hub.Refresh(func(key) bool { return true }, b.snapshot)
	b.opts.Log.Info("kubernetes discovery synced")
	if ready != nil {
		ready()
	}
	<-ctx.Done()
	return nil
}

// Synced reports whether the caches have been filled.
func (b *Backend) Synced() bool { return b.synced.Load() }

// WaitSynced blocks until the caches are filled or ctx is done, so that no
// stream is told "no such service" merely because the caches are empty.
func (b *Backend) WaitSynced(ctx context.Context) error {
	select {
	case <-b.syncCh:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// Subscribe implements discovery.Backend.
func (b *Backend) Subscribe(authority, ctxToken string, l discovery.Listener) (func(), error) {
	k, err := b.key(authority, ctxToken)
	if err != nil {
		return nil, err
	}
	return b.hub.Subscribe(k, func() discovery.Snapshot { return b.snapshot(k) }, l), nil
}

// key parses an authority as Subscribe does (discovery.ErrInvalidAuthority).
func (b *Backend) key(authority, ctxToken string) (key, error) {
	a, err := discovery.ParseAuthority(authority)
	if err != nil {
		return key{}, err
	}
	k := key{port: a.Port}
	switch name, ok := discovery.ParseServiceHost(a.Host, b.opts.ClusterDomain, discovery.ParseContextToken(ctxToken).Namespace); {
	case a.IP.IsValid():
		k.ip = a.IP
	case ok:
		k.namespace, k.service, k.hostname = name.Namespace, name.Name, name.Hostname
	default:
		k.external = a.Host
	}
	return k, nil
}

// Resolve parses an authority, with the caller's context token for short
// names, exactly as Subscribe does (discovery.ErrInvalidAuthority).
func (b *Backend) Resolve(authority, ctxToken string) (discovery.Target, error) {
	k, err := b.key(authority, ctxToken)
	if err != nil {
		return discovery.Target{}, err
	}
	return discovery.Target{Namespace: k.namespace, Name: k.service, Hostname: k.hostname, IP: k.ip, External: k.external, Port: k.port}, nil
}

// Service returns the Service a target names: by name, or the Service
// whose cluster IP it is; nil when there is none (a pod IP, an external
// name, a Service not in the cache).
func (b *Backend) Service(t discovery.Target) *corev1.Service {
	switch {
	case t.IP.IsValid():
		if objs, _ := b.svcIndex.ByIndex(indexClusterIP, t.IP.String()); len(objs) > 0 {
			return objs[0].(*corev1.Service)
		}
	case t.Name != "":
		if svc, err := b.services.Services(t.Namespace).Get(t.Name); err == nil {
			return svc
		}
	}
	return nil
}

// AddServiceHandler adds h to the Service informer's handlers, for other
// controller services that follow Services (outbound routes). Call it
// before Run.
func (b *Backend) AddServiceHandler(h cache.ResourceEventHandler) error {
	_, err := b.factory.Core().V1().Services().Informer().AddEventHandler(h)
	return err
}

func (b *Backend) handler(affected func(obj any) func(key) bool) cache.ResourceEventHandler {
	refresh := func(obj any) {
		if b.synced.Load() {
			b.hub.Refresh(affected(obj), b.snapshot)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj any) { refresh(obj) },
		UpdateFunc: func(old, obj any) {
			if meta(old).GetResourceVersion() != meta(obj).GetResourceVersion() {
				refresh(obj)
			}
		},
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			refresh(obj)
		},
	}
}

// meta returns an informer object's metadata (zero for anything else).
func meta(obj any) metav1.Object {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	if m, ok := obj.(metav1.Object); ok {
		return m
	}
	return &metav1.ObjectMeta{}
}

func stripManagedFields(obj any) (any, error) {
	if m, ok := obj.(metav1.Object); ok {
		m.SetManagedFields(nil)
	}
	return obj, nil
}

func serviceClusterIPs(obj any) ([]string, error) {
	svc, ok := obj.(*corev1.Service)
	if !ok {
		return nil, nil
	}
	var ips []string
	for _, ip := range append([]string{svc.Spec.ClusterIP}, svc.Spec.ClusterIPs...) {
		if a, err := netip.ParseAddr(ip); err == nil {
			ips = append(ips, a.String())
		}
	}
	return ips, nil
}

func sliceService(obj any) ([]string, error) {
	s, ok := obj.(*discoveryv1.EndpointSlice)
	if !ok || s.Labels[discoveryv1.LabelServiceName] == "" {
		return nil, nil
	}
	return []string{s.Namespace + "/" + s.Labels[discoveryv1.LabelServiceName]}, nil
}

func podIPs(obj any) ([]string, error) {
	p, ok := obj.(*corev1.Pod)
	if !ok || p.Spec.HostNetwork {
		return nil, nil
	}
	var ips []string
	for _, ip := range append([]corev1.PodIP{{IP: p.Status.PodIP}}, p.Status.PodIPs...) {
		if a, err := netip.ParseAddr(ip.IP); err == nil {
			ips = append(ips, a.String())
		}
	}
	return ips, nil
}

// PodLister reads the backend's pod cache (filled once Run has synced), for
// other controller services that need pods, such as stats and tap.
func (b *Backend) PodLister() corelisters.PodLister { return b.pods }

// NamespaceLister reads the backend's namespace cache.
func (b *Backend) NamespaceLister() corelisters.NamespaceLister { return b.namespaces }

// ReplicaSetLister reads the backend's ReplicaSet cache.
func (b *Backend) ReplicaSetLister() appslisters.ReplicaSetLister { return b.replicaSets }

// ServiceLister reads the backend's service cache.
func (b *Backend) ServiceLister() corelisters.ServiceLister { return b.services }
