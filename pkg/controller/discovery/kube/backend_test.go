package kube

import (
	"context"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/utils/ptr"

	"github.com/conduitmesh/conduit/internal/testenv/fakekube"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// recorder passes snapshots, rendered by describe, to a channel.
type recorder struct {
	mu   sync.Mutex
	last string
	ch   chan string
}

func newRecorder() *recorder { return &recorder{ch: make(chan string, 100)} }

func (r *recorder) Update(s discovery.Snapshot) {
	d := describe(s)
	r.mu.Lock()
	r.last = d
	r.mu.Unlock()
	r.ch <- d
}

// waitFor waits until the latest snapshot is want.
func (r *recorder) waitFor(t *testing.T, want string) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		r.mu.Lock()
		last := r.last
		r.mu.Unlock()
		if last == want {
			return
		}
		select {
		case <-r.ch:
		case <-deadline:
			t.Fatalf("waiting for %q; last snapshot %q", want, last)
		}
	}
}

// describe renders a snapshot on one line: endpoints as addr/identity/labels.
func describe(s discovery.Snapshot) string {
	if !s.Exists {
		return "absent: " + s.Reason
	}
	if len(s.Endpoints) == 0 {
		return "empty: " + s.Reason
	}
	var eps []string
	for _, e := range s.Endpoints {
		var ls []string
		for k, v := range e.Labels {
			ls = append(ls, k+"="+v)
		}
		sort.Strings(ls)
		eps = append(eps, e.Addr.String()+"/"+e.Identity+"/"+strings.Join(ls, ","))
	}
	sort.Strings(eps)
	return strings.Join(eps, " ")
}

func service(ns, name string, mutate func(*corev1.Service)) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{
			ClusterIP: "10.96.0.10",
			Ports:     []corev1.ServicePort{{Name: "http", Port: 80}},
		},
	}
	if mutate != nil {
		mutate(s)
	}
	return s
}

func slice(ns, svc, name string, port int32, eps ...discoveryv1.Endpoint) *discoveryv1.EndpointSlice {
	return &discoveryv1.EndpointSlice{
		ObjectMeta:  metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{discoveryv1.LabelServiceName: svc}},
		AddressType: discoveryv1.AddressTypeIPv4,
		Ports:       []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(port)}},
		Endpoints:   eps,
	}
}

func endpoint(ip, pod string, isReady bool) discoveryv1.Endpoint {
	return discoveryv1.Endpoint{
		Addresses:  []string{ip},
		Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(isReady)},
		TargetRef:  &corev1.ObjectReference{Kind: "Pod", Name: pod},
	}
}

func pod(ns, name, ip, sa string, meshed bool) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-5d9f", Controller: ptr.To(true)}}},
		Spec:   corev1.PodSpec{ServiceAccountName: sa},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
	if meshed {
		p.Labels[ProxyVersionLabel] = "v1"
	}
	return p
}

var replicaSet = &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Namespace: "demo", Name: "web-5d9f",
	OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "web", Controller: ptr.To(true)}}}}

// start runs a backend over a fake clientset preloaded with objs.
func start(t *testing.T, objs ...runtime.Object) (*Backend, *fake.Clientset) {
	t.Helper()
	client := fake.NewClientset(objs...)
	// Deletes must reach the informers (fakekube: the fake has no history).
	watches := fakekube.Watch(client, "services", "endpointslices", "pods", "replicasets")
	b, err := New(Options{Client: client, TrustDomain: "example.org"})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	readyCh := make(chan struct{})
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx, func() { close(readyCh) }) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	select {
	case <-readyCh:
	case err := <-done:
		t.Fatalf("Run: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("caches did not sync")
	}
	watches.Wait(ctx, t, 10*time.Second)
	return b, client
}

const (
	webMeshed   = "10.0.0.1:8080/spiffe://example.org/ns/demo/sa/web/deployment=web,pod=web-1,replicaset=web-5d9f,serviceaccount=web"
	webUnmeshed = "10.0.0.2:8080//deployment=web,pod=web-2,replicaset=web-5d9f,serviceaccount=default"
)

