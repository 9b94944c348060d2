package authz

import (
	"fmt"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// probeConns and probeRequests are the fixed clients and requests every
// decoded policy is asked about in the fuzz target.
var probeConns = []Conn{
	plain("10.1.1.1"), plain("192.168.1.1"), plain("fd00::1"), plain("::ffff:10.2.3.4"), {},
	meshed("10.1.1.1", id("shop", "web")), meshed("192.168.1.1", id("shop", "traffic")),
	meshed("2001:db8::1", id("ops", "admin")), meshed("10.1.1.1", "spiffe://other.example/ns/shop/sa/web"),
}

var probeRequests = []struct {
	method, target string
	hdr            []string
}{
	{"GET", "/", nil},
	{"GET", "/ready", nil},
	{"POST", "/api/v1/users?id=42&q=a+b", []string{"X-Canary", "true", "x-version", "v2"}},
	{"GET", "/api", []string{"x-tenant", "blue"}},
	{"GET", "/shop.Books/Get", []string{"content-type", "application/grpc"}},
	{"DELETE", "/admin/users/1?force=1", nil},
}

// probeRequestPairs are probeRequests on both request paths, built once.
var probeRequestPairs = sync.OnceValue(func() [][2]Request {
	var rs [][2]Request
	for _, r := range probeRequests {
		hr := httptest.NewRequest(r.method, r.target, nil)
		for i := 0; i+1 < len(r.hdr); i += 2 {
			hr.Header.Add(r.hdr[i], r.hdr[i+1])
		}
		rs = append(rs, [2]Request{req(r.method, r.target, r.hdr...), HTTPRequest(hr)})
	}
	return rs
})

// probed is what probe found out about a policy.
type probed struct {
	ref        Ref
	protocol   Protocol
	failClosed bool
	decisions  []Decision
}

// probe asks s about every fixed connection and request, on both request
// paths; it panics if the paths disagree.
func probe(s *Server) probed {
	p := probed{ref: s.Ref(), protocol: s.Protocol(), failClosed: s.FailClosed()}
	for _, c := range probeConns {
		p.decisions = append(p.decisions, s.AllowConn(c))
		for i, r := range probeRequestPairs() {
			d := s.AllowRequest(c, r[0])
			if d2 := s.AllowRequest(c, r[1]); d2 != d {
				panic(fmt.Sprintf("%+v: the fast path decided %+v, net/http's %+v", probeRequests[i], d, d2))
			}
			p.decisions = append(p.decisions, d)
		}
	}
	return p
}

func (p probed) equal(q probed) bool {
	return p.ref == q.ref && p.protocol == q.protocol && p.failClosed == q.failClosed && slices.Equal(p.decisions, q.decisions)
}

// seedPolicies are the fuzz target's seeds (besides testdata/fuzz).
func seedPolicies() []*policyv1.InboundServer {
	seeds := []*policyv1.InboundServer{{}}
	for _, p := range []string{"all-unauthenticated", "cluster-unauthenticated", "all-authenticated", "cluster-authenticated", "deny"} {
		seeds = append(seeds, defaultPolicy(p))
	}
	seeds = append(seeds, &policyv1.InboundServer{
		Server:   &policyv1.Ref{Kind: "server", Name: "web-http", Namespace: "shop"},
		Protocol: policyv1.Protocol_HTTP1,
		Authorizations: []*policyv1.Authorization{
			meshTLS("ids", []string{id("shop", "web"), id("shop", "books")}, []string{td + "/ns/shop/sa/traf"}, nets("10.0.0.0/8", "fd00::/8")...),
			unauthenticated("probes", &policyv1.Network{Cidr: "192.168.0.0/16", Except: []string{"192.168.1.0/24"}}),
		},
		HttpRoutes: []*policyv1.HttpRoute{
			httpRoute("api", []*policyv1.HttpMatch{
				{Path: prefix("/api"), Method: "POST", Headers: []*policyv1.HeaderMatch{header("x-canary", "true"), headerRegex("x-version", "v[0-9]")},
					QueryParams: []*policyv1.QueryParamMatch{queryParam("q", "a b"), queryRegex("id", "[0-9]+")}},
				{Path: regex(`/api/v[0-9]+/users`)},
			}, meshTLS("admins", []string{id("ops", "admin")}, nil)),
			httpRoute("grpc", []*policyv1.HttpMatch{{Path: exact("/shop.Books/Get")}}, unauthenticated("anyone")),
			httpRoute("rest", nil),
		},
		FailClosed: true,
	})
	return seeds
}

// FuzzDecodeInboundServer: Decode never panics; an error is an error with
// no policy; and whatever the generated code makes of the input, marshalled
// again (canonical field order, merged fields, the last oneof case), decodes
// to a policy that decides every fixed question the same way.
func FuzzDecodeInboundServer(f *testing.F) {
	for _, m := range seedPolicies() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, b...)) // a merge
	}
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := Decode(b)
		if (err == nil) == (s == nil) {
			t.Fatalf("Decode = %v, %v", s, err)
		}
		var got probed
		if s != nil {
			got = probe(s)
		}
		var m policyv1.InboundServer
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		b2, err2 := proto.MarshalOptions{Deterministic: true}.Marshal(&m)
		if err2 != nil {
			t.Fatal(err2)
		}
		s2, err2 := Decode(b2)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("Decode of the input: %v; of the generated code's re-marshalling: %v", err, err2)
		}
		if s2 == nil {
			return
		}
		if want := probe(s2); !got.equal(want) {
			t.Fatalf("the input decides\n%+v\nthe generated code's re-marshalling\n%+v", got, want)
		}
	})
}
