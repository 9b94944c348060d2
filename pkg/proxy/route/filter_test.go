package route

import (
	"net/http"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2/hpack"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
)

// flat lists a header block as sorted "name: value" lines, names lower
// case, so that the three representations compare.
func flatHTTP(h http.Header) []string {
	var out []string
	for k, vs := range h {
		for _, v := range vs {
			out = append(out, strings.ToLower(k)+": "+v)
		}
	}
	slices.Sort(out)
	return out
}

func flatFields(fs []httpmatch.Field) []string {
	var out []string
	for _, f := range fs {
		out = append(out, strings.ToLower(string(f.Name))+": "+string(f.Value))
	}
	slices.Sort(out)
	return out
}

func flatHPACK(fs []hpack.HeaderField) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.Name+": "+f.Value)
	}
	slices.Sort(out)
	return out
}

// TestFilters: the rule's and the backend's header modifiers edit every
// representation alike: set replaces every value of a name (any case),
// add appends, remove deletes, in that order; pseudo-headers stay.
func TestFilters(t *testing.T) {
	mod := &destinationv1.HeaderModifier{
		Set:    hdrs("X-Set", "new", "x-both", "set"),
		Add:    hdrs("X-Add", "added", "X-Both", "added"),
		Remove: []string{"X-Remove", "x-gone"},
	}
	tb := mustDecode(t, routes(httpRoute("r", 1, &msgRule{
		Filters:  []*msgFilter{requestHeaders(mod), responseHeaders(&destinationv1.HeaderModifier{Add: hdrs("X-Served-By", "web")})},
		Backends: []*msgBackend{{Authority: "b:80", Weight: 1, Filters: []*msgFilter{requestHeaders(&destinationv1.HeaderModifier{Set: hdrs("X-Backend", "b")})}}},
	})))
	in := []string{"X-Set", "old", "x-set", "older", "X-Add", "kept", "X-Remove", "1", "X-Gone", "2", "X-Both", "0", "Accept", "*/*"}
	want := []string{"accept: */*", "x-add: added", "x-add: kept", "x-backend: b", "x-both: added", "x-both: set", "x-set: new"}

	req := get("/", in...).both()[1]
	rule, _ := tb.Route(&req)
	if rule == nil || !rule.ModifiesRequest() || !rule.ModifiesResponse() {
		t.Fatalf("rule %v", rule)
	}
	b := rule.PickBackend(nil)
	if !b.ModifiesRequest() || b.ModifiesResponse() {
		t.Fatalf("backend %+v", b)
	}

	h := http.Header{}
	var fs []httpmatch.Field
	hf := []hpack.HeaderField{{Name: ":method", Value: "GET"}, {Name: ":path", Value: "/"}}
	for i := 0; i+1 < len(in); i += 2 {
		h.Add(in[i], in[i+1])
		fs = append(fs, httpmatch.Field{Name: []byte(in[i]), Value: []byte(in[i+1])})
		hf = append(hf, hpack.HeaderField{Name: strings.ToLower(in[i]), Value: in[i+1]})
	}
	fields, hpackFields := Fields(fs), HPACKFields(hf)
	for _, hs := range []Headers{HTTPHeader(h), &fields, &hpackFields} {
		rule.ModifyRequest(hs)
		b.ModifyRequest(hs)
	}
	if got := flatHTTP(h); !slices.Equal(got, want) {
		t.Errorf("http.Header:\n%q\nwant\n%q", got, want)
	}
	if got := flatFields(fields); !slices.Equal(got, want) {
		t.Errorf("fields:\n%q\nwant\n%q", got, want)
	}
	wantH2 := append([]string{":method: GET", ":path: /"}, want...)
	if got := flatHPACK(hpackFields); !slices.Equal(got, wantH2) {
		t.Errorf("hpack:\n%q\nwant\n%q", got, wantH2)
	}
	for _, f := range hpackFields {
		if f.Name != strings.ToLower(f.Name) {
			t.Errorf("HTTP/2 field %q is not lower case", f.Name)
		}
	}
	if h["X-Set"] == nil || h["x-set"] != nil {
		t.Errorf("http.Header keys are not canonical: %v", h)
	}

	rsp := http.Header{"Content-Type": {"text/plain"}}
	rule.ModifyResponse(HTTPHeader(rsp))
	if got := flatHTTP(rsp); !slices.Equal(got, []string{"content-type: text/plain", "x-served-by: web"}) {
		t.Errorf("response %q", got)
	}
}

