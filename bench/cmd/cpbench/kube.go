package main

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	"github.com/conduitmesh/conduit/integration/cluster"
	"github.com/conduitmesh/conduit/pkg/controller/identity"
)

// The objects the bench creates.
const (
	hotNamespace = "bench-hot"
	hotService   = "hot"
	hotSlice     = "hot-1"
	// proxyVersionLabel marks a pod as injected: its endpoints carry an
	// identity (pkg/contract.LabelProxyVersion).
	proxyVersionLabel = "conduit.io/proxy-version"
	// proxyContainer is the container stats looks for before scraping a
	// pod (pkg/contract.ProxyContainerName). The scale pods have none, so
	// their kwok addresses (10.244.0.0/16, not on this machine) are never
	// dialled; only the stats pods, on loopback addresses, have one.
	proxyContainer   = "conduit-proxy"
	loopbackNode     = "bench-loopback-0"
	identityNS       = "bench-identity"
	statsNSPrefix    = "bench-stats-"
	statsNamespaces  = 10
	scaleNSPrefix    = "bench-scale-"
	servicePort      = 80
	targetPort       = 8080
	proxyAdminPort   = 4191
	statsServiceName = "app"
)

func scaleNamespace(i int) string { return fmt.Sprintf("%s%d", scaleNSPrefix, i) }

// scaleService is service i of o.services: its namespace and name.
func scaleService(o options, i int) (ns, name string) {
	return scaleNamespace(i % o.namespaces), fmt.Sprintf("svc-%d", i)
}

func serviceAuthority(ns, name string) string {
	return fmt.Sprintf("%s.%s.svc.cluster.local:%d", name, ns, servicePort)
}

// markerAddr is the endpoint address that change g (from 1) puts into the
// hot service: 10.250.0.0/16, so a proxy tells which change an update is.
func markerAddr(g int) netip.Addr {
	return netip.AddrFrom4([4]byte{10, 250, byte(g >> 8), byte(g)})
}

// markerOf is markerAddr's inverse; 0 for other addresses.
func markerOf(a netip.Addr) int {
	b := a.As4()
	if !a.Is4() || b[0] != 10 || b[1] != 250 {
		return 0
	}
	return int(b[2])<<8 | int(b[3])
}

// setUpObjects creates the namespaces, the hot service with its
// hand-written EndpointSlice, the scale services (no pods yet) with one
// ServiceAccount each, and the loopback node the stats pods run on.
func setUpObjects(ctx context.Context, c *cluster.Cluster, o options) error {
	var nss []string
	nss = append(nss, hotNamespace, identityNS)
	for i := range o.namespaces {
		nss = append(nss, scaleNamespace(i))
	}
	for i := range statsNamespaces {
		nss = append(nss, fmt.Sprintf("%s%d", statsNSPrefix, i))
	}
	if err := parallel(ctx, len(nss), 8, func(i int) error { return c.CreateNamespace(ctx, nss[i], nil) }); err != nil {
		return err
	}
	client := c.Client
	if _, err := client.CoreV1().Services(hotNamespace).Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: hotService},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Name: "http", Port: servicePort, TargetPort: intstr.FromInt32(targetPort)}}},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the hot service: %w", err)
	}
	if _, err := client.DiscoveryV1().EndpointSlices(hotNamespace).Create(ctx, hotSliceFor(o, 0), metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating the hot EndpointSlice: %w", err)
	}
	err := parallel(ctx, o.services, 8, func(i int) error {
		ns, name := scaleService(o, i)
		if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating ServiceAccount %s/%s: %w", ns, name, err)
		}
		_, err := client.CoreV1().Services(ns).Create(ctx, &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: corev1.ServiceSpec{
				Selector: map[string]string{"app": name},
				Ports:    []corev1.ServicePort{{Name: "http", Port: servicePort, TargetPort: intstr.FromString("http")}},
			},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("creating service %s/%s: %w", ns, name, err)
		}
		return nil
	})
	if err != nil {
		return err
	}
	// A second fake node whose pod CIDR is on loopback: kwok gives its pods
	// addresses from the node's podCIDR, where the bench's /metrics
	// listeners wait.
	capacity := corev1.ResourceList{
		corev1.ResourceCPU: resource.MustParse("1000"), corev1.ResourceMemory: resource.MustParse("1Ti"), corev1.ResourcePods: resource.MustParse("100000"),
	}
	if _, err := client.CoreV1().Nodes().Create(ctx, &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        loopbackNode,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake", "node.alpha.kubernetes.io/ttl": "0"},
			Labels:      map[string]string{"type": "kwok", "kubernetes.io/hostname": loopbackNode, "kubernetes.io/os": "linux"},
		},
		Spec:   corev1.NodeSpec{PodCIDR: o.statsCIDR.String(), PodCIDRs: []string{o.statsCIDR.String()}},
		Status: corev1.NodeStatus{Capacity: capacity, Allocatable: capacity},
	}, metav1.CreateOptions{}); err != nil {
		return fmt.Errorf("creating node %s: %w", loopbackNode, err)
	}
	return nil
}

