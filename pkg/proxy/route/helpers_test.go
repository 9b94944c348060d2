package route

import (
	"net/http/httptest"
	"testing"

	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch/httpmatchtest"
)

// Builders of destinationv1 messages: tests marshal with the generated
// types and decode with Decode, so every test also checks the hand
// decoder.

const authority = "web.shop.svc.cluster.local:80"

type (
	msgRoutes  = destinationv1.OutboundRoutes
	msgRoute   = destinationv1.OutboundRoute
	msgRule    = destinationv1.OutboundRule
	msgBackend = destinationv1.Backend
	msgFilter  = destinationv1.Filter
	msgMatch   = policyv1.HttpMatch
	msgPolicy  = destinationv1.RoutePolicy
)

func httpRoute(name string, created int64, rules ...*msgRule) *msgRoute {
	return &msgRoute{Ref: &policyv1.Ref{Kind: "httproute", Name: name, Namespace: "shop"}, Rules: rules, CreatedUnixNano: created}
}

func grpcRoute(name string, created int64, rules ...*msgRule) *msgRoute {
	r := httpRoute(name, created, rules...)
	r.Ref.Kind = "grpcroute"
	return r
}

func rule(matches ...*msgMatch) *msgRule { return &msgRule{Matches: matches} }

func backend(authority string, weight uint32) *msgBackend {
	return &msgBackend{Authority: authority, Weight: weight}
}

// Match builders.
var (
	exact, prefix, regex = httpmatchtest.Exact, httpmatchtest.Prefix, httpmatchtest.Regex
	header, query        = httpmatchtest.Header, httpmatchtest.Query
)

func hdrs(pairs ...string) []*destinationv1.Header {
	var hs []*destinationv1.Header
	for i := 0; i+1 < len(pairs); i += 2 {
		hs = append(hs, &destinationv1.Header{Name: pairs[i], Value: pairs[i+1]})
	}
	return hs
}

func requestHeaders(m *destinationv1.HeaderModifier) *msgFilter {
	return &msgFilter{Kind: &destinationv1.Filter_RequestHeaderModifier{RequestHeaderModifier: m}}
}

func responseHeaders(m *destinationv1.HeaderModifier) *msgFilter {
	return &msgFilter{Kind: &destinationv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: m}}
}

func redirect(r *destinationv1.Redirect) *msgFilter {
	return &msgFilter{Kind: &destinationv1.Filter_RequestRedirect{RequestRedirect: r}}
}

func routes(rs ...*msgRoute) *msgRoutes { return &msgRoutes{Found: true, Routes: rs} }

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustDecode(t testing.TB, m *msgRoutes) *Table {
	t.Helper()
	tb, err := Decode(authority, marshal(t, m))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return tb
}

// request is one request on both request paths: the fast paths' view
// (fields) and net/http's.
type request struct {
	method, target string
	hdr            []string
}

func (r request) both() [2]httpmatch.Request {
	hr := httptest.NewRequest(r.method, r.target, nil)
	var fs []httpmatch.Field
	for i := 0; i+1 < len(r.hdr); i += 2 {
		hr.Header.Add(r.hdr[i], r.hdr[i+1])
		fs = append(fs, httpmatch.Field{Name: []byte(r.hdr[i]), Value: []byte(r.hdr[i+1])})
	}
	return [2]httpmatch.Request{httpmatch.FieldsRequest([]byte(r.method), []byte(r.target), fs), httpmatch.HTTPRequest(hr)}
}

func get(target string, hdr ...string) request { return request{"GET", target, hdr} }

// routed names the rule a request takes: "kind name/index", or "" for
// none. It fails the test when the two request paths disagree.
func routed(t testing.TB, tb *Table, r request) string {
	t.Helper()
	var got [2]string
	for i, req := range r.both() {
		if rule, _ := tb.Route(&req); rule != nil {
			got[i] = rule.Route.Kind + " " + rule.Route.Name + "/" + string(rune('0'+rule.Index))
		}
	}
	if got[0] != got[1] {
		t.Fatalf("%s %s: the fast path takes %q, net/http's %q", r.method, r.target, got[0], got[1])
	}
	return got[0]
}
