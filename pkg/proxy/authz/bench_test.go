package authz

import (
	"fmt"
	"net/http/httptest"
	"testing"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// bigPolicy has 50 authorizations on the port, each for one identity, and
// 10 routes; the benchmarks' client is the last identity.
func bigPolicy(tb testing.TB) *Server {
	m := &policyv1.InboundServer{Server: pref("server", "web-http"), Protocol: policyv1.Protocol_HTTP1}
	for i := range 50 {
		m.Authorizations = append(m.Authorizations, meshTLS(fmt.Sprint("authz-", i), []string{id("shop", fmt.Sprint("client-", i))}, nil))
	}
	for i := range 6 {
		m.HttpRoutes = append(m.HttpRoutes, httpRoute(fmt.Sprint("books-", i),
			[]*policyv1.HttpMatch{{Path: prefix(fmt.Sprintf("/books/%d", i))}, {Path: exact(fmt.Sprintf("/books/%d/index", i)), Method: "GET"}},
			unauthenticated(fmt.Sprint("route-", i))))
	}
	m.HttpRoutes = append(m.HttpRoutes,
		httpRoute("canary", []*policyv1.HttpMatch{{Path: prefix("/api"), Headers: []*policyv1.HeaderMatch{header("x-canary", "true")}}}),
		httpRoute("users", []*policyv1.HttpMatch{{Path: regex(`/api/v[0-9]+/users/[0-9]+`)}}),
		httpRoute("api", []*policyv1.HttpMatch{{Path: prefix("/api")}}),
		httpRoute("rest", nil))
	return mustDecode(tb, m)
}

var sink Decision

func BenchmarkAllowRequest(b *testing.B) {
	def := mustDecode(b, defaultPolicy("all-unauthenticated"))
	big := bigPolicy(b)
	client := meshed("10.1.2.3", id("shop", "client-49"))
	hdr := []string{"Host", "web.shop:8080", "User-Agent", "fortio.org/fortio-1.68.2", "Accept", "*/*",
		"X-Canary", "true", "Content-Type", "application/json"}
	httpReq := func(target string) Request {
		hr := httptest.NewRequest("GET", target, nil)
		for i := 0; i+1 < len(hdr); i += 2 {
			hr.Header.Add(hdr[i], hdr[i+1])
		}
		return HTTPRequest(hr)
	}
	for _, bm := range []struct {
		name string
		srv  *Server
		c    Conn
		r    Request
	}{
		{"default/fields", def, plain("10.1.2.3"), get("/books/1?x=1", hdr...)},
		{"default/http", def, plain("10.1.2.3"), httpReq("/books/1?x=1")},
		{"default/meshed", def, client, get("/books/1", hdr...)},
		{"50authz-10routes/fields", big, client, get("/api/books?x=1", hdr...)},
		{"50authz-10routes/http", big, client, httpReq("/api/books?x=1")},
		{"50authz-10routes/regex-fields", big, client, get("/api/v1/users/42", "X-Canary", "false")},
		{"50authz-10routes/regex-http", big, client, httpReq("/api/v1/users/42")},
		{"50authz-10routes/last-route", big, client, get("/other/path", hdr...)},
		{"50authz-10routes/route-authz", big, plain("10.1.2.3"), get("/books/5/index", hdr...)},
	} {
		b.Run(bm.name, func(b *testing.B) {
			if d := bm.srv.AllowRequest(bm.c, bm.r); !d.Allowed {
				b.Fatalf("denied: %+v", d)
			}
			b.ReportAllocs()
			for b.Loop() {
				sink = bm.srv.AllowRequest(bm.c, bm.r)
			}
		})
	}
	// Denials allocate their reason (404s do not).
	b.Run("50authz-10routes/denied", func(b *testing.B) {
		b.ReportAllocs()
		c := meshed("10.1.2.3", id("shop", "stranger"))
		r := get("/api/books", hdr...)
		for b.Loop() {
			sink = big.AllowRequest(c, r)
		}
	})
}

func BenchmarkAllowConn(b *testing.B) {
	def := mustDecode(b, defaultPolicy("all-unauthenticated"))
	big := bigPolicy(b)
	for _, bm := range []struct {
		name string
		srv  *Server
		c    Conn
	}{
		{"default", def, plain("10.1.2.3")},
		{"50authz", big, meshed("10.1.2.3", id("shop", "client-49"))},
	} {
		b.Run(bm.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				sink = bm.srv.AllowConn(bm.c)
			}
		})
	}
}

func BenchmarkStoreLookup(b *testing.B) {
	st := NewStore(Pending(""))
	for p := range uint16(8) {
		st.Set(8080+p, mustDecode(b, defaultPolicy("all-authenticated")))
	}
	b.ReportAllocs()
	var srv *Server
	for b.Loop() {
		srv, _ = st.Lookup(8083)
	}
	_ = srv
}

func BenchmarkDecode(b *testing.B) {
	m := &policyv1.InboundServer{Server: pref("server", "web-http")}
	for i := range 50 {
		m.Authorizations = append(m.Authorizations, meshTLS(fmt.Sprint("authz-", i), []string{id("shop", fmt.Sprint("client-", i))}, nil))
	}
	msg := marshal(b, m)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(msg); err != nil {
			b.Fatal(err)
		}
	}
}

// TestDecisionsDoNotAllocate guards what the benchmarks show: admitted
// requests and connections, and 404s, allocate nothing on either request
// path.
func TestDecisionsDoNotAllocate(t *testing.T) {
	def, big, pending := mustDecode(t, defaultPolicy("all-unauthenticated")), bigPolicy(t), Pending("")
	routed := mustDecode(t, &policyv1.InboundServer{HttpRoutes: []*policyv1.HttpRoute{httpRoute("r", []*policyv1.HttpMatch{{Path: exact("/r")}})}})
	client, anon := meshed("10.1.2.3", id("shop", "client-49")), plain("10.1.2.3")
	hr := httptest.NewRequest("GET", "/api/v1/users/42?x=1", nil)
	hr.Header.Set("X-Canary", "false")
	fast, std := get("/api/v1/users/42?x=1", "Host", "web", "X-Canary", "true"), HTTPRequest(hr)
	for _, tt := range []struct {
		name string
		srv  *Server
		c    Conn
		r    Request
		want int
	}{
		{"default, fields", def, anon, fast, 0},
		{"default, http", def, anon, std, 0},
		{"routes, fields", big, client, fast, 0},
		{"routes, http", big, client, std, 0},
		{"pending", pending, anon, fast, 0},
		{"no route", routed, client, fast, 404},
	} {
		var d Decision
		if n := testing.AllocsPerRun(100, func() { d = tt.srv.AllowRequest(tt.c, tt.r) }); n != 0 {
			t.Errorf("%s: %v allocations per request decision", tt.name, n)
		}
		if d.Status != tt.want {
			t.Errorf("%s: %+v", tt.name, d)
		}
		if n := testing.AllocsPerRun(100, func() { d = tt.srv.AllowConn(tt.c) }); n != 0 && tt.want == 0 {
			t.Errorf("%s: %v allocations per connection decision", tt.name, n)
		}
	}
}
