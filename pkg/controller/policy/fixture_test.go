package policy

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/encoding/prototext"
	"google.golang.org/protobuf/testing/protocmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/internal/testenv"
	"github.com/conduitmesh/conduit/internal/testenv/fakekube"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// fixture is an Index on fake clientsets.
type fixture struct {
	kube   *fake.Clientset
	dyn    *dynamicfake.FakeDynamicClient
	served *fakeDiscovery
	index  *Index
	// servers notes the informer's watch of Servers, which a test deletes
	// (fakekube).
	servers *fakekube.Watches
}

// fakeDiscovery serves a list of resources that a test may change while
// the index reads it.
type fakeDiscovery struct {
	mu    sync.Mutex
	lists []*metav1.APIResourceList
}

func (d *fakeDiscovery) set(gvrs ...schema.GroupVersionResource) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.lists = served(gvrs...)
}

func (d *fakeDiscovery) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, l := range d.lists {
		if l.GroupVersion == gv {
			return l, nil
		}
	}
	return nil, apierrors.NewNotFound(schema.GroupResource{Group: gv}, "")
}

// testCluster is the cluster of most tests: deny by default, so that an
// authorization in a result comes from the objects.
func testCluster() Cluster {
	nets, _ := ParseNetworks(DefaultClusterNetworks)
	return Cluster{TrustDomain: "cluster.local", DefaultPolicy: Deny, ClusterNetworks: nets}
}

// served lists the resources a fake API server serves.
func served(gvrs ...schema.GroupVersionResource) []*metav1.APIResourceList {
	byGV := map[string]*metav1.APIResourceList{}
	var out []*metav1.APIResourceList
	for _, gvr := range gvrs {
		gv := gvr.GroupVersion().String()
		if byGV[gv] == nil {
			byGV[gv] = &metav1.APIResourceList{GroupVersion: gv}
			out = append(out, byGV[gv])
		}
		byGV[gv].APIResources = append(byGV[gv].APIResources, metav1.APIResource{Name: gvr.Resource, Namespaced: true})
	}
	return out
}

var allResources = []schema.GroupVersionResource{
	ServersResource, AuthorizationPoliciesResource, MeshTLSAuthenticationsResource,
	NetworkAuthenticationsResource, HTTPRoutesResource, GRPCRoutesResource,
}

// startIndex runs an Index on fake clientsets holding the YAML documents
// (Pods and Namespaces in the typed client, everything else in the dynamic
// one) and waits until it has synced. resources are the served ones (all
// when nil).
func startIndex(t *testing.T, c Cluster, resources []schema.GroupVersionResource, docs ...string) *fixture {
	t.Helper()
	var typed, dynamic []runtime.Object
	for _, doc := range splitDocs(docs) {
		u := parseYAML(t, doc)
		switch u.GetKind() {
		case "Pod":
			typed = append(typed, toTyped[corev1.Pod](t, u))
		case "Namespace":
			typed = append(typed, toTyped[corev1.Namespace](t, u))
		default:
			dynamic = append(dynamic, u)
		}
	}
	if resources == nil {
		resources = allResources
	}
	f := &fixture{kube: fake.NewClientset(typed...), served: &fakeDiscovery{}}
	f.served.set(resources...)
	listKinds := map[schema.GroupVersionResource]string{
		ServersResource:                "ServerList",
		AuthorizationPoliciesResource:  "AuthorizationPolicyList",
		MeshTLSAuthenticationsResource: "MeshTLSAuthenticationList",
		NetworkAuthenticationsResource: "NetworkAuthenticationList",
		HTTPRoutesResource:             "HTTPRouteList",
		GRPCRoutesResource:             "GRPCRouteList",
	}
	f.dyn = dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, dynamic...)
	f.servers = fakekube.Watch(f.dyn, ServersResource.Resource)
	var err error
	f.index, err = NewIndex(Options{Client: f.kube, Dynamic: f.dyn, Discovery: f.served, Cluster: c, Rediscover: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.index.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := f.index.WaitSynced(wctx); err != nil {
		t.Fatalf("index did not sync: %v", err)
	}
	return f
}

func splitDocs(docs []string) []string {
	var out []string
	for _, d := range docs {
		for _, part := range strings.Split(d, "\n---\n") {
			if strings.TrimSpace(part) != "" {
				out = append(out, part)
			}
		}
	}
	return out
}

func parseYAML(t *testing.T, doc string) *unstructured.Unstructured {
	t.Helper()
	m := map[string]any{}
	if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
		t.Fatalf("test YAML: %v\n%s", err, doc)
	}
	return &unstructured.Unstructured{Object: m}
}