// hotSliceFor is the hot service's EndpointSlice after change g (0: none
// yet): the fixed endpoints and marker g.
func hotSliceFor(o options, g int) *discoveryv1.EndpointSlice {
	s := &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Name: hotSlice, Namespace: hotNamespace, Labels: map[string]string{discoveryv1.LabelServiceName: hotService}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To[int32](targetPort)}},
	}
	for i := range o.endpoints {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{netip.AddrFrom4([4]byte{10, 251, byte(i >> 8), byte(i + 1)}).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	if g > 0 {
		s.Endpoints = append(s.Endpoints, discoveryv1.Endpoint{
			Addresses:  []string{markerAddr(g).String()},
			Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)},
		})
	}
	return s
}

// scalePod is pod j of service i: meshed (its endpoint has an identity) but
// without a proxy container, on kwok's node.
func scalePod(o options, i, j int) *corev1.Pod {
	ns, svc := scaleService(o, i)
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: fmt.Sprintf("%s-%d", svc, j),
			Labels: map[string]string{"app": svc, proxyVersionLabel: "bench"},
		},
		Spec: corev1.PodSpec{
			NodeName:           cluster.NodeName,
			ServiceAccountName: svc,
			Containers: []corev1.Container{{
				Name: "app", Image: "example.invalid/app",
				Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: targetPort}},
			}},
		},
	}
}

// statsPod is scraped pod i: meshed, with a conduit-proxy container, on
// the loopback node.
func statsPod(i int) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: fmt.Sprintf("%s%d", statsNSPrefix, i%statsNamespaces), Name: fmt.Sprintf("%s-%d", statsServiceName, i),
			Labels: map[string]string{"app": statsServiceName, proxyVersionLabel: "bench"},
		},
		Spec: corev1.PodSpec{
			NodeName: loopbackNode,
			Containers: []corev1.Container{
				{Name: "app", Image: "example.invalid/app", Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: targetPort}}},
				{Name: proxyContainer, Image: "example.invalid/conduit-proxy", Ports: []corev1.ContainerPort{{Name: "admin", ContainerPort: proxyAdminPort}}},
			},
		},
	}
}

// createPods creates n pods with concurrent requests and returns how long
// it took.
func createPods(ctx context.Context, client kubernetes.Interface, n, concurrency int, pod func(int) *corev1.Pod, progress func(done int)) (time.Duration, error) {
	start := time.Now()
	var done atomic.Int64
	err := parallel(ctx, n, concurrency, func(i int) error {
		p := pod(i)
		if _, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating pod %s/%s: %w", p.Namespace, p.Name, err)
		}
		if d := done.Add(1); progress != nil && d%1000 == 0 {
			progress(int(d))
		}
		return nil
	})
	return time.Since(start), err
}

