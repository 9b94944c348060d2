package httpmatch

import (
	"net/http/httptest"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/conduitmesh/conduit/internal/testenv"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch/httpmatchtest"
)

// Matching is tested in depth through its users (pkg/proxy/authz's
// policy tests, pkg/proxy/route's table tests); these tests hold what the
// package promises of itself.

func compile(t testing.TB, index int, ms ...*policyv1.HttpMatch) []Match {
	t.Helper()
	c := Matches{Index: index}
	for _, m := range ms {
		b, err := proto.Marshal(m)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Decode(b); err != nil {
			t.Fatal(err)
		}
	}
	return c.List()
}

var exact, prefix = httpmatchtest.Exact, httpmatchtest.Prefix

// both is a request on either representation.
func both(method, target string, hdr ...string) [2]Request {
	hr := httptest.NewRequest(method, target, nil)
	var fs []Field
	for i := 0; i+1 < len(hdr); i += 2 {
		hr.Header.Add(hdr[i], hdr[i+1])
		fs = append(fs, Field{Name: []byte(hdr[i]), Value: []byte(hdr[i+1])})
	}
	return [2]Request{FieldsRequest([]byte(method), []byte(target), fs), HTTPRequest(hr)}
}

func TestPickAndPrecedence(t *testing.T) {
	var ms []Match
	ms = append(ms, compile(t, 0, &policyv1.HttpMatch{Path: prefix("/api/")})...)
	ms = append(ms, compile(t, 1, &policyv1.HttpMatch{Path: prefix("/api"),
		Headers: []*policyv1.HeaderMatch{{Name: "X-Canary", Value: &policyv1.HeaderMatch_Exact{Exact: "1"}}}})...)
	ms = append(ms, compile(t, 2, &policyv1.HttpMatch{Path: exact("/api/v1")})...)
	ms = append(ms, compile(t, 3)...) // no matches: everything
	Sort(ms)
	for _, tt := range []struct {
		req  [2]Request
		want int
	}{
		{both("GET", "/api/v1"), 2},
		{both("GET", "/api/v1?x=1", "x-canary", "1"), 2},
		{both("GET", "/api/v2", "x-canary", "1"), 1},
		{both("GET", "/api/v2"), 0},
		{both("GET", "/apix"), 3},
	} {
		for i := range tt.req {
			if got := Pick(ms, &tt.req[i]); got < 0 || ms[got].Index != tt.want {
				t.Errorf("%s (request %d): picked %d, want the match of %d", tt.req[0].Path(), i, got, tt.want)
			}
		}
		if n := testing.AllocsPerRun(100, func() { Pick(ms, &tt.req[0]); Pick(ms, &tt.req[1]) }); n != 0 {
			t.Errorf("%s: %v allocations", tt.req[0].Path(), n)
		}
	}
}

func TestPathPrefixAndTarget(t *testing.T) {
	for _, tt := range []struct {
		m      *policyv1.HttpMatch
		prefix string
		ok     bool
	}{
		{&policyv1.HttpMatch{Path: prefix("/api/")}, "/api", true},
		{&policyv1.HttpMatch{Path: prefix("/")}, "", true},
		{&policyv1.HttpMatch{Method: "GET"}, "", true},
		{&policyv1.HttpMatch{Path: exact("/api")}, "", false},
	} {
		m := compile(t, 0, tt.m)[0]
		if p, ok := m.PathPrefix(); p != tt.prefix || ok != tt.ok {
			t.Errorf("%v: PathPrefix() = %q, %v", tt.m, p, ok)
		}
	}
	for _, r := range both("GET", "http://web:80/a/b?q=1&r") {
		if r.Path() != "/a/b" || r.Query() != "q=1&r" {
			t.Errorf("path %q, query %q", r.Path(), r.Query())
		}
	}
}

// TestMatchesDropsUnknown: an HttpMatch with a field the proxy does not
// know never matches; a list of only such matches matches nothing, an empty
// one everything.
func TestMatchesDropsUnknown(t *testing.T) {
	b, _ := proto.Marshal(&policyv1.HttpMatch{Path: prefix("/")})
	b = protowire.AppendVarint(protowire.AppendTag(b, 9, protowire.VarintType), 1)
	c := Matches{Index: 7}
	if err := c.Decode(b); err != nil {
		t.Fatal(err)
	}
	if got := c.List(); len(got) != 0 {
		t.Errorf("a match with an unknown condition was kept: %+v", got)
	}
	if got := (&Matches{Index: 7}).List(); len(got) != 1 || got[0].Index != 7 {
		t.Errorf("no matches: %+v, want one catch-all", got)
	}
}

func TestImports(t *testing.T) {
	testenv.LinksOnly(t, ".", []string{
		"github.com/conduitmesh/conduit/pkg/proxy/httpmatch",
		"github.com/conduitmesh/conduit/pkg/proxy/grpcwire",
		"google.golang.org/protobuf/encoding/protowire",
		"google.golang.org/protobuf/internal/",
	})
}
