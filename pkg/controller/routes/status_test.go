package routes

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/leaderelection"

	"github.com/conduitmesh/conduit/internal/testenv"
	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// parentStatus is one status.parents[] entry, summarised.
type parentStatus struct {
	parentRef      map[string]any
	controllerName string
	conditions     map[string]metav1.Condition
}

func (p parentStatus) String() string {
	a, r := p.conditions[ConditionAccepted], p.conditions[ConditionResolvedRefs]
	return fmt.Sprintf("%v %s Accepted=%s/%s ResolvedRefs=%s/%s", p.parentRef["name"], p.controllerName, a.Status, a.Reason, r.Status, r.Reason)
}

func (f *fixture) routeStatus(t *testing.T, gvr schema.GroupVersionResource, ns, name string) []parentStatus {
	t.Helper()
	u, err := f.dyn.Resource(gvr).Namespace(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	list, _, _ := unstructured.NestedSlice(u.Object, "status", "parents")
	var out []parentStatus
	for _, e := range list {
		m := e.(map[string]any)
		p := parentStatus{conditions: map[string]metav1.Condition{}}
		p.parentRef, _ = m["parentRef"].(map[string]any)
		p.controllerName, _ = m["controllerName"].(string)
		conds, _ := m["conditions"].([]any)
		for _, c := range conds {
			var cond metav1.Condition
			if err := runtime.DefaultUnstructuredConverter.FromUnstructured(c.(map[string]any), &cond); err != nil {
				t.Fatal(err)
			}
			p.conditions[cond.Type] = cond
		}
		out = append(out, p)
	}
	return out
}

// waitStatus waits until the route's status, summarised, is want.
func (f *fixture) waitStatus(t *testing.T, gvr schema.GroupVersionResource, ns, name string, want ...string) []parentStatus {
	t.Helper()
	var got []parentStatus
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		got = f.routeStatus(t, gvr, ns, name)
		var lines []string
		for _, p := range got {
			lines = append(lines, p.String())
		}
		if strings.Join(lines, "\n") != strings.Join(want, "\n") {
			return fmt.Errorf("status of %s/%s:\n%s\nwant:\n%s", ns, name, strings.Join(lines, "\n"), strings.Join(want, "\n"))
		}
		return nil
	})
	return got
}

// statusWrites counts the writes of a route's status.
func (f *fixture) statusWrites(name string) int {
	n := 0
	for _, a := range f.dyn.Actions() {
		if u, ok := a.(k8stesting.UpdateAction); ok && a.GetSubresource() == "status" {
			if o, ok := u.GetObject().(*unstructured.Unstructured); ok && o.GetName() == name {
				n++
			}
		}
	}
	return n
}

const ours = contract.RouteControllerName

