package authz

import (
	"fmt"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// decide runs r through both request paths (the fast path's fields and
// net/http's request) and fails unless they agree.
func decide(t *testing.T, s *Server, c Conn, method, target string, hdr ...string) Decision {
	t.Helper()
	d := s.AllowRequest(c, req(method, target, hdr...))
	hr := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(hdr); i += 2 {
		hr.Header.Add(hdr[i], hdr[i+1])
	}
	if d2 := s.AllowRequest(c, HTTPRequest(hr)); d2 != d {
		t.Fatalf("%s %s: the fast path decided %+v, net/http's %+v", method, target, d, d2)
	}
	return d
}

// want checks a decision: allowed by authz (a ref name), or denied with
// status and a reason containing reason.
type want struct {
	allowed bool
	authz   string
	route   string
	status  int
	reason  string
}

func check(t *testing.T, what string, d Decision, w want) {
	t.Helper()
	switch {
	case d.Allowed != w.allowed:
		t.Errorf("%s: allowed=%v, want %v (%+v)", what, d.Allowed, w.allowed, d)
	case w.allowed && (d.Status != 0 || d.Reason != "" || d.Authz.Name != w.authz):
		t.Errorf("%s: allowed by %+v (status %d, reason %q), want authz %q", what, d.Authz, d.Status, d.Reason, w.authz)
	case !w.allowed && (d.Status != w.status || !strings.Contains(d.Reason, w.reason) || d.Authz != Ref{}):
		t.Errorf("%s: denied %d %q by %+v, want %d and a reason with %q", what, d.Status, d.Reason, d.Authz, w.status, w.reason)
	case w.route != "" && d.Route.Name != w.route:
		t.Errorf("%s: route %+v, want %q", what, d.Route, w.route)
	}
}

func allow(authz string) want        { return want{allowed: true, authz: authz} }
func deny(reason string) want        { return want{status: 403, reason: reason} }
func allowVia(authz, rt string) want { return want{allowed: true, authz: authz, route: rt} }

func TestAuthorizations(t *testing.T) {
	server := func(authz ...*policyv1.Authorization) *Server {
		return mustDecode(t, &policyv1.InboundServer{Server: pref("server", "web-http"), Authorizations: authz})
	}
	tests := []struct {
		name   string
		srv    *Server
		client Conn
		want   want
	}{
		// Exact identities.
		{"identity listed", server(meshTLS("ids", []string{id("shop", "web"), id("shop", "books")}, nil)),
			meshed("10.1.2.3", id("shop", "books")), allow("ids")},
		{"identity not listed", server(meshTLS("ids", []string{id("shop", "web")}, nil)),
			meshed("10.1.2.3", id("shop", "webx")), deny("server web-http does not admit client " + id("shop", "webx"))},
		{"identity of another trust domain", server(meshTLS("ids", []string{id("shop", "web")}, nil)),
			meshed("10.1.2.3", "spiffe://evil.example/ns/shop/sa/web"), deny("does not admit client spiffe://evil.example/")},
		{"plaintext client of an identity", server(meshTLS("ids", []string{id("shop", "web")}, nil)),
			plain("10.1.2.3"), deny("server web-http requires mesh TLS (client 10.1.2.3 came in plaintext: not meshed, or its proxy cannot reach its controller)")},
		{"TLS without an identity", server(meshTLS("ids", []string{id("shop", "web")}, nil)),
			Conn{Client: netip.MustParseAddr("10.1.2.3"), TLS: true}, deny("requires mesh TLS")},
		{"identity without TLS is no identity", server(meshTLS("ids", []string{id("shop", "web")}, nil)),
			Conn{Client: netip.MustParseAddr("10.1.2.3"), Identity: id("shop", "web")}, deny("requires mesh TLS")},
		// Prefixes: a namespace's every ServiceAccount.
		{"prefix", server(meshTLS("ns", nil, []string{td + "/ns/shop/sa/"})),
			meshed("10.1.2.3", id("shop", "web")), allow("ns")},
		{"prefix of another namespace", server(meshTLS("ns", nil, []string{td + "/ns/shop/sa/"})),
			meshed("10.1.2.3", id("shopx", "web")), deny("does not admit client")},
		{"prefix of another trust domain", server(meshTLS("ns", nil, []string{td + "/ns/shop/sa/"})),
			meshed("10.1.2.3", "spiffe://other.example/ns/shop/sa/web"), deny("does not admit client")},
		{"prefix is not a substring", server(meshTLS("ns", nil, []string{"/ns/shop/sa/"})),
			meshed("10.1.2.3", id("shop", "web")), deny("does not admit client")},
		{"empty prefix: any authenticated", server(meshTLS("any", nil, []string{""})),
			meshed("10.1.2.3", id("x", "y")), allow("any")},
		{"empty prefix: not the unauthenticated", server(meshTLS("any", nil, []string{""})),
			plain("10.1.2.3"), deny("requires mesh TLS")},
		{"no identities nor prefixes admits nobody", server(meshTLS("none", nil, nil)),
			meshed("10.1.2.3", id("x", "y")), deny("does not admit client")},
		// Unauthenticated admits either.
		{"unauthenticated: plaintext", server(unauthenticated("open")), plain("192.168.1.1"), allow("open")},
		{"unauthenticated: meshed", server(unauthenticated("open")), meshed("192.168.1.1", id("a", "b")), allow("open")},
		// Networks.
		{"in CIDR", server(unauthenticated("net", &policyv1.Network{Cidr: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}})),
			plain("10.2.3.4"), allow("net")},
		{"in the CIDR's except", server(unauthenticated("net", &policyv1.Network{Cidr: "10.0.0.0/8", Except: []string{"10.1.0.0/16"}})),
			plain("10.1.2.3"), deny("server web-http admits no client from 10.1.2.3")},
		{"outside the CIDR", server(unauthenticated("net", nets("10.0.0.0/8")...)),
			plain("192.168.1.1"), deny("admits no client from 192.168.1.1")},
		{"in a second network", server(unauthenticated("net", nets("10.0.0.0/8", "192.168.0.0/16")...)),
			plain("192.168.1.1"), allow("net")},
		{"IPv6 in CIDR", server(unauthenticated("net", nets("fd00::/8")...)), plain("fd00::1"), allow("net")},
		{"IPv6 outside", server(unauthenticated("net", nets("fd00::/8")...)), plain("2001:db8::1"), deny("admits no client from 2001:db8::1")},
		{"IPv4 client not in ::/0", server(unauthenticated("net", nets("::/0")...)), plain("10.1.1.1"), deny("admits no client")},
		{"IPv4-mapped client counts as IPv4", server(unauthenticated("net", nets("10.0.0.0/8")...)), plain("::ffff:10.2.3.4"), allow("net")},
		{"IPv4-mapped network counts as IPv4", server(unauthenticated("net", nets("::ffff:10.0.0.0/104")...)), plain("10.2.3.4"), allow("net")},
		{"a single address as network", server(unauthenticated("net", nets("10.9.9.9", "fd00::9")...)), plain("fd00::9"), allow("net")},
		{"unmasked CIDR", server(unauthenticated("net", nets("10.9.9.9/8")...)), plain("10.1.1.1"), allow("net")},
		{"invalid client address", server(unauthenticated("net", nets("0.0.0.0/0")...)), Conn{}, deny("admits no client from an invalid address")},
		// Networks and authentication both.
		{"identity from outside the networks", server(meshTLS("both", nil, []string{""}, nets("10.0.0.0/8")...)),
			meshed("192.168.1.1", id("a", "b")), deny("admits no client from 192.168.1.1")},
		{"plaintext from inside the networks", server(meshTLS("both", nil, []string{""}, nets("10.0.0.0/8")...)),
			plain("10.1.1.1"), deny("requires mesh TLS")},
		{"identity from inside the networks", server(meshTLS("both", nil, []string{""}, nets("10.0.0.0/8")...)),
			meshed("10.1.1.1", id("a", "b")), allow("both")},
		// Several.
		{"the first that admits names the decision", server(meshTLS("first", nil, []string{""}), unauthenticated("second")),
			meshed("10.1.1.1", id("a", "b")), allow("first")},
		{"the second admits what the first does not", server(meshTLS("first", nil, []string{""}), unauthenticated("second")),
			plain("10.1.1.1"), allow("second")},
		{"an authentication the proxy does not know admits nobody", server(&policyv1.Authorization{Ref: pref("authorizationpolicy", "future")}),
			plain("10.1.1.1"), deny("admits no client")},
		{"no authorizations", server(), meshed("10.1.1.1", id("a", "b")), deny("server web-http admits no client")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			check(t, "request", decide(t, tt.srv, tt.client, "GET", "/"), tt.want)
			d := tt.srv.AllowConn(tt.client)
			check(t, "connection", d, tt.want)
			if d.Route != (Ref{}) {
				t.Errorf("a connection decision names route %+v", d.Route)
			}
		})
	}
}

