package route

import (
	"math"
	"math/rand/v2"
	"testing"
	"time"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// TestPrecedence: the Gateway API's HTTPRoute precedence across every rule
// of every route — an exact path, then the longest prefix, then a method,
// then the most headers, then the most query parameters — and its
// tie-breaks: the oldest route, then namespace/name, then the first rule.
func TestPrecedence(t *testing.T) {
	tb := mustDecode(t, routes(
		// Received newest first: the order received must not matter.
		httpRoute("newer", 300, rule(&msgMatch{Path: prefix("/tie")})),
		httpRoute("catch-all", 100, rule()),
		httpRoute("api", 100,
			rule(&msgMatch{Path: prefix("/api")}),
			rule(&msgMatch{Path: prefix("/api/v1/")}),
			rule(&msgMatch{Path: exact("/api/v1/books")}),
			rule(&msgMatch{Path: prefix("/api"), Method: "POST"}),
			rule(&msgMatch{Path: prefix("/api"), Method: "POST", Headers: []*policyv1.HeaderMatch{header("x-canary", "1")}}),
			rule(&msgMatch{Path: prefix("/api"), Method: "POST", Headers: []*policyv1.HeaderMatch{header("x-canary", "1")},
				QueryParams: []*policyv1.QueryParamMatch{query("dry", "1")}}),
			rule(&msgMatch{Path: prefix("/api"), Method: "POST", Headers: []*policyv1.HeaderMatch{header("x-canary", "1"), header("x-user", "me")}}),
			rule(&msgMatch{Path: regex("/api/v[0-9]+/users/[0-9]+")}),
		),
		httpRoute("b-older", 200, rule(&msgMatch{Path: prefix("/tie")}), rule(&msgMatch{Path: prefix("/tie")}), rule(&msgMatch{Path: prefix("/same")})),
		httpRoute("a-older", 200, rule(&msgMatch{Path: prefix("/tie")})),
		&msgRoute{Ref: &policyv1.Ref{Kind: "httproute", Name: "a", Namespace: "zz"}, CreatedUnixNano: 200,
			Rules: []*msgRule{rule(&msgMatch{Path: prefix("/same")})}},
		&msgRoute{Ref: &policyv1.Ref{Kind: "httproute", Name: "z", Namespace: "a"}, CreatedUnixNano: 200,
			Rules: []*msgRule{rule(&msgMatch{Path: prefix("/same")})}},
	))
	for _, tt := range []struct {
		req  request
		want string
	}{
		{get("/api"), "httproute api/0"},
		{get("/api/v1"), "httproute api/1"},                 // the longer prefix ("/api/v1/" is "/api/v1")
		{get("/api/v1/books"), "httproute api/2"},           // exact beats any prefix
		{get("/api/v1/books/1"), "httproute api/1"},         // prefixes match whole segments
		{get("/api/v1x"), "httproute api/0"},                //
		{get("/api/v2/users/42"), "httproute api/7"},        // a regular expression beats prefixes
		{get("/api/v1/books?dry=1"), "httproute api/2"},     // the path first, whatever else matches
		{request{"POST", "/api/x", nil}, "httproute api/3"}, // a method beats no method
		{request{"POST", "/api/x", []string{"X-Canary", "1"}}, "httproute api/4"},
		{request{"POST", "/api/x?dry=1", []string{"X-Canary", "1"}}, "httproute api/5"},                  // a query parameter breaks the tie
		{request{"POST", "/api/x?dry=1", []string{"X-Canary", "1", "X-User", "me"}}, "httproute api/6"},  // more headers beat parameters
		{request{"POST", "/api/v1/books", []string{"X-Canary", "1", "X-User", "me"}}, "httproute api/2"}, // the path still first
		{get("/tie/x"), "httproute a-older/0"},                                                           // same match: the oldest route, then by name
		{get("/same"), "httproute z/0"},                                                                  // a/z before shop/b-older before zz/a
		{get("/other"), "httproute catch-all/0"},                                                         // no matches: every request
		{get("/"), "httproute catch-all/0"},
	} {
		if got := routed(t, tb, tt.req); got != tt.want {
			t.Errorf("%s %s %v: %q, want %q", tt.req.method, tt.req.target, tt.req.hdr, got, tt.want)
		}
	}
}

// TestGRPCRoutePrecedence: a GRPCRoute's method match arrives as an exact
// path, its service match as a prefix, so a method beats its service,
// which beats a route for every request; header matches break ties.
func TestGRPCRoutePrecedence(t *testing.T) {
	grpc := func(target string, hdr ...string) request {
		return request{"POST", target, append([]string{"content-type", "application/grpc"}, hdr...)}
	}
	tb := mustDecode(t, routes(
		grpcRoute("books-get", 100, rule(&msgMatch{Path: exact("/shop.Books/Get")})),
		grpcRoute("books", 100, rule(&msgMatch{Path: prefix("/shop.Books/")})),
		grpcRoute("books-canary", 200, rule(&msgMatch{Path: prefix("/shop.Books/"), Headers: []*policyv1.HeaderMatch{header("x-canary", "1")}})),
		grpcRoute("everything", 50, rule()),
	))
	for _, tt := range []struct {
		req  request
		want string
	}{
		{grpc("/shop.Books/Get"), "grpcroute books-get/0"},
		{grpc("/shop.Books/Get", "x-canary", "1"), "grpcroute books-get/0"},
		{grpc("/shop.Books/List"), "grpcroute books/0"},
		{grpc("/shop.Books/List", "x-canary", "1"), "grpcroute books-canary/0"},
		{grpc("/shop.BooksAdmin/List"), "grpcroute everything/0"},
		{grpc("/shop.Authors/Get"), "grpcroute everything/0"},
	} {
		if got := routed(t, tb, tt.req); got != tt.want {
			t.Errorf("%s %v: %q, want %q", tt.req.target, tt.req.hdr, got, tt.want)
		}
	}
}

func TestNoRoute(t *testing.T) {
	tb := mustDecode(t, routes(httpRoute("api", 1, rule(&msgMatch{Path: prefix("/api")}))))
	if got := routed(t, tb, get("/web")); got != "" {
		t.Errorf("/web took %s", got)
	}
	// A match with a condition this proxy does not know never matches,
	// and a rule whose matches all have one matches nothing.
	var nilTable *Table
	for _, tb := range []*Table{nilTable, mustDecode(t, &msgRoutes{}), mustDecode(t, routes())} {
		if got := routed(t, tb, get("/")); got != "" {
			t.Errorf("%v: / took %s", tb, got)
		}
	}
	if !equalPolicy(nilTable.ServicePolicy(), Policy{}) || nilTable.Found() || nilTable.Authority() != "" || nilTable.String() != "no routes" {
		t.Error("a nil table is not an empty one")
	}
	if _, ok := nilTable.FailureAccrual(); ok {
		t.Error("a nil table has failure accrual")
	}
}

// TestPolicyMerge: a rule's policy takes what it leaves unset from the
// Service's, field by field; requests no rule matches get the Service's.
func TestPolicyMerge(t *testing.T) {
	svc := &msgPolicy{RequestTimeoutMs: 5000, BackendRequestTimeoutMs: 1000, Retry: &destinationv1.Retry{
		Limit: 2, HttpStatuses: []*destinationv1.StatusRange{{Min: 500, Max: 599}}, TimeoutMs: 300}}
	m := routes(httpRoute("r", 1,
		&msgRule{Matches: []*msgMatch{{Path: exact("/own")}}, Policy: &msgPolicy{RequestTimeoutMs: 100,
			Retry: &destinationv1.Retry{Limit: 5, GrpcCodes: []uint32{14, 13}}}},
		&msgRule{Matches: []*msgMatch{{Path: exact("/none")}}},
	))
	m.ServicePolicy = svc
	tb := mustDecode(t, m)
	own := Policy{RequestTimeout: 100 * time.Millisecond, BackendRequestTimeout: time.Second, Retry: Retry{
		Limit: 5, HTTPStatuses: []StatusRange{{500, 599}}, GRPCCodes: []uint32{14, 13}, Timeout: 300 * time.Millisecond}}
	service := Policy{RequestTimeout: 5 * time.Second, BackendRequestTimeout: time.Second, Retry: Retry{
		Limit: 2, HTTPStatuses: []StatusRange{{500, 599}}, Timeout: 300 * time.Millisecond}}
	for _, tt := range []struct {
		path string
		want Policy
	}{{"/own", own}, {"/none", service}} {
		req := get(tt.path).both()[0]
		rule, _ := tb.Route(&req)
		if rule == nil || !equalPolicy(rule.Policy, tt.want) {
			t.Errorf("%s: %+v, want %+v", tt.path, rule, tt.want)
		}
	}
	if got := tb.ServicePolicy(); !equalPolicy(got, service) {
		t.Errorf("service policy %+v", got)
	}
	p := tb.ServicePolicy()
	for status, want := range map[int]bool{499: false, 500: true, 503: true, 599: true, 600: false} {
		if p.Retry.RetriesStatus(status) != want {
			t.Errorf("RetriesStatus(%d) = %v", status, !want)
		}
	}
	if !own.Retry.RetriesGRPC(14) || own.Retry.RetriesGRPC(2) {
		t.Error("RetriesGRPC")
	}
}

func equalPolicy(a, b Policy) bool {
	return a.RequestTimeout == b.RequestTimeout && a.BackendRequestTimeout == b.BackendRequestTimeout &&
		a.Retry.Limit == b.Retry.Limit && a.Retry.Timeout == b.Retry.Timeout &&
		len(a.Retry.HTTPStatuses) == len(b.Retry.HTTPStatuses) && len(a.Retry.GRPCCodes) == len(b.Retry.GRPCCodes) &&
		(len(a.Retry.HTTPStatuses) == 0 || a.Retry.HTTPStatuses[0] == b.Retry.HTTPStatuses[0]) &&
		(len(a.Retry.GRPCCodes) == 0 || a.Retry.GRPCCodes[0] == b.Retry.GRPCCodes[0])
}

// ruleOf returns the rule a GET of path takes.
func ruleOf(t *testing.T, tb *Table, path string) *Rule {
	t.Helper()
	req := get(path).both()[0]
	rule, _ := tb.Route(&req)
	if rule == nil {
		t.Fatalf("%s: no rule", path)
	}
	return rule
}

// TestWeights: a 10 %/90 % split is 10 %/90 % within ±3 % over 10,000
// picks (issue 14's canary check), a backend of weight 0 is never picked,
// and the draw is exactly math/rand/v2's unbiased Uint64N.
func TestWeights(t *testing.T) {
	const v1, v2, v3 = "authors-v1.shop.svc.cluster.local:7001", "authors-v2.shop.svc.cluster.local:7001", "authors-v3.shop.svc.cluster.local:7001"
	tb := mustDecode(t, routes(httpRoute("split", 1,
		&msgRule{Matches: []*msgMatch{{Path: exact("/split")}}, Backends: []*msgBackend{backend(v1, 10), backend(v3, 0), backend(v2, 90)}},
		&msgRule{Matches: []*msgMatch{{Path: exact("/thirds")}}, Backends: []*msgBackend{backend(v1, 1), backend(v2, 1), backend(v3, 1)}},
	)))
	split := ruleOf(t, tb, "/split")
	const n = 10000
	for seed := range uint64(5) {
		src := rand.NewPCG(seed, 14)
		count := map[string]int{}
		for range n {
			count[split.PickBackend(src).Authority]++
		}
		if share := float64(count[v1]) / n; math.Abs(share-0.10) > 0.03 {
			t.Errorf("seed %d: v1 got %.3f of the requests, want 0.10 ± 0.03 (%v)", seed, share, count)
		}
		if count[v3] != 0 || count[v1]+count[v2] != n {
			t.Errorf("seed %d: %v; the weight-0 backend must get nothing", seed, count)
		}
	}
	// The same draws as Uint64N on the same source: exact, no modulo bias.
	a, b := rand.NewPCG(1, 2), rand.New(rand.NewPCG(1, 2))
	thirds := ruleOf(t, tb, "/thirds")
	backends := thirds.Backends()
	for range n {
		if got, want := thirds.PickBackend(a), &backends[b.Uint64N(3)]; got != want {
			t.Fatalf("picked %s, Uint64N says %s", got.Authority, want.Authority)
		}
	}
	// The package's own source (nil) too.
	count := map[string]int{}
	for range n {
		count[split.PickBackend(nil).Authority]++
	}
	if share := float64(count[v1]) / n; math.Abs(share-0.10) > 0.03 || count[v3] != 0 {
		t.Errorf("with math/rand/v2's source: %v", count)
	}
}

// TestPickBackendWithoutDraw: a rule without backends sends to the Service
// itself; all weight on one backend needs no draw; no weight at all, or an
// invalid backend, is answered 500.
func TestPickBackendWithoutDraw(t *testing.T) {
	tb := mustDecode(t, routes(httpRoute("r", 1,
		rule(&msgMatch{Path: exact("/self")}),
		&msgRule{Matches: []*msgMatch{{Path: exact("/one")}}, Backends: []*msgBackend{backend("a:80", 0), backend("b:80", 7)}},
		&msgRule{Matches: []*msgMatch{{Path: exact("/zero")}}, Backends: []*msgBackend{backend("a:80", 0), backend("b:80", 0)}},
		&msgRule{Matches: []*msgMatch{{Path: exact("/invalid")}}, Backends: []*msgBackend{{Weight: 1, Invalid: "no Service shop/gone"}}},
		&msgRule{Matches: []*msgMatch{{Path: exact("/empty")}}, Backends: []*msgBackend{{Weight: 1}}},
	)))
	src := rand.NewPCG(1, 1)
	for _, tt := range []struct{ path, authority, invalid string }{
		{"/self", authority, ""},
		{"/one", "b:80", ""},
		{"/zero", "", "httproute r rule 2: every backend has weight 0"},
		{"/invalid", "", "no Service shop/gone"},
		{"/empty", "", "a backend without an authority"},
	} {
		rule := ruleOf(t, tb, tt.path)
		for range 100 {
			if b := rule.PickBackend(src); b.Authority != tt.authority || b.Invalid != tt.invalid {
				t.Fatalf("%s: picked %+v, want %q %q", tt.path, b, tt.authority, tt.invalid)
			}
		}
	}
	if ruleOf(t, tb, "/self").Backends() != nil {
		t.Error("a rule without backends lists some")
	}
}

// TestRouteMatch: Route returns the match that selected the rule.
func TestRouteMatch(t *testing.T) {
	tb := mustDecode(t, routes(httpRoute("r", 1, rule(&msgMatch{Path: exact("/a")}, &msgMatch{Path: prefix("/b/")}))))
	req := get("/b/c").both()[1]
	rule, m := tb.Route(&req)
	if p, ok := m.PathPrefix(); rule == nil || !ok || p != "/b" {
		t.Errorf("Route = %v, %v (%q, %v)", rule, m, p, ok)
	}
}
