package route

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// fewRoutes is a Service with a few routes and no catch-all, like the
// demo's: a canary split by prefix, a header-matched canary, an exact
// path, a regular expression and a GRPCRoute.
func fewRoutes(tb testing.TB) *Table {
	return mustDecode(tb, routes(
		httpRoute("books", 1,
			&msgRule{Matches: []*msgMatch{{Path: prefix("/books")}}, Backends: []*msgBackend{backend("books-v1:80", 90), backend("books-v2:80", 10)}},
			rule(&msgMatch{Path: prefix("/books"), Headers: []*policyv1.HeaderMatch{header("x-canary", "1")}}),
			rule(&msgMatch{Path: exact("/books/index"), Method: "GET"}),
		),
		httpRoute("users", 2, rule(&msgMatch{Path: regex(`/api/v[0-9]+/users/[0-9]+`)})),
		grpcRoute("authors", 3, rule(&msgMatch{Path: exact("/shop.Authors/Get")}, &msgMatch{Path: prefix("/shop.Authors/")})),
	))
}

var benchHeader = []string{"Host", "web.shop:8080", "User-Agent", "fortio.org/fortio-1.68.2", "Accept", "*/*",
	"Content-Type", "application/json", "X-Canary", "0"}

var ruleSink *Rule

// BenchmarkRoute: Table.Route on both request views, for requests that
// match no rule (the common case the budget is about) and ones
// that do.
func BenchmarkRoute(b *testing.B) {
	tb := fewRoutes(b)
	for _, bm := range []struct {
		name string
		req  request
		want string
	}{
		{"no-match", get("/web/index.html?x=1", benchHeader...), ""},
		{"prefix", get("/books/1?x=1", benchHeader...), "httproute books/0"},
		{"exact", get("/books/index", benchHeader...), "httproute books/2"},
		{"regex", get("/api/v1/users/42", benchHeader...), "httproute users/0"},
	} {
		if got := routed(b, tb, bm.req); got != bm.want {
			b.Fatalf("%s: %q, want %q", bm.name, got, bm.want)
		}
		for i, view := range []string{"fields", "http"} {
			req := bm.req.both()[i]
			b.Run(bm.name+"/"+view, func(b *testing.B) {
				b.ReportAllocs()
				for b.Loop() {
					ruleSink, _ = tb.Route(&req)
				}
			})
		}
	}
	b.Run("nil-table", func(b *testing.B) {
		var nilTable *Table
		req := get("/").both()[0]
		b.ReportAllocs()
		for b.Loop() {
			ruleSink, _ = nilTable.Route(&req)
		}
	})
}

var backendSink *Backend

func BenchmarkPickBackend(b *testing.B) {
	rule := ruleOf(&testing.T{}, fewRoutes(b), "/books/1")
	b.Run("global", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			backendSink = rule.PickBackend(nil)
		}
	})
	b.Run("pcg", func(b *testing.B) {
		src := rand.NewPCG(1, 2)
		b.ReportAllocs()
		for b.Loop() {
			backendSink = rule.PickBackend(src)
		}
	})
}

var tableSink *Table

func BenchmarkStoreLookup(b *testing.B) {
	w := newFakeWatcher()
	s := NewStore(context.Background(), w, StoreOptions{})
	defer s.Close()
	for i := range 8 {
		a := fmt.Sprintf("svc-%d.shop.svc.cluster.local:80", i)
		w.feed(a) <- named(b, a)
		s.Lookup(context.Background(), a)
	}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		tableSink = s.Lookup(ctx, "svc-3.shop.svc.cluster.local:80")
	}
}

func BenchmarkDecode(b *testing.B) {
	msg := marshal(b, fullMessage())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(authority, msg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestRouteDoesNotAllocate guards what the benchmarks show: routing (a
// match or none, on either request view), drawing a backend and looking a
// table up allocate nothing.
func TestRouteDoesNotAllocate(t *testing.T) {
	tb := fewRoutes(t)
	for _, r := range []request{get("/web/index.html?x=1", benchHeader...), get("/books/1", benchHeader...), get("/api/v1/users/42")} {
		for i, req := range r.both() {
			if n := testing.AllocsPerRun(100, func() { ruleSink, _ = tb.Route(&req) }); n != 0 {
				t.Errorf("Route(%s) (view %d): %v allocations", r.target, i, n)
			}
		}
	}
	rule, src := ruleOf(t, tb, "/books/1"), rand.NewPCG(1, 2)
	if n := testing.AllocsPerRun(100, func() { backendSink = rule.PickBackend(nil); backendSink = rule.PickBackend(src) }); n != 0 {
		t.Errorf("PickBackend: %v allocations", n)
	}
	w := newFakeWatcher()
	s := newStore(t, w, StoreOptions{})
	w.feed(authority) <- named(t, "r")
	s.Lookup(context.Background(), authority)
	if n := testing.AllocsPerRun(100, func() { tableSink = s.Lookup(context.Background(), authority) }); n != 0 {
		t.Errorf("Lookup: %v allocations", n)
	}
}