// TestManyIdentities: with many exact identities the set indexes them;
// its answers must be the ones the authorizations give in order.
func TestManyIdentities(t *testing.T) {
	m := &policyv1.InboundServer{Server: pref("server", "big")}
	for i := range 50 {
		var a *policyv1.Authorization
		switch {
		case i == 25:
			a = unauthenticated("open-25", nets("192.168.0.0/16")...)
		case i == 30:
			a = meshTLS("prefix-30", nil, []string{td + "/ns/x/"})
		case i%2 == 1:
			a = meshTLS(fmt.Sprint("odd-", i), []string{id("ns", fmt.Sprint("sa", i)), id("ns", "shared")}, nil, nets("10.0.0.0/8")...)
		default:
			a = meshTLS(fmt.Sprint("even-", i), []string{id("ns", fmt.Sprint("sa", i)), id("ns", "shared")}, nil)
		}
		m.Authorizations = append(m.Authorizations, a)
	}
	s := mustDecode(t, m)
	if s.authz.exact == nil {
		t.Fatal("50 identities are not indexed")
	}
	linear := authzSet{list: s.authz.list}
	clients := []Conn{plain("192.168.1.1"), plain("10.1.1.1"), meshed("10.1.1.1", id("ns", "shared")),
		meshed("192.168.1.1", id("ns", "shared")), meshed("172.16.0.1", id("ns", "shared")),
		meshed("10.1.1.1", id("x", "special")), meshed("172.16.0.1", id("x", "special")), meshed("192.168.1.1", id("x", "special"))}
	for i := range 52 {
		clients = append(clients, meshed("10.1.1.1", id("ns", fmt.Sprint("sa", i))), meshed("172.16.0.1", id("ns", fmt.Sprint("sa", i))))
	}
	for _, c := range clients {
		addr := c.Client.Unmap()
		if got, want := s.authz.admit(&c, addr), linear.admit(&c, addr); got != want {
			t.Errorf("%s from %s: the index admits by %d, the list in order by %d", c.Identity, c.Client, got, want)
		}
	}
	check(t, "sa41", s.AllowConn(meshed("10.1.1.1", id("ns", "sa41"))), allow("odd-41"))
	check(t, "sa41 outside its network", s.AllowConn(meshed("172.16.0.1", id("ns", "sa41"))), deny("does not admit client"))
	check(t, "sa44 anywhere", s.AllowConn(meshed("172.16.0.1", id("ns", "sa44"))), allow("even-44"))
	check(t, "shared from outside 10/8", s.AllowConn(meshed("172.16.0.1", id("ns", "shared"))), allow("even-0"))
	check(t, "plaintext", s.AllowConn(plain("192.168.1.1")), allow("open-25"))
	check(t, "prefix", s.AllowConn(meshed("172.16.0.1", id("x", "special"))), allow("prefix-30"))
}