func TestResolve(t *testing.T) {
	headless := service("demo", "db", func(s *corev1.Service) {
		s.Spec.ClusterIP = corev1.ClusterIPNone
		s.Spec.Ports = nil
	})
	dbSlice := slice("demo", "db", "db-abc", 0, func() discoveryv1.Endpoint {
		e := endpoint("10.0.1.1", "db-0", true)
		e.Hostname = ptr.To("db-0")
		return e
	}(), func() discoveryv1.Endpoint {
		e := endpoint("10.0.1.2", "db-1", true)
		e.Hostname = ptr.To("db-1")
		return e
	}())
	dbSlice.Ports = nil
	b, _ := start(t,
		service("demo", "web", nil),
		slice("demo", "web", "web-abc", 8080,
			endpoint("10.0.0.1", "web-1", true),
			endpoint("10.0.0.2", "web-2", true),
			endpoint("10.0.0.3", "web-3", false)),
		pod("demo", "web-1", "10.0.0.1", "web", true),
		pod("demo", "web-2", "10.0.0.2", "", false),
		replicaSet,
		service("demo", "ext", func(s *corev1.Service) {
			s.Spec.Type = corev1.ServiceTypeExternalName
			s.Spec.ExternalName = "api.example.com"
			s.Spec.ClusterIP = ""
		}),
		headless, dbSlice,
		service("demo", "api", func(s *corev1.Service) {
			s.Spec.ClusterIP = "10.96.0.11"
			s.Spec.Ports = []corev1.ServicePort{{Port: 8080, TargetPort: intstr.FromInt32(9000)}}
		}),
		func() *discoveryv1.EndpointSlice {
			es := slice("demo", "api", "api-abc", 9000, discoveryv1.Endpoint{Addresses: []string{"10.0.2.1"}})
			es.Ports[0].Name = ptr.To("")
			return es
		}(),
	)
	both := webMeshed + " " + webUnmeshed
	tests := []struct {
		authority, ctxToken, want string
	}{
		{"web.demo.svc.cluster.local:80", "", both},
		{"web.demo.svc:80", "", both},
		{"web.demo:80", "", both},
		{"web:80", `{"ns":"demo"}`, both},
		{"10.96.0.10:80", "", both},
		{"10.0.0.1:8080", "", "10.0.0.1:8080/spiffe://example.org/ns/demo/sa/web/deployment=web,pod=web-1,replicaset=web-5d9f,serviceaccount=web"},
		{"web.demo:81", "", "empty: service demo/web has no port 81"},
		{"nope.demo:80", "", "absent: service demo/nope not found"},
		{"web:80", "", "absent: web is not a service in this cluster"},
		{"ext.demo:443", "", "absent: service demo/ext is of type ExternalName (api.example.com): resolve it with DNS"},
		{"example.com:443", "", "absent: service com/example not found"}, // looks like svc.ns
		{"api.example.com:443", "", "absent: api.example.com is not a service in this cluster"},
		{"db.demo:5432", "", "10.0.1.1:5432// 10.0.1.2:5432//"},
		{"db-1.db.demo.svc.cluster.local:5432", "", "10.0.1.2:5432//"},
		{"10.9.9.9:80", "", "absent: no service or running pod has IP 10.9.9.9"},
		{"api.demo:8080", "", "10.0.2.1:9000//"}, // unnamed port; a nil ready condition means ready
		{"10.96.0.11:8080", "", "10.0.2.1:9000//"},
	}
	for _, tt := range tests {
		r := newRecorder()
		cancel, err := b.Subscribe(tt.authority, tt.ctxToken, r)
		if err != nil {
			t.Errorf("%s: %v", tt.authority, err)
			continue
		}
		if r.last != tt.want {
			t.Errorf("%s (%s):\n got %s\nwant %s", tt.authority, tt.ctxToken, r.last, tt.want)
		}
		cancel()
	}
}

func TestFollowsChanges(t *testing.T) {
	ctx := context.Background()
	b, client := start(t, service("demo", "web", func(s *corev1.Service) {
		s.Spec.Ports[0].TargetPort.StrVal = "http"
	}), pod("demo", "web-1", "10.0.0.1", "web", true), replicaSet)

	r := newRecorder()
	cancel, err := b.Subscribe("web.demo.svc.cluster.local:80", "", r)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	r.waitFor(t, "empty: service demo/web has no ready endpoints for port 80")

	es := slice("demo", "web", "web-abc", 8080, endpoint("10.0.0.1", "web-1", true))
	if _, err := client.DiscoveryV1().EndpointSlices("demo").Create(ctx, es, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, webMeshed)

	// The pod loses its proxy: the endpoint loses its identity.
	p := pod("demo", "web-1", "10.0.0.1", "web", false)
	p.ResourceVersion = "2" // the fake clientset does not bump it
	if _, err := client.CoreV1().Pods("demo").Update(ctx, p, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "10.0.0.1:8080//deployment=web,pod=web-1,replicaset=web-5d9f,serviceaccount=web")

	// Not ready: withdrawn.
	es.Endpoints[0].Conditions.Ready = ptr.To(false)
	es.ResourceVersion = "2"
	if _, err := client.DiscoveryV1().EndpointSlices("demo").Update(ctx, es, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "empty: service demo/web has no ready endpoints for port 80")

	if err := client.CoreV1().Services("demo").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "absent: service demo/web not found")
}

// TestClusterIPFollowsSlices watches a service by its cluster IP: only
// EndpointSlice events can tell it about endpoints (there are no pods).
func TestClusterIPFollowsSlices(t *testing.T) {
	b, client := start(t, service("demo", "web", nil))
	r := newRecorder()
	cancel, err := b.Subscribe("10.96.0.10:80", "", r)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	r.waitFor(t, "empty: service demo/web has no ready endpoints for port 80")
	e := endpoint("10.0.0.9", "", true)
	e.TargetRef = nil
	if _, err := client.DiscoveryV1().EndpointSlices("demo").Create(context.Background(), slice("demo", "web", "web-abc", 8080, e), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	r.waitFor(t, "10.0.0.9:8080//")
}

func TestRejectsBadAuthority(t *testing.T) {
	b, _ := start(t)
	if _, err := b.Subscribe("web.demo:http", "", newRecorder()); err == nil {
		t.Error("no error for a named port")
	}
}