func TestStatusConditions(t *testing.T) {
	f := start(t, authorsSvc, authorsV1, splitRoute(90, 10), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: no-parent, namespace: books, generation: 3}
spec:
  parentRefs:
  - {group: "", kind: Service, name: missing}
  - {group: "", kind: Service, name: authors, port: 8080}
  - {group: "", kind: Service, name: authors, sectionName: admin}
  rules: [{}]`, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-kind, namespace: books}
spec:
  parentRefs: [{group: "", kind: Service, name: authors}]
  rules: [{backendRefs: [{group: example.com, kind: Bucket, name: b}]}]`, `
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: unsupported, namespace: books}
spec:
  parentRefs: [{group: "", kind: Service, name: authors}]
  rules: [{filters: [{type: RequestMirror, requestMirror: {backendRef: {name: authors-v1, port: 7001}}}]}]`, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: annotated
  namespace: books
  annotations: {retry.conduit.io/http: "5xx", retry.conduit.io/limit: "lots"}
spec:
  parentRefs: [{group: "", kind: Service, name: authors}]
  rules: [{}]`)

	got := f.waitStatus(t, policy.HTTPRoutesResource, "books", "authors-split",
		"authors conduit.io/controller Accepted=True/Accepted ResolvedRefs=False/BackendNotFound")
	if msg := got[0].conditions[ConditionResolvedRefs].Message; msg != "backendRef Service books/authors-v2 not found" {
		t.Errorf("ResolvedRefs message %q", msg)
	}
	got = f.waitStatus(t, policy.HTTPRoutesResource, "books", "no-parent",
		"missing conduit.io/controller Accepted=False/NoMatchingParent ResolvedRefs=True/ResolvedRefs",
		"authors conduit.io/controller Accepted=False/NoMatchingParent ResolvedRefs=True/ResolvedRefs",
		"authors conduit.io/controller Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs")
	for i, want := range []string{"Service books/missing not found", "Service books/authors has no port 8080", "Route accepted"} {
		if c := got[i].conditions[ConditionAccepted]; c.Message != want || c.ObservedGeneration != 3 {
			t.Errorf("parent %d: Accepted message %q, observedGeneration %d; want %q, 3", i, c.Message, c.ObservedGeneration, want)
		}
	}
	if got[2].parentRef["sectionName"] != "admin" {
		t.Errorf("parentRef written %v, want the spec's", got[2].parentRef)
	}
	f.waitStatus(t, policy.HTTPRoutesResource, "books", "bad-kind",
		"authors conduit.io/controller Accepted=True/Accepted ResolvedRefs=False/InvalidKind")
	got = f.waitStatus(t, policy.GRPCRoutesResource, "books", "unsupported",
		"authors conduit.io/controller Accepted=False/UnsupportedValue ResolvedRefs=True/ResolvedRefs")
	if msg := got[0].conditions[ConditionAccepted].Message; !strings.Contains(msg, `filter type "RequestMirror" is not supported`) {
		t.Errorf("Accepted message %q", msg)
	}
	got = f.waitStatus(t, policy.HTTPRoutesResource, "books", "annotated",
		"authors conduit.io/controller Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs")
	if msg := got[0].conditions[ConditionAccepted].Message; msg != `Route accepted; annotations ignored: retry.conduit.io/limit="lots": want a number of retries such as 3` {
		t.Errorf("Accepted message %q", msg)
	}

	// The missing backend arrives: ResolvedRefs turns True, with a new
	// transition time; Accepted keeps its own.
	before := f.routeStatus(t, policy.HTTPRoutesResource, "books", "authors-split")[0]
	f.now.Add(60)
	f.apply(t, authorsV2)
	after := f.waitStatus(t, policy.HTTPRoutesResource, "books", "authors-split",
		"authors conduit.io/controller Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs")[0]
	if a, b := after.conditions[ConditionAccepted].LastTransitionTime, before.conditions[ConditionAccepted].LastTransitionTime; !a.Equal(&b) {
		t.Errorf("Accepted's lastTransitionTime changed from %v to %v", b, a)
	}
	if a, b := after.conditions[ConditionResolvedRefs].LastTransitionTime, before.conditions[ConditionResolvedRefs].LastTransitionTime; a.Sub(b.Time) != time.Minute {
		t.Errorf("ResolvedRefs' lastTransitionTime went from %v to %v, want a minute later", b, a)
	}

	// The parent goes: NoMatchingParent.
	f.deleteService(t, "books", "authors")
	f.waitStatus(t, policy.HTTPRoutesResource, "books", "authors-split",
		"authors conduit.io/controller Accepted=False/NoMatchingParent ResolvedRefs=True/ResolvedRefs")
}

// Other controllers' entries are kept; entries of parentRefs that went
// are removed; nothing is written when nothing changed.
func TestStatusKeepsOthersAndWritesOnlyChanges(t *testing.T) {
	route := func(generation int, parents string) string {
		return fmt.Sprintf(`
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shared, namespace: books, generation: %d}
spec:
  parentRefs: %s
  rules: [{backendRefs: [{name: authors-v1, port: 7001}]}]
status:
  parents:
  - parentRef: {name: gw, namespace: infra}
    controllerName: example.com/gateway
    conditions: [{type: Accepted, status: "True", reason: Accepted, message: mine, lastTransitionTime: "2026-01-01T00:00:00Z"}]`, generation, parents)
	}
	both := `[{name: gw, namespace: infra}, {group: "", kind: Service, name: authors}]`
	f := start(t, authorsSvc, authorsV1, route(1, both))
	got := f.waitStatus(t, policy.HTTPRoutesResource, "books", "shared",
		"gw example.com/gateway Accepted=True/Accepted ResolvedRefs=/",
		"authors conduit.io/controller Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs")
	if got[0].conditions[ConditionAccepted].Message != "mine" {
		t.Errorf("the gateway's entry changed: %+v", got[0])
	}
	writes := f.statusWrites("shared")
	if writes != 1 {
		t.Errorf("%d status writes, want 1", writes)
	}
	firstLTT := got[1].conditions[ConditionAccepted].LastTransitionTime

	// A change that changes no condition (a Service's unrelated update, a
	// route label) writes nothing.
	f.apply(t, authorsSvc)
	f.apply(t, authorsV1)
	time.Sleep(200 * time.Millisecond)
	if n := f.statusWrites("shared"); n != writes {
		t.Errorf("%d status writes after changes that change nothing, want %d", n, writes)
	}

	// A new generation: observedGeneration follows, transition times stay.
	f.now.Add(3600)
	f.apply(t, route(2, both))
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		got = f.routeStatus(t, policy.HTTPRoutesResource, "books", "shared")
		if len(got) != 2 || got[1].conditions[ConditionAccepted].ObservedGeneration != 2 {
			return fmt.Errorf("status %v", got)
		}
		return nil
	})
	if ltt := got[1].conditions[ConditionAccepted].LastTransitionTime; !ltt.Equal(&firstLTT) {
		t.Errorf("lastTransitionTime %v, want %v kept", ltt, firstLTT)
	}

	// The Service parent is removed from the spec: only the gateway's entry stays.
	f.apply(t, route(3, `[{name: gw, namespace: infra}]`))
	f.waitStatus(t, policy.HTTPRoutesResource, "books", "shared",
		"gw example.com/gateway Accepted=True/Accepted ResolvedRefs=/")
}

// authorsRoute is an HTTPRoute of namespace books, named name, whose
// parent is the Service authors and backend authors-v1.
func authorsRoute(name string) string {
	return `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ` + name + `, namespace: books}