func TestRoutes(t *testing.T) {
	m := &policyv1.InboundServer{
		Server:         &policyv1.Ref{Kind: "server", Name: "web-http", Namespace: "shop"},
		Authorizations: []*policyv1.Authorization{meshTLS("port", []string{id("shop", "web")}, nil)},
		HttpRoutes: []*policyv1.HttpRoute{
			httpRoute("api", []*policyv1.HttpMatch{{Path: prefix("/api")}}, meshTLS("api-clients", nil, []string{td + "/ns/shop/sa/traf"})),
			httpRoute("admin", []*policyv1.HttpMatch{{Path: exact("/admin")}, {Path: prefix("/admin/")}},
				meshTLS("ops", []string{id("ops", "admin")}, nil)),
			httpRoute("public", []*policyv1.HttpMatch{{Path: exact("/healthz"), Method: "GET"}}, unauthenticated("anyone")),
		},
	}
	s := mustDecode(t, m)
	web, traffic, ops := meshed("10.1.1.1", id("shop", "web")), meshed("10.1.1.2", id("shop", "traffic")),
		meshed("10.1.1.3", id("ops", "admin"))

	d := decide(t, s, traffic, "GET", "/api/books?x=1")
	check(t, "route authz", d, allowVia("api-clients", "api"))
	if d.Server != (Ref{Kind: "server", Name: "web-http", Namespace: "shop"}) || d.Route.Kind != "httproute" || d.Authz.Kind != "authorizationpolicy" {
		t.Errorf("decision refs %+v", d)
	}
	check(t, "port authz on a route", decide(t, s, web, "GET", "/api/books"), allowVia("port", "api"))
	check(t, "port authz on another route", decide(t, s, web, "GET", "/admin/users"), allowVia("port", "admin"))
	check(t, "route authz of another route", decide(t, s, ops, "GET", "/admin"), allowVia("ops", "admin"))
	check(t, "a route's authz is not another's", decide(t, s, traffic, "GET", "/admin/users"),
		deny("unauthorized: httproute admin of server web-http does not admit client "+id("shop", "traffic")))
	check(t, "ops on api", decide(t, s, ops, "GET", "/api"), deny("httproute api of server web-http"))
	check(t, "unauthenticated route", decide(t, s, plain("192.168.1.1"), "GET", "/healthz"), allowVia("anyone", "public"))
	check(t, "unauthenticated on another route", decide(t, s, plain("192.168.1.1"), "GET", "/api"), deny("requires mesh TLS"))

	for _, r := range []struct{ method, target string }{
		{"GET", "/"}, {"GET", "/apix"}, {"GET", "/administrator"}, {"POST", "/healthz"}, {"GET", "/healthz/"},
	} {
		d := decide(t, s, web, r.method, r.target)
		if d.Allowed || d.Status != 404 || d.Reason != "not found: no route of server web-http matches the request" || d.Route != (Ref{}) || d.Authz != (Ref{}) {
			t.Errorf("%s %s: %+v, want 404", r.method, r.target, d)
		}
	}
	// Opaque connections see only the port's authorizations.
	check(t, "opaque, port authz", s.AllowConn(web), allow("port"))
	check(t, "opaque, route authz only", s.AllowConn(traffic), deny("server web-http does not admit client"))
	check(t, "opaque, unauthenticated route", s.AllowConn(plain("192.168.1.1")), deny("requires mesh TLS"))
}

