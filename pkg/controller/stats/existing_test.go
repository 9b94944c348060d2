package stats

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
)

// TestKubePodsExisting: deployments are known by the ReplicaSets they
// control, services by the service cache; other types are not known.
func TestKubePodsExisting(t *testing.T) {
	yes, no := true, false
	rsIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	svcIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, rs := range []*appsv1.ReplicaSet{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-1", OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "web", Controller: &yes}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-2", OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "web", Controller: &yes}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "idle-1", OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "idle", Controller: &yes}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "bare"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "adopted", OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "other", Controller: &no}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "mon-1", OwnerReferences: []metav1.OwnerReference{{Kind: "Deployment", Name: "mon", Controller: &yes}}}},
	} {
		if err := rsIdx.Add(rs); err != nil {
			t.Fatal(err)
		}
	}
	for _, s := range []*corev1.Service{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "ops", Name: "mon"}},
	} {
		if err := svcIdx.Add(s); err != nil {
			t.Fatal(err)
		}
	}
	nsIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	for _, n := range []string{"shop", "ops", "empty"} {
		if err := nsIdx.Add(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: n}}); err != nil {
			t.Fatal(err)
		}
	}
	k := KubePods{ReplicaSets: appslisters.NewReplicaSetLister(rsIdx), Services: corelisters.NewServiceLister(svcIdx), Namespaces: corelisters.NewNamespaceLister(nsIdx)}
	names := func(t, ns string) string {
		refs, ok, err := k.Existing(t, ns)
		if err != nil {
			return err.Error()
		}
		if !ok {
			return "unknown"
		}
		var out []string
		for _, r := range refs {
			out = append(out, r.Namespace+"/"+r.Name)
		}
		slices.Sort(out)
		return strings.Join(out, " ")
	}
	for _, tc := range []struct{ typ, ns, want string }{
		{TypeDeployment, "shop", "shop/idle shop/web"},
		{TypeDeployment, "", "ops/mon shop/idle shop/web"},
		{TypeService, "shop", "shop/web"},
		{TypeService, "", "ops/mon shop/web"},
		{TypePod, "shop", "unknown"},
		{TypeNamespace, "", "/empty /ops /shop"},
		{TypeNamespace, "shop", "/empty /ops /shop"}, // namespaces are not in one
	} {
		if got := names(tc.typ, tc.ns); got != tc.want {
			t.Errorf("Existing(%s, %q) = %s, want %s", tc.typ, tc.ns, got, tc.want)
		}
	}
	if _, ok, _ := (KubePods{}).Existing(TypeDeployment, "shop"); ok {
		t.Error("without a ReplicaSet cache the deployments are known")
	}
	if _, ok, _ := (KubePods{}).Existing(TypeNamespace, ""); ok {
		t.Error("without a namespace cache the namespaces are known")
	}
}

// newTestServer serves h and returns its host:port.
func newTestServer(t *testing.T, h http.Handler) string {
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return strings.TrimPrefix(s.URL, "http://")
}

type fakeResources struct {
	refs  []Ref
	err   error
	calls []string
}

func (f *fakeResources) Existing(t, ns string) ([]Ref, bool, error) {
	f.calls = append(f.calls, t+" "+ns)
	var out []Ref
	for _, r := range f.refs {
		if r.Type == t {
			out = append(out, r)
		}
	}
	if len(out) == 0 {
		return nil, false, nil
	}
	return out, true, f.err
}

