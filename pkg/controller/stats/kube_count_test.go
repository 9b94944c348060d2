package stats

import (
	"context"
	"maps"
	"net"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/conduitmesh/conduit/internal/testenv/fakekube"
	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/inject"
)

// podSpec describes one test pod of a deployment's ReplicaSet.
type podSpec struct {
	name, deploy string
	phase        corev1.PodPhase
	injected     bool
	terminating  bool
	// proxy is the conduit-proxy container's state; nil means no status
	// yet. asInit puts it among the init containers (native sidecar).
	proxy  *corev1.ContainerState
	asInit bool
}

func (s podSpec) pod() *corev1.Pod {
	yes := true
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: s.name,
			Labels: map[string]string{"app": s.deploy, "pod-template-hash": "5d8f"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet",
				Name: s.deploy + "-5d8f", Controller: &yes}}},
		// The pod has an IP as soon as its sandbox runs, before any
		// container (and before conduit-init) has run.
		Status: corev1.PodStatus{Phase: s.phase, PodIP: "127.0.0.1"},
	}
	if s.injected {
		p.Labels[inject.LabelProxyVersion] = "v0.1.0"
	}
	if s.terminating {
		now := metav1.Now()
		p.DeletionTimestamp = &now
	}
	if s.proxy != nil {
		st := corev1.ContainerStatus{Name: inject.ProxyContainerName, State: *s.proxy}
		if s.asInit {
			p.Status.InitContainerStatuses = append(p.Status.InitContainerStatuses, st)
		} else {
			p.Status.ContainerStatuses = append(p.Status.ContainerStatuses, st)
		}
	}
	return p
}

var (
	stateRunning = &corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	stateWaiting = &corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}}
)

// statRows returns meshed/running per row name of `conduit stat <typ>`.
func statRows(t *testing.T, srv *Server, typ string) map[string][2]uint32 {
	t.Helper()
	resp, err := srv.Stat(context.Background(), &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "shop", Type: typ}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string][2]uint32{}
	for _, r := range resp.Rows {
		got[r.Resource.Name] = [2]uint32{r.MeshedPods, r.RunningPods}
	}
	return got
}

// `conduit stat` counts only pods that exist, run, and (for MESHED) run a
// proxy: on a real node it counted two deleted pods whose conduit-init had
// failed as running and meshed, so `stat deploy` said 2/2 for a 1-replica
// deployment after a rollout.
func TestStatCountsOnlyExistingPodsRunningAProxy(t *testing.T) {
	proxy := &fakeProxy{}
	proxy.set(webPage, 10, 0, 5, 10)
	ps := httptest.NewServer(proxy)
	defer ps.Close()
	_, port, _ := net.SplitHostPort(ps.Listener.Addr().String())
	adminPort, _ := strconv.Atoi(port)

	specs := []podSpec{
		// web: one pod runs its proxy as a native sidecar; the new
		// ReplicaSet's pod failed in conduit-init (its proxy never ran);
		// an old pod is terminating.
		{name: "web-ok", deploy: "web", phase: corev1.PodRunning, injected: true, proxy: stateRunning, asInit: true},
		{name: "web-initfailed", deploy: "web", phase: corev1.PodPending, injected: true, proxy: stateWaiting, asInit: true},
		{name: "web-old", deploy: "web", phase: corev1.PodRunning, injected: true, terminating: true, proxy: stateRunning, asInit: true},
		// books: proxy as a regular container; the second pod runs but its
		// proxy crash-loops, and it has no status at all yet in a third.
		{name: "books-ok", deploy: "books", phase: corev1.PodRunning, injected: true, proxy: stateRunning},
		{name: "books-crashing", deploy: "books", phase: corev1.PodRunning, injected: true, proxy: stateWaiting},
		{name: "books-new", deploy: "books", phase: corev1.PodRunning, injected: true},
		// plain: not injected.
		{name: "plain-0", deploy: "plain", phase: corev1.PodRunning},
	}
	var objs []*corev1.Pod
	for _, s := range specs {
		objs = append(objs, s.pod())
	}
	client := fake.NewClientset()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	for _, p := range objs {
		if _, err := client.CoreV1().Pods(p.Namespace).Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	watches := fakekube.Watch(client, "pods") // the deletes below must reach the informer
	factory := informers.NewSharedInformerFactory(client, 0)
	lister := factory.Core().V1().Pods().Lister()
	factory.Start(ctx.Done())
	defer func() { cancel(); factory.Shutdown() }()
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			t.Fatalf("informer %v did not sync", typ)
		}
	}
	watches.Wait(ctx, t, 10*time.Second)

	now := time.Date(2026, 12, 4, 3, 0, 0, 0, time.UTC)
	srv := NewServer(Config{
		Pods: PodsFunc(KubePods{Pods: lister, AdminPort: adminPort}.List),
		Now:  func() time.Time { return now },
	})
	srv.ScrapeOnce(ctx)
	now = now.Add(10 * time.Second)
	proxy.set(webPage, 20, 0, 10, 20)
	srv.ScrapeOnce(ctx)

	want := map[string][2]uint32{"web": {1, 1}, "books": {1, 3}, "plain": {0, 1}}
	if got := statRows(t, srv, "deploy"); !maps.Equal(got, want) {
		t.Errorf("stat deploy before the deletes: got %v, want %v (meshed, running)", got, want)
	}

	// The rollout deletes the pod whose init failed and the old one.
	for _, name := range []string{"web-initfailed", "web-old"} {
		if err := client.CoreV1().Pods("shop").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err1 := lister.Pods("shop").Get("web-initfailed")
		_, err2 := lister.Pods("shop").Get("web-old")
		if apierrors.IsNotFound(err1) && apierrors.IsNotFound(err2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the informer still lists deleted pods after 10s: %v %v", err1, err2)
		}
		time.Sleep(10 * time.Millisecond)
	}
	now = now.Add(10 * time.Second)
	proxy.set(webPage, 30, 0, 15, 30)
	srv.ScrapeOnce(ctx)

	if got := statRows(t, srv, "deploy"); !maps.Equal(got, want) {
		t.Errorf("stat deploy after the deletes: got %v, want %v (meshed, running)", got, want)
	}
	pods := statRows(t, srv, "po")
	wantPods := map[string][2]uint32{
		"web-ok": {1, 1}, "books-ok": {1, 1}, "books-crashing": {0, 1}, "books-new": {0, 1}, "plain-0": {0, 1},
	}
	if !maps.Equal(pods, wantPods) {
		t.Errorf("stat po after the deletes: got %v, want %v (meshed, running)", pods, wantPods)
	}
	// The deleted web-old's proxy served traffic inside the window: web's
	// row keeps it, only the pod's own row is gone.
	resp, err := srv.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "shop", Type: "deploy", Name: "web"}})
	if err != nil || len(resp.Rows) != 1 {
		t.Fatalf("stat deploy/web: %v %v", resp, err)
	}
	if got := resp.Rows[0].SuccessCount; got != 30 {
		t.Errorf("stat deploy/web counted %v successes, want 30 (20 from web-ok, 10 from the deleted web-old)", got)
	}
}