// TestRoutePrecedence: Gateway API's order — exact path, then (ours) a
// regex path, then the longest prefix, then a method, then the most
// headers, then the most query parameters; ties keep the order received.
func TestRoutePrecedence(t *testing.T) {
	route := func(name string, ms ...*policyv1.HttpMatch) *policyv1.HttpRoute {
		return httpRoute(name, ms, unauthenticated(name))
	}
	s := mustDecode(t, &policyv1.InboundServer{Server: pref("server", "web"), HttpRoutes: []*policyv1.HttpRoute{
		route("everything"), // no matches: every request
		route("query", &policyv1.HttpMatch{Path: prefix("/api"), Headers: []*policyv1.HeaderMatch{header("x-canary", "true")},
			QueryParams: []*policyv1.QueryParamMatch{queryParam("v", "2")}}),
		route("header", &policyv1.HttpMatch{Path: prefix("/api"), Headers: []*policyv1.HeaderMatch{header("x-canary", "true")}}),
		route("post", &policyv1.HttpMatch{Path: prefix("/api"), Method: "POST"}),
		route("api", &policyv1.HttpMatch{Path: prefix("/api/")}),
		route("v1", &policyv1.HttpMatch{Path: prefix("/api/v1")}),
		route("regex", &policyv1.HttpMatch{Path: regex(`/api/v[0-9]+/users`)}),
		route("exact", &policyv1.HttpMatch{Path: exact("/api/v1/users")}),
		route("dup-1", &policyv1.HttpMatch{Path: prefix("/dup")}),
		route("dup-2", &policyv1.HttpMatch{Path: prefix("/dup")}),
		route("two-matches", &policyv1.HttpMatch{Path: prefix("/")}, &policyv1.HttpMatch{Path: exact("/two")}),
		route("two-prefix", &policyv1.HttpMatch{Path: prefix("/two")}),
		route("grpc-method", &policyv1.HttpMatch{Path: exact("/shop.Books/Get")}),
		route("grpc-service", &policyv1.HttpMatch{Path: prefix("/shop.Books/")}),
	}})
	tests := []struct {
		method, target string
		hdr            []string
		route          string
	}{
		{"GET", "/api/v1/users", nil, "exact"},
		{"GET", "/api/v2/users", nil, "regex"},
		{"GET", "/api/v2/users/1", nil, "api"},
		{"GET", "/api/v1/other", nil, "v1"},
		{"GET", "/api/v1", nil, "v1"},
		{"GET", "/api/v10", nil, "api"},
		{"GET", "/api", nil, "api"},
		{"GET", "/api/", nil, "api"},
		{"GET", "/api?x=1", nil, "api"},
		{"POST", "/api/x", nil, "post"},
		{"POST", "/api/x", []string{"X-Canary", "true"}, "post"},
		{"GET", "/api/x", []string{"X-Canary", "true"}, "header"},
		{"GET", "/api/x?v=2", []string{"x-canary", "true"}, "query"},
		{"GET", "/api/x?v=3", []string{"x-canary", "true"}, "header"},
		{"GET", "/api/v1/users", []string{"x-canary", "true"}, "exact"},
		{"GET", "/apix", nil, "everything"},
		{"GET", "/", nil, "everything"},
		{"DELETE", "/other/path", nil, "everything"},
		{"GET", "/dup/x", nil, "dup-1"},
		{"GET", "/two", nil, "two-matches"},
		{"GET", "/two/x", nil, "two-prefix"},
		{"POST", "/shop.Books/Get", nil, "grpc-method"},
		{"POST", "/shop.Books/List", nil, "grpc-service"},
		{"GET", "http://web.shop:8080/api/v1/users?x", nil, "exact"},
		{"GET", "http://web.shop:8080", nil, "everything"},
		{"GET", "http://web.shop:8080?x=1", nil, "everything"},
		{"GET", "https://web.shop/two", nil, "two-matches"},
		{"CONNECT", "web.shop:443", nil, "everything"},
		{"OPTIONS", "*", nil, "everything"},
	}
	for _, tt := range tests {
		check(t, tt.method+" "+tt.target, decide(t, s, plain("10.1.1.1"), tt.method, tt.target, tt.hdr...), allowVia(tt.route, tt.route))
	}
}