// TestInvalidFilters: a filter the proxy cannot apply safely is not
// skipped: its rule (or backend) answers 500 with the reason.
func TestInvalidFilters(t *testing.T) {
	for _, tt := range []struct {
		name    string
		filter  *msgFilter
		reason  string
		backend bool
	}{
		{"owned header", requestHeaders(&destinationv1.HeaderModifier{Set: hdrs("Content-Length", "0")}), "may not modify header Content-Length", false},
		{"Host", requestHeaders(&destinationv1.HeaderModifier{Remove: []string{"host"}}), "may not modify header host", false},
		{"hop-by-hop", responseHeaders(&destinationv1.HeaderModifier{Add: hdrs("Connection", "close")}), "may not modify header Connection", false},
		{"not a token", requestHeaders(&destinationv1.HeaderModifier{Add: hdrs("X Y", "1")}), `invalid header name "X Y"`, false},
		{"empty name", requestHeaders(&destinationv1.HeaderModifier{Add: hdrs("", "1")}), `invalid header name ""`, false},
		{"CRLF", requestHeaders(&destinationv1.HeaderModifier{Set: hdrs("X-A", "1\r\nX-Injected: 1")}), `a control character in the value of header "X-A"`, false},
		{"unknown filter", &msgFilter{}, "a filter this proxy does not support", false},
		{"scheme", redirect(&destinationv1.Redirect{Scheme: "ftp"}), `redirect to scheme "ftp"`, false},
		{"hostname", redirect(&destinationv1.Redirect{Hostname: "a/b"}), `redirect to hostname "a/b"`, false},
		{"port", redirect(&destinationv1.Redirect{Port: 70000}), "redirect to port 70000", false},
		{"path", redirect(&destinationv1.Redirect{Path: &destinationv1.PathModifier{Kind: &destinationv1.PathModifier_Full{Full: "/a b"}}}), `redirect to path "/a b"`, false},
		{"relative path", redirect(&destinationv1.Redirect{Path: &destinationv1.PathModifier{Kind: &destinationv1.PathModifier_Full{Full: "a"}}}), `redirect to path "a"`, false},
		{"status", redirect(&destinationv1.Redirect{StatusCode: 200}), "redirect with status 200", false},
		{"backend", requestHeaders(&destinationv1.HeaderModifier{Set: hdrs("TE", "trailers")}), "backend b:80: a filter may not modify header TE", true},
		{"backend redirect", redirect(&destinationv1.Redirect{}), "backend b:80: a redirect filter on a backend", true},
	} {
		r := &msgRule{Filters: []*msgFilter{tt.filter, requestHeaders(&destinationv1.HeaderModifier{Add: hdrs("X-Ok", "1")})}}
		if tt.backend {
			r = &msgRule{Backends: []*msgBackend{{Authority: "b:80", Weight: 1, Filters: []*msgFilter{tt.filter}}}}
		}
		rule := ruleOf(t, mustDecode(t, routes(httpRoute("r", 1, r))), "/")
		b := rule.PickBackend(nil)
		if !strings.Contains(b.Invalid, tt.reason) || b.Authority != "" && !tt.backend {
			t.Errorf("%s: picked %+v, want 500 with %q", tt.name, b, tt.reason)
		}
		if !tt.backend && (rule.ModifiesRequest() || rule.Redirect() != nil) {
			t.Errorf("%s: an invalid rule still modifies or redirects", tt.name)
		}
	}
}