// TestStatListsExistingResources: with the existing deployments known, stat
// lists each — one scaled to zero too, as 0/0 without traffic — and not a
// deployment deleted within the window, whose pod's traffic is still in the
// store. Queries with --from or --to, and a failing lister, keep the rows
// of the pods and traffic.
func TestStatListsExistingResources(t *testing.T) {
	web, old := &fakeProxy{}, &fakeProxy{}
	webSrv, oldSrv := newTestServer(t, web), newTestServer(t, old)
	pods := []Pod{
		{Namespace: "shop", Name: "web-0", AdminAddr: webSrv, Labels: map[string]string{"deployment": "web"}, Running: true},
		{Namespace: "shop", Name: "old-0", AdminAddr: oldSrv, Labels: map[string]string{"deployment": "old"}, Running: true},
	}
	res := &fakeResources{refs: []Ref{{Namespace: "shop", Type: TypeDeployment, Name: "web"}, {Namespace: "shop", Type: TypeDeployment, Name: "idle"},
		{Namespace: "ops", Type: TypeDeployment, Name: "mon"}, {Type: TypeNamespace, Name: "shop"}, {Type: TypeNamespace, Name: "ops"}}}
	now := time.Date(2026, 12, 7, 12, 0, 0, 0, time.UTC)
	srv := NewServer(Config{
		Pods:      PodsFunc(func(context.Context) ([]Pod, error) { return pods, nil }),
		Resources: res,
		Now:       func() time.Time { return now },
	})
	ctx := context.Background()
	web.set(webPage, 100, 0, 50, 100)
	old.set(webPage, 100, 0, 50, 100)
	srv.ScrapeOnce(ctx)
	now = now.Add(10 * time.Second)
	web.set(webPage, 150, 0, 80, 150)
	old.set(webPage, 120, 0, 60, 120)
	srv.ScrapeOnce(ctx)
	now = now.Add(10 * time.Second)
	pods = pods[:1] // deployment old is deleted, and its pod with it
	srv.ScrapeOnce(ctx)

	rows := func(req *statsv1.StatRequest) string {
		t.Helper()
		resp, err := srv.Stat(ctx, req)
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, r := range resp.Rows {
			out = append(out, fmt.Sprintf("%s/%s %d/%d %d", r.Resource.Namespace, r.Resource.Name, r.MeshedPods, r.RunningPods, r.SuccessCount))
		}
		return strings.Join(out, ", ")
	}
	deploys := &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "shop", Type: "deploy"}}
	if got, want := rows(deploys), "shop/idle 0/0 0, shop/web 1/1 50"; got != want {
		t.Errorf("stat deploy -n shop:\n got %s\nwant %s", got, want)
	}
	if got, want := rows(&statsv1.StatRequest{Selector: &statsv1.Resource{Type: "deploy"}, AllNamespaces: true}), "ops/mon 0/0 0, shop/idle 0/0 0, shop/web 1/1 50"; got != want {
		t.Errorf("stat deploy -A:\n got %s\nwant %s", got, want)
	}
	if got, want := rows(&statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "shop", Type: "deploy", Name: "idle"}}), "shop/idle 0/0 0"; got != want {
		t.Errorf("stat deploy/idle:\n got %s\nwant %s", got, want)
	}
	if diff := cmp.Diff([]string{"deployment shop", "deployment ", "deployment shop"}, res.calls); diff != "" {
		t.Errorf("lister calls (-want +got):\n%s", diff)
	}
	// A namespace without pods is listed; shop's row keeps the traffic of
	// the deleted deployment's pod (the namespace is still there).
	if got, want := rows(&statsv1.StatRequest{Selector: &statsv1.Resource{Type: "ns"}}), "/ops 0/0 0, /shop 1/1 70"; got != want {
		t.Errorf("stat ns:\n got %s\nwant %s", got, want)
	}
	res.calls = nil
	// Pods are not listed by Resources: the gone pod's row is gone as before.
	if got, want := rows(&statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "shop", Type: "pod"}}), "shop/web-0 1/1 50"; got != want {
		t.Errorf("stat pod:\n got %s\nwant %s", got, want)
	}
	res.calls = nil
	if got := rows(&statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "shop", Type: "deploy"}, To: &statsv1.Resource{Type: "deploy", Name: "books"}}); strings.Contains(got, "idle") {
		t.Errorf("stat --to listed a deployment without traffic to books: %s", got)
	}
	if len(res.calls) != 0 {
		t.Errorf("stat --to asked for the existing deployments: %v", res.calls)
	}
	res.err = errors.New("cache not synced")
	if got, want := rows(deploys), "shop/old 0/0 20, shop/web 1/1 50"; got != want {
		t.Errorf("stat deploy with the lister failing:\n got %s\nwant %s", got, want)
	}
}