func TestHeaderAndQueryMatches(t *testing.T) {
	s := mustDecode(t, &policyv1.InboundServer{Server: pref("server", "web"), HttpRoutes: []*policyv1.HttpRoute{
		httpRoute("exact-header", []*policyv1.HttpMatch{{Headers: []*policyv1.HeaderMatch{header("X-Tenant", "blue")}}}, unauthenticated("a")),
		httpRoute("regex-header", []*policyv1.HttpMatch{{Headers: []*policyv1.HeaderMatch{headerRegex("x-version", `v[12]`)}}}, unauthenticated("b")),
		httpRoute("first-name-only", []*policyv1.HttpMatch{{Headers: []*policyv1.HeaderMatch{header("x-dup", "one"), header("X-DUP", "two")}}}, unauthenticated("c")),
		httpRoute("exact-query", []*policyv1.HttpMatch{{QueryParams: []*policyv1.QueryParamMatch{queryParam("q", "a b/c")}}}, unauthenticated("d")),
		httpRoute("regex-query", []*policyv1.HttpMatch{{QueryParams: []*policyv1.QueryParamMatch{queryRegex("id", `[0-9]+`)}}}, unauthenticated("e")),
		httpRoute("present-header", []*policyv1.HttpMatch{{Headers: []*policyv1.HeaderMatch{{Name: "x-present"}}}}, unauthenticated("f")),
		httpRoute("host", []*policyv1.HttpMatch{{Headers: []*policyv1.HeaderMatch{header("host", "example.com")}, Path: exact("/host")}}, unauthenticated("g")),
	}})
	tests := []struct {
		target string
		hdr    []string
		route  string // "" for 404
	}{
		{"/", []string{"x-tenant", "blue"}, "exact-header"},
		{"/", []string{"X-TENANT", "blue"}, "exact-header"},
		{"/", []string{"x-tenant", "Blue"}, ""},
		{"/", []string{"x-tenant", "green", "x-tenant", "blue"}, "exact-header"},
		{"/", []string{"x-version", "v1"}, "regex-header"},
		{"/", []string{"x-version", "v12"}, ""}, // anchored
		{"/", []string{"x-version", "xv1"}, ""},
		{"/", []string{"x-dup", "one"}, "first-name-only"},
		{"/", []string{"x-dup", "two"}, ""},
		{"/?q=a%20b%2Fc", nil, "exact-query"},
		{"/?q=a+b/c", nil, "exact-query"},
		{"/?x=1&q=a+b/c&y", nil, "exact-query"},
		{"/?q=a+b/c&q=other", nil, "exact-query"},
		{"/?q=other&q=a+b/c", nil, ""}, // the first q counts
		{"/?Q=a+b/c", nil, ""},
		{"/?q=a+b/cd", nil, ""},
		{"/?q", nil, ""},
		{"/?id=42", nil, "regex-query"},
		{"/?id=%34%32", nil, "regex-query"},
		{"/?id=42x", nil, ""},
		{"/?%69d=7", nil, "regex-query"},
		{"/?id=%zz", nil, ""},
		{"/", []string{"x-present", ""}, "present-header"},
		{"/", nil, ""},
		{"/host", nil, "host"}, // httptest's Host is example.com
	}
	for _, tt := range tests {
		hdr := tt.hdr
		if tt.target == "/host" {
			hdr = []string{"Host", "example.com"} // what the fast path sees
		}
		d := decide(t, s, plain("10.1.1.1"), "GET", tt.target, hdr...)
		if tt.route == "" {
			if d.Status != 404 {
				t.Errorf("GET %s %q: %+v, want 404", tt.target, tt.hdr, d)
			}
			continue
		}
		if !d.Allowed || d.Route.Name != tt.route {
			t.Errorf("GET %s %q: %+v, want route %s", tt.target, tt.hdr, d, tt.route)
		}
	}
}