spec:
  parentRefs: [{group: "", kind: Service, name: authors}]
  rules: [{backendRefs: [{name: authors-v1, port: 7001}]}]`
}

// TestStatusOnlyTheLeaseHolderWrites: with a Lease, a replica writes no
// status while another holds it, and writes once the Lease is its own (the
// holder went away: here its Lease is deleted).
func TestStatusOnlyTheLeaseHolderWrites(t *testing.T) {
	lease := &Lease{Namespace: "conduit", Name: contract.RouteStatusLease, Identity: "replica-b",
		LeaseDuration: 2 * time.Second, RenewDeadline: time.Second, RetryPeriod: 100 * time.Millisecond}
	// Another replica holds the Lease, renewed just now, for an hour.
	holder, hour := "replica-a", int32(3600)
	now := metav1.NewMicroTime(time.Now())
	held := &coordinationv1.Lease{
		ObjectMeta: metav1.ObjectMeta{Namespace: "conduit", Name: contract.RouteStatusLease},
		Spec:       coordinationv1.LeaseSpec{HolderIdentity: &holder, LeaseDurationSeconds: &hour, AcquireTime: &now, RenewTime: &now},
	}
	f := startWith(t, lease, []runtime.Object{held}, authorsSvc, authorsV1)
	f.apply(t, authorsRoute("elected"))
	time.Sleep(500 * time.Millisecond) // five of the replica's retries
	if n := f.statusWrites("elected"); n != 0 {
		t.Fatalf("%d status writes while another replica holds the Lease, want none", n)
	}
	if err := f.kube.CoordinationV1().Leases("conduit").Delete(context.Background(), contract.RouteStatusLease, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	f.waitStatus(t, policy.HTTPRoutesResource, "books", "elected",
		"authors conduit.io/controller Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs")
	l, err := f.kube.CoordinationV1().Leases("conduit").Get(context.Background(), contract.RouteStatusLease, metav1.GetOptions{})
	if err != nil || l.Spec.HolderIdentity == nil || *l.Spec.HolderIdentity != "replica-b" {
		t.Errorf("Lease %+v %v, want held by replica-b", l, err)
	}
}

// TestStatusForgetsDeletedRoutes: the routes queued again at each
// leadership term are those that exist, not every route ever seen.
func TestStatusForgetsDeletedRoutes(t *testing.T) {
	f := start(t, authorsSvc, authorsV1, authorsRoute("gone"))
	f.waitStatus(t, policy.HTTPRoutesResource, "books", "gone",
		"authors conduit.io/controller Accepted=True/Accepted ResolvedRefs=True/ResolvedRefs")
	k := routeKey{gvr: policy.HTTPRoutesResource, namespace: "books", name: "gone"}
	known := func() bool {
		f.status.mu.Lock()
		defer f.status.mu.Unlock()
		_, ok := f.status.known[k]
		return ok
	}
	if !known() {
		t.Fatal("the route is not among those queued at each term")
	}
	f.deleteRoute(t, policy.HTTPRoutesResource, "books", "gone")
	testenv.Eventually(t, 5*time.Second, 10*time.Millisecond, func() error {
		if known() {
			return fmt.Errorf("the deleted route is still queued at each term")
		}
		return nil
	})
}

// TestLeaseCheckAgreesWithClientGo: Lease.check refuses, at start-up, the
// timings client-go's elector would refuse when the writer runs — and only
// those.
func TestLeaseCheckAgreesWithClientGo(t *testing.T) {
	s := time.Second
	for _, tc := range []struct{ duration, renew, retry time.Duration }{
		{0, 0, 0}, // the defaults
		{2 * s, s, 100 * time.Millisecond},
		{s, s, 100 * time.Millisecond},      // duration = renew deadline
		{s, 2 * s, 100 * time.Millisecond},  // duration < renew deadline
		{3 * s, 2 * s, 2 * s},               // renew deadline < 1.2 × retry
		{3 * s, 1200 * time.Millisecond, s}, // renew deadline = 1.2 × retry
		{3 * s, 1201 * time.Millisecond, s}, // just above
		{3 * s, 2 * s, -time.Millisecond},   // negative retry
		{-3 * s, -2 * s, time.Millisecond},  // negative
	} {
		l := &Lease{Client: fake.NewClientset(), Namespace: "conduit", Name: contract.RouteStatusLease, Identity: "r",
			LeaseDuration: tc.duration, RenewDeadline: tc.renew, RetryPeriod: tc.retry}
		ours := l.check()
		w := &StatusWriter{opts: StatusOptions{Options: Options{Log: slog.New(slog.DiscardHandler)}, Lease: l}}
		cfg, _ := w.election()
		_, theirs := leaderelection.NewLeaderElector(cfg)
		if (ours == nil) != (theirs == nil) {
			t.Errorf("%v/%v/%v: check says %v, client-go %v", tc.duration, tc.renew, tc.retry, ours, theirs)
		}
	}
}