func toTyped[T any](t *testing.T, u *unstructured.Unstructured) *T {
	t.Helper()
	b, err := json.Marshal(u.Object)
	if err != nil {
		t.Fatal(err)
	}
	out := new(T)
	if err := json.Unmarshal(b, out); err != nil {
		t.Fatal(err)
	}
	return out
}

// apply creates or replaces the YAML documents' objects in the fake
// clientsets, as kubectl apply would.
func (f *fixture) apply(t *testing.T, docs ...string) {
	t.Helper()
	ctx := context.Background()
	for _, doc := range splitDocs(docs) {
		u := parseYAML(t, doc)
		ns := u.GetNamespace()
		var err error
		switch u.GetKind() {
		case "Pod":
			p := toTyped[corev1.Pod](t, u)
			if _, err = f.kube.CoreV1().Pods(ns).Update(ctx, p, metav1.UpdateOptions{}); err != nil {
				_, err = f.kube.CoreV1().Pods(ns).Create(ctx, p, metav1.CreateOptions{})
			}
		case "Namespace":
			n := toTyped[corev1.Namespace](t, u)
			if _, err = f.kube.CoreV1().Namespaces().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
				_, err = f.kube.CoreV1().Namespaces().Create(ctx, n, metav1.CreateOptions{})
			}
		default:
			gvr := gvrOf(t, u)
			ri := f.dyn.Resource(gvr).Namespace(ns)
			if _, err = ri.Update(ctx, u, metav1.UpdateOptions{}); err != nil {
				_, err = ri.Create(ctx, u, metav1.CreateOptions{})
			}
		}
		if err != nil {
			t.Fatalf("applying %s %s/%s: %v", u.GetKind(), ns, u.GetName(), err)
		}
	}
}

func gvrOf(t *testing.T, u *unstructured.Unstructured) schema.GroupVersionResource {
	t.Helper()
	for _, gvr := range allResources {
		if strings.EqualFold(gvr.Resource, strings.ToLower(u.GetKind())+"s") || (u.GetKind() == "AuthorizationPolicy" && gvr == AuthorizationPoliciesResource) {
			return gvr
		}
	}
	t.Fatalf("no resource for kind %s", u.GetKind())
	return schema.GroupVersionResource{}
}

// inboundEventually waits until the index's policy for the port equals
// want (prototext).
func (f *fixture) inboundEventually(t *testing.T, ns, pod string, port uint32, want string) {
	t.Helper()
	w := parseServer(t, want)
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		got, err := f.index.Inbound(ns, pod, port)
		if err != nil {
			return err
		}
		if diff := cmp.Diff(w, got, protocmp.Transform()); diff != "" {
			return fmt.Errorf("policy of %s/%s:%d (-want +got):\n%s", ns, pod, port, diff)
		}
		return nil
	})
}

func parseServer(t *testing.T, text string) *policyv1.InboundServer {
	t.Helper()
	out := &policyv1.InboundServer{}
	if err := prototext.Unmarshal([]byte(text), out); err != nil {
		t.Fatalf("test prototext: %v\n%s", err, text)
	}
	return out
}

// checkInbound compares the index's policy for the port with want (prototext).
func (f *fixture) checkInbound(t *testing.T, ns, pod string, port uint32, want string) {
	t.Helper()
	got, err := f.index.Inbound(ns, pod, port)
	if err != nil {
		t.Fatalf("Inbound(%s, %s, %d): %v", ns, pod, port, err)
	}
	if diff := cmp.Diff(parseServer(t, want), got, protocmp.Transform()); diff != "" {
		t.Errorf("policy of %s/%s:%d (-want +got):\n%s", ns, pod, port, diff)
	}
}

// seen waits until the index's cache has the object.
func (f *fixture) seen(t *testing.T, gvr schema.GroupVersionResource, ns, name string) {
	t.Helper()
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		f.index.mu.RLock()
		l := f.index.listers[gvr]
		f.index.mu.RUnlock()
		if l == nil {
			return fmt.Errorf("%s not watched", gvr.Resource)
		}
		_, err := l.ByNamespace(ns).Get(name)
		return err
	})
}