// TestDefaultPolicies: the cluster defaults as the controller sends them,
// and the pending policies the proxy starts with.
func TestDefaultPolicies(t *testing.T) {
	meshedIn, meshedOut := meshed("10.1.1.1", id("a", "b")), meshed("192.168.1.1", id("a", "b"))
	plainIn, plainOut := plain("10.1.1.1"), plain("192.168.1.1")
	tests := []struct {
		policy string
		client Conn
		want   want
	}{
		{"all-unauthenticated", plainOut, allow("all-unauthenticated")},
		{"all-unauthenticated", meshedOut, allow("all-unauthenticated")},
		{"all-unauthenticated", plain("2001:db8::1"), allow("all-unauthenticated")},
		{"cluster-unauthenticated", plainIn, allow("cluster-unauthenticated")},
		{"cluster-unauthenticated", plain("fd00::1"), allow("cluster-unauthenticated")},
		{"cluster-unauthenticated", plainOut, deny("default cluster-unauthenticated admits no client from 192.168.1.1")},
		{"all-authenticated", meshedOut, allow("all-authenticated")},
		{"all-authenticated", plainIn, deny("default all-authenticated requires mesh TLS")},
		{"cluster-authenticated", meshedIn, allow("cluster-authenticated")},
		{"cluster-authenticated", meshedOut, deny("admits no client from 192.168.1.1")},
		{"cluster-authenticated", plainIn, deny("requires mesh TLS")},
		{"deny", meshedIn, deny("unauthorized: default deny admits no client")},
		{"deny", plainIn, deny("unauthorized: default deny admits no client")},
	}
	for _, tt := range tests {
		s := mustDecode(t, defaultPolicy(tt.policy))
		what := fmt.Sprintf("%s, client %s %q", tt.policy, tt.client.Client, tt.client.Identity)
		check(t, what+", request", decide(t, s, tt.client, "GET", "/books"), tt.want)
		check(t, what+", connection", s.AllowConn(tt.client), tt.want)
		if s.FailClosed() != (tt.policy != "all-unauthenticated") || s.Ref() != (Ref{Kind: "default", Name: tt.policy}) {
			t.Errorf("%s: decoded as %v, fail closed %v", tt.policy, s.Ref(), s.FailClosed())
		}
	}

	// Kubelet probes pass under deny.
	s := mustDecode(t, defaultPolicy("deny"))
	for _, path := range []string{"/ready", "/live"} {
		d := decide(t, s, plainIn, "GET", path)
		check(t, "probe "+path, d, allowVia("probe", "probe"))
		if d.Authz.Kind != "default" || d.Route.Kind != "probe" {
			t.Errorf("probe %s: %+v", path, d)
		}
	}
	check(t, "POST to a probe path", decide(t, s, plainIn, "POST", "/ready"), deny("default deny admits no client"))
	check(t, "probe path on an opaque connection", s.AllowConn(plainIn), deny("default deny admits no client"))

	// Before the port's policy arrives.
	for _, def := range []string{"", "all-unauthenticated"} {
		p := Pending(def)
		check(t, "pending "+def, p.AllowRequest(plainOut, get("/x")), allowVia("all-unauthenticated", "default"))
		check(t, "pending "+def, p.AllowConn(meshedOut), allow("all-unauthenticated"))
		if !p.Pending() || p.FailClosed() || p.Ref().Name != "all-unauthenticated" {
			t.Errorf("Pending(%q) = %v", def, p)
		}
	}
	for _, def := range []string{"all-authenticated", "cluster-unauthenticated", "cluster-authenticated", "deny"} {
		p := Pending(def)
		why := "unauthorized: default " + def + " fails closed until the controller sends this port's policy"
		check(t, "pending "+def, p.AllowRequest(meshedIn, get("/x")), deny(why))
		check(t, "pending "+def, p.AllowConn(meshedIn), deny(why))
		if !p.FailClosed() {
			t.Errorf("Pending(%q) does not fail closed", def)
		}
	}
}