// TestRedirect: Location and status as the Gateway API's RequestRedirect
// specifies them.
func TestRedirect(t *testing.T) {
	full := func(p string) *destinationv1.PathModifier {
		return &destinationv1.PathModifier{Kind: &destinationv1.PathModifier_Full{Full: p}}
	}
	pfx := func(p string) *destinationv1.PathModifier {
		return &destinationv1.PathModifier{Kind: &destinationv1.PathModifier_Prefix{Prefix: p}}
	}
	for _, tt := range []struct {
		name      string
		match     *msgMatch
		rd        *destinationv1.Redirect
		target    string
		scheme    string
		authority string
		want      string
		status    int
	}{
		{"nothing set", nil, &destinationv1.Redirect{}, "/foo?x=1", "", "web.shop:8080", "http://web.shop:8080/foo?x=1", 302},
		{"https", nil, &destinationv1.Redirect{Scheme: "https", StatusCode: 301}, "/foo?x=1", "http", "web.shop:8080", "https://web.shop/foo?x=1", 301},
		{"https, port", nil, &destinationv1.Redirect{Scheme: "https", Port: 8443}, "/", "http", "web.shop:80", "https://web.shop:8443/", 302},
		{"http from https", nil, &destinationv1.Redirect{Scheme: "http"}, "/", "https", "web.shop", "http://web.shop/", 302},
		{"hostname", nil, &destinationv1.Redirect{Hostname: "example.com"}, "/a", "http", "web.shop:8080", "http://example.com:8080/a", 302},
		{"port", nil, &destinationv1.Redirect{Port: 9090}, "/a", "http", "web.shop", "http://web.shop:9090/a", 302},
		{"well-known port", nil, &destinationv1.Redirect{Port: 80}, "/a", "http", "web.shop:8080", "http://web.shop/a", 302},
		{"no port", nil, &destinationv1.Redirect{StatusCode: 307}, "/a", "http", "web.shop", "http://web.shop/a", 307},
		{"IPv6", nil, &destinationv1.Redirect{}, "/a", "http", "[fd00::1]:8080", "http://[fd00::1]:8080/a", 302},
		{"IPv6, no port", nil, &destinationv1.Redirect{}, "/a", "http", "[fd00::1]", "http://[fd00::1]/a", 302},
		{"absolute form", nil, &destinationv1.Redirect{Hostname: "example.com"}, "http://web.shop/a?b", "http", "web.shop", "http://example.com/a?b", 302},
		{"full path", nil, &destinationv1.Redirect{Path: full("/bar")}, "/foo?x=1", "http", "web", "http://web/bar?x=1", 302},
		{"empty full path", nil, &destinationv1.Redirect{Path: full("")}, "/foo", "http", "web", "http://web/", 302},
		// Gateway API's ReplacePrefixMatch table.
		{"prefix", &msgMatch{Path: prefix("/foo")}, &destinationv1.Redirect{Path: pfx("/xyz")}, "/foo/bar", "http", "web", "http://web/xyz/bar", 302},
		{"prefix, slash", &msgMatch{Path: prefix("/foo")}, &destinationv1.Redirect{Path: pfx("/xyz/")}, "/foo/bar", "http", "web", "http://web/xyz/bar", 302},
		{"slash prefix", &msgMatch{Path: prefix("/foo/")}, &destinationv1.Redirect{Path: pfx("/xyz")}, "/foo/bar", "http", "web", "http://web/xyz/bar", 302},
		{"slash prefix, slash", &msgMatch{Path: prefix("/foo/")}, &destinationv1.Redirect{Path: pfx("/xyz/")}, "/foo/bar", "http", "web", "http://web/xyz/bar", 302},
		{"prefix, whole path", &msgMatch{Path: prefix("/foo")}, &destinationv1.Redirect{Path: pfx("/xyz")}, "/foo", "http", "web", "http://web/xyz", 302},
		{"slash prefix, whole path", &msgMatch{Path: prefix("/foo/")}, &destinationv1.Redirect{Path: pfx("/xyz")}, "/foo", "http", "web", "http://web/xyz", 302},
		{"prefix to empty", &msgMatch{Path: prefix("/foo")}, &destinationv1.Redirect{Path: pfx("")}, "/foo/bar", "http", "web", "http://web/bar", 302},
		{"slash prefix to empty", &msgMatch{Path: prefix("/foo/")}, &destinationv1.Redirect{Path: pfx("")}, "/foo/bar", "http", "web", "http://web/bar", 302},
		{"prefix to slash", &msgMatch{Path: prefix("/foo")}, &destinationv1.Redirect{Path: pfx("/")}, "/foo/bar", "http", "web", "http://web/bar", 302},
		{"prefix to slash, whole path", &msgMatch{Path: prefix("/foo")}, &destinationv1.Redirect{Path: pfx("/")}, "/foo", "http", "web", "http://web/", 302},
		{"root prefix", &msgMatch{Path: prefix("/")}, &destinationv1.Redirect{Path: pfx("/xyz")}, "/foo", "http", "web", "http://web/xyz/foo", 302},
		{"no path match", nil, &destinationv1.Redirect{Path: pfx("/xyz")}, "/foo", "http", "web", "http://web/xyz/foo", 302},
		{"prefix of an exact match", &msgMatch{Path: exact("/foo")}, &destinationv1.Redirect{Path: pfx("/xyz")}, "/foo", "http", "web", "http://web/xyz", 302},
	} {
		var matches []*msgMatch
		if tt.match != nil {
			matches = append(matches, tt.match)
		}
		tb := mustDecode(t, routes(httpRoute("r", 1, &msgRule{Matches: matches, Filters: []*msgFilter{redirect(tt.rd)}})))
		for i, req := range get(tt.target).both() {
			rule, m := tb.Route(&req)
			if rule == nil || rule.Redirect() == nil {
				t.Fatalf("%s: no redirect (%v)", tt.name, rule)
			}
			rd := rule.Redirect()
			if got := rd.Location(&req, m, tt.scheme, tt.authority); got != tt.want || rd.Status != tt.status {
				t.Errorf("%s (request %d): %d %s, want %d %s", tt.name, i, rd.Status, got, tt.status, tt.want)
			}
		}
	}
}