// waitRunning waits until the stats pods run with addresses and returns
// their addresses by pod (namespace/name).
func waitRunning(ctx context.Context, client kubernetes.Interface, n int, timeout time.Duration) (map[string]netip.Addr, error) {
	deadline := time.Now().Add(timeout)
	for {
		addrs := map[string]netip.Addr{}
		pods, err := client.CoreV1().Pods("").List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + loopbackNode, ResourceVersion: "0"})
		if err == nil {
			for _, p := range pods.Items {
				if a, err := netip.ParseAddr(p.Status.PodIP); err == nil && p.Status.Phase == corev1.PodRunning {
					addrs[p.Namespace+"/"+p.Name] = a
				}
			}
			if len(addrs) >= n {
				return addrs, nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return nil, fmt.Errorf("only %d of %d pods on %s run with an address after %s (last error %v)", len(addrs), n, loopbackNode, timeout, err)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// identityTokens creates n ServiceAccounts and a token for each with the
// audience the controller's identity service requires.
func identityTokens(ctx context.Context, client kubernetes.Interface, n int) ([]accountToken, error) {
	out := make([]accountToken, n)
	err := parallel(ctx, n, 8, func(i int) error {
		sa := fmt.Sprintf("proxy-%d", i)
		if _, err := client.CoreV1().ServiceAccounts(identityNS).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating ServiceAccount %s/%s: %w", identityNS, sa, err)
		}
		tr, err := client.CoreV1().ServiceAccounts(identityNS).CreateToken(ctx, sa, &authnv1.TokenRequest{
			Spec: authnv1.TokenRequestSpec{Audiences: []string{identity.Audience}, ExpirationSeconds: ptr.To[int64](3600)},
		}, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("requesting a token for %s/%s: %w", identityNS, sa, err)
		}
		out[i] = accountToken{id: "spiffe://cluster.local/ns/" + identityNS + "/sa/" + sa, token: []byte(tr.Status.Token)}
		return nil
	})
	return out, err
}

type accountToken struct {
	id    string
	token []byte
}

// parallel runs f(0..n-1) on up to width goroutines and returns the first
// error; after one, no further calls start.
func parallel(ctx context.Context, n, width int, f func(int) error) error {
	var (
		wg    sync.WaitGroup
		next  atomic.Int64
		once  sync.Once
		first error
	)
	for range min(width, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(i); err != nil {
					once.Do(func() { first = err })
					next.Store(int64(n))
					return
				}
			}
		})
	}
	wg.Wait()
	if first == nil && ctx.Err() != nil {
		return ctx.Err()
	}
	return first
}

// sliceWatch follows the scale services' EndpointSlices in the API and
// notes when their ready endpoints first add up to want: when
// kube-controller-manager has published every pod, whatever the
// controller made of it yet.
type sliceWatch struct {
	mu    sync.Mutex // guards ready and at
	ready map[string]int
	at    time.Time
}

func watchSlices(ctx context.Context, client kubernetes.Interface, want int) (*sliceWatch, error) {
	w := &sliceWatch{ready: map[string]int{}}
	factory := informers.NewSharedInformerFactoryWithOptions(client, 0,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = discoveryv1.LabelServiceName })) // only slices of services
	set := func(obj any, gone bool) {
		s, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok || !strings.HasPrefix(s.Namespace, scaleNSPrefix) {
			return
		}
		n := 0
		for _, e := range s.Endpoints {
			if !gone && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
				n++
			}
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		w.ready[s.Namespace+"/"+s.Name] = n
		total := 0
		for _, v := range w.ready {
			total += v
		}
		if total >= want && w.at.IsZero() {
			w.at = time.Now()
		}
	}
	inf := factory.Discovery().V1().EndpointSlices().Informer()
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { set(obj, false) },
		UpdateFunc: func(_, obj any) { set(obj, false) },
		DeleteFunc: func(obj any) { set(obj, true) },
	}); err != nil {
		return nil, err
	}
	factory.Start(ctx.Done()) // ends with ctx
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return nil, fmt.Errorf("EndpointSlice cache did not sync: %w", ctx.Err())
	}
	return w, nil
}

// complete is when every endpoint was ready in the API; zero if not yet.
func (w *sliceWatch) complete() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.at
}