func TestDenialReasonIsSafe(t *testing.T) {
	s := mustDecode(t, &policyv1.InboundServer{Server: pref("server", "web"),
		Authorizations: []*policyv1.Authorization{meshTLS("ids", []string{id("a", "b")}, nil)}})
	for _, identity := range []string{"spiffe://x/\r\nSet-Cookie: a=b\x00\xff", strings.Repeat("é", 1000)} {
		d := s.AllowConn(meshed("10.1.1.1", identity))
		if d.Allowed || len(d.Reason) > 400 {
			t.Fatalf("%+v", d)
		}
		for i := 0; i < len(d.Reason); i++ {
			if c := d.Reason[i]; c < 0x20 || c >= 0x7f {
				t.Fatalf("reason %q has byte %#x", d.Reason, c)
			}
		}
	}
	if got := sanitize(id("a", "b")); got != id("a", "b") {
		t.Errorf("sanitize changed a clean identity: %q", got)
	}
}

func TestProtocolAndRefs(t *testing.T) {
	for v, want := range map[policyv1.Protocol]Protocol{
		policyv1.Protocol_DETECT: ProtocolDetect, policyv1.Protocol_HTTP1: ProtocolHTTP1, policyv1.Protocol_HTTP2: ProtocolHTTP2,
		policyv1.Protocol_GRPC: ProtocolGRPC, policyv1.Protocol_OPAQUE: ProtocolOpaque, 99: ProtocolDetect, -1: ProtocolDetect,
	} {
		s := mustDecode(t, &policyv1.InboundServer{Protocol: v})
		if s.Protocol() != want {
			t.Errorf("protocol %v decoded as %v, want %v", v, s.Protocol(), want)
		}
	}
	for r, want := range map[Ref]string{
		{}: "", {Kind: "server", Name: "web"}: "server web", {Name: "web"}: "web", {Kind: "default"}: "default",
	} {
		if r.String() != want {
			t.Errorf("%#v.String() = %q, want %q", r, r.String(), want)
		}
	}
	s := mustDecode(t, &policyv1.InboundServer{Protocol: policyv1.Protocol_HTTP2,
		Authorizations: []*policyv1.Authorization{unauthenticated("a")}})
	if d := s.AllowRequest(plain("10.1.1.1"), get("/")); !d.Allowed || d.Server != (Ref{}) {
		t.Errorf("a server without a ref: %+v", d)
	}
	if d := mustDecode(t, &policyv1.InboundServer{}).AllowConn(plain("10.1.1.1")); d.Reason != "unauthorized: the port's policy admits no client" {
		t.Errorf("an empty policy: %+v", d)
	}
	if got := s.String(); got != " (HTTP/2, 1 authorizations, 0 routes)" {
		t.Errorf("String() = %q", got)
	}
}
