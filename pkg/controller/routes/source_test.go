package routes

import (
	"context"
	"strconv"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

const (
	authorsSvc = `
apiVersion: v1
kind: Service
metadata: {name: authors, namespace: books}
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 7001}, {name: admin, port: 9000}]}`
	authorsV1 = `
apiVersion: v1
kind: Service
metadata: {name: authors-v1, namespace: books}
spec: {clusterIP: 10.96.0.21, ports: [{name: http, port: 7001}]}`
	authorsV2 = `
apiVersion: v1
kind: Service
metadata: {name: authors-v2, namespace: books}
spec: {clusterIP: 10.96.0.22, ports: [{name: http, port: 7001}]}`
)

func splitRoute(v1, v2 int) string {
	return `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: authors-split, namespace: books, creationTimestamp: "2026-12-01T09:00:00Z"}
spec:
  parentRefs: [{group: "", kind: Service, name: authors, port: 7001}]
  rules:
  - backendRefs:
    - {name: authors-v1, port: 7001, weight: ` + strconv.Itoa(v1) + `}
    - {name: authors-v2, port: 7001, weight: ` + strconv.Itoa(v2) + `}`
}

func TestGetRoutesStream(t *testing.T) {
	f := start(t, authorsSvc, authorsV1, authorsV2, splitRoute(90, 10))
	s := f.getRoutes(t, "authors.books.svc.cluster.local:7001", "")
	first := s.next(t)
	if !first.GetFound() {
		t.Fatal("found = false")
	}
	const initial = "authors-split:authors-v1.books.svc.cluster.local:7001=90,authors-v2.books.svc.cluster.local:7001=10"
	if got := backends(first); got != initial {
		t.Fatalf("initial table %q, want %q", got, initial)
	}

	// A change reaches the stream as a whole new table.
	began := time.Now()
	f.apply(t, splitRoute(10, 90))
	next := s.next(t)
	t.Logf("route change reached the stream in %s", time.Since(began))
	if got, want := backends(next), "authors-split:authors-v1.books.svc.cluster.local:7001=10,authors-v2.books.svc.cluster.local:7001=90"; got != want {
		t.Fatalf("after the change %q, want %q", got, want)
	}
	if time.Since(began) > time.Second {
		t.Errorf("the change took %s", time.Since(began))
	}

	// A backend Service that goes makes its backend invalid.
	f.deleteService(t, "books", "authors-v2")
	if got, want := backends(s.next(t)), "authors-split:authors-v1.books.svc.cluster.local:7001=10,authors-v2.books.svc.cluster.local:7001=90!backendRef Service books/authors-v2 not found"; got != want {
		t.Fatalf("without authors-v2 %q, want %q", got, want)
	}
	f.apply(t, authorsV2)
	if got, want := backends(s.next(t)), "authors-split:authors-v1.books.svc.cluster.local:7001=10,authors-v2.books.svc.cluster.local:7001=90"; got != want {
		t.Fatalf("with authors-v2 again %q, want %q", got, want)
	}

	// A change that does not change the table sends nothing.
	f.apply(t, authorsV1)
	s.quiet(t, 200*time.Millisecond)

	// Annotations on the Service: its own policy and failure accrual.
	f.apply(t, `
apiVersion: v1
kind: Service
metadata:
  name: authors
  namespace: books
  annotations:
    timeout.conduit.io/request: 5s
    retry.conduit.io/http: 5xx
    retry.conduit.io/limit: "2"
    balancer.conduit.io/failure-accrual: consecutive
    balancer.conduit.io/failure-accrual-consecutive-max-failures: "4"
spec: {clusterIP: 10.96.0.20, ports: [{name: http, port: 7001}]}`)
	table := s.next(t)
	diffProto(t, wantProto(t, `request_timeout_ms: 5000 retry {limit: 2 http_statuses {min: 500 max: 599}}`, &destinationv1.RoutePolicy{}), table.GetServicePolicy())
	diffProto(t, wantProto(t, `consecutive_max_failures: 4 min_penalty_ms: 1000 max_penalty_ms: 60000 jitter_ratio: 0.5`, &destinationv1.FailureAccrual{}), table.GetFailureAccrual())

	// The route goes: the Service has no route left.
	f.deleteRoute(t, policy.HTTPRoutesResource, "books", "authors-split")
	if table := s.next(t); !table.GetFound() || len(table.GetRoutes()) != 0 {
		t.Fatalf("after the route's deletion: %v", table)
	}
	// The Service goes.
	f.deleteService(t, "books", "authors")
	if table := s.next(t); table.GetFound() {
		t.Fatalf("after the Service's deletion: %v", table)
	}
}

// An authority that is no Service gets found=false, and the Service is
// announced when it is created.
func TestGetRoutesUnknownThenCreated(t *testing.T) {
	f := start(t, authorsV1, authorsV2)
	s := f.getRoutes(t, "authors.books:7001", "")
	if table := s.next(t); table.GetFound() {
		t.Fatalf("unknown Service: %v", table)
	}
	f.apply(t, splitRoute(50, 50))
	s.quiet(t, 100*time.Millisecond) // a route without its parent is nothing yet
	f.apply(t, authorsSvc)
	table := s.next(t)
	if !table.GetFound() || len(table.GetRoutes()) != 1 {
		t.Fatalf("after the Service's creation: %v", table)
	}

	// Short names resolve in the caller's namespace, as Get resolves them.
	short := f.getRoutes(t, "authors:7001", `{"ns":"books"}`)
	if table := short.next(t); !table.GetFound() || len(table.GetRoutes()) != 1 {
		t.Fatalf("authors:7001 from books: %v", table)
	}
	// So do cluster IPs; a route for another port does not apply.
	byIP := f.getRoutes(t, "10.96.0.20:9000", "")
	if table := byIP.next(t); !table.GetFound() || len(table.GetRoutes()) != 0 {
		t.Fatalf("10.96.0.20:9000: %v", table)
	}
	// One pod of a headless Service, or a name outside the cluster, is not routed.
	for _, a := range []string{"pod-0.authors.books.svc.cluster.local:7001", "example.com:443"} {
		if table := f.getRoutes(t, a, "").next(t); table.GetFound() {
			t.Errorf("%s: %v", a, table)
		}
	}
}

func TestGetRoutesInvalidAuthority(t *testing.T) {
	f := start(t)
	s, err := f.client.GetRoutes(context.Background(), &destinationv1.GetDestination{Authority: "a:b:c"})
	if err == nil {
		_, err = s.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("got %v, want InvalidArgument", err)
	}
}

// Routes in the client's namespace that name the Service (consumer
// routes) replace the Service's own (producer routes) for that client.
func TestConsumerRoutes(t *testing.T) {
	f := start(t, authorsSvc, authorsV1, authorsV2, splitRoute(90, 10), `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-to-authors, namespace: web}
spec:
  parentRefs: [{group: "", kind: Service, name: authors, namespace: books}]
  rules: [{backendRefs: [{name: authors-v2, namespace: books, port: 7001}]}]`, `
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: elsewhere, namespace: other}
spec:
  parentRefs: [{group: "", kind: Service, name: authors, namespace: books}]
  rules: [{}]`)
	for token, want := range map[string]string{
		`{"ns":"web"}`:   "web-to-authors:authors-v2.books.svc.cluster.local:7001=1",
		`{"ns":"books"}`: "authors-split:authors-v1.books.svc.cluster.local:7001=90,authors-v2.books.svc.cluster.local:7001=10",
		`{"ns":"emoji"}`: "authors-split:authors-v1.books.svc.cluster.local:7001=90,authors-v2.books.svc.cluster.local:7001=10",
		"":               "authors-split:authors-v1.books.svc.cluster.local:7001=90,authors-v2.books.svc.cluster.local:7001=10",
	} {
		if got := backends(f.getRoutes(t, "authors.books.svc.cluster.local:7001", token).next(t)); got != want {
			t.Errorf("caller %s: %q, want %q", token, got, want)
		}
	}
	// The GRPCRoute in "other" applies to callers from there.
	table := f.getRoutes(t, "authors.books.svc.cluster.local:7001", `{"ns":"other"}`).next(t)
	if len(table.GetRoutes()) != 1 || table.GetRoutes()[0].GetRef().GetKind() != RefKindGRPCRoute {
		t.Errorf("caller from other: %v", table)
	}
}

// Routes are ordered oldest first, then by namespace and name; routes not
// accepted are left out.
func TestRouteOrder(t *testing.T) {
	route := func(name, created string, extra string) string {
		return `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: ` + name + `, namespace: books, creationTimestamp: "` + created + `"}
spec:
  parentRefs: [{group: "", kind: Service, name: authors}]
  rules: [{` + extra + `}]`
	}
	f := start(t, authorsSvc,
		route("c", "2026-12-01T09:00:00Z", ""),
		route("b", "2026-12-01T10:00:00Z", ""),
		route("a", "2026-12-01T10:00:00Z", ""),
		route("unsupported", "2026-12-01T08:00:00Z", "filters: [{type: URLRewrite, urlRewrite: {hostname: x}}]"))
	table := f.getRoutes(t, "authors.books.svc.cluster.local:7001", "").next(t)
	var names []string
	for _, r := range table.GetRoutes() {
		names = append(names, r.GetRef().GetName())
	}
	if got := names; len(got) != 3 || got[0] != "c" || got[1] != "a" || got[2] != "b" {
		t.Errorf("routes %v, want [c a b]", got)
	}
	if table.GetRoutes()[0].GetCreatedUnixNano() != time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC).UnixNano() {
		t.Errorf("created_unix_nano %d", table.GetRoutes()[0].GetCreatedUnixNano())
	}
}
