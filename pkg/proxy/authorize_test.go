package proxy

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"

	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"github.com/conduitmesh/conduit/pkg/proxy/tlsconf"
)

// The policies the tests serve, as the controller would send them.

func decodePolicy(t testing.TB, m *policyv1.InboundServer) *authz.Server {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	s, err := authz.Decode(b)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func server(name string, authzs ...*policyv1.Authorization) *policyv1.InboundServer {
	return &policyv1.InboundServer{Server: &policyv1.Ref{Kind: "server", Name: name, Namespace: "shop"}, Authorizations: authzs}
}

func unauthenticatedFrom(name string, cidrs ...string) *policyv1.Authorization {
	a := &policyv1.Authorization{Ref: &policyv1.Ref{Kind: "authorizationpolicy", Name: name},
		Authentication: &policyv1.Authorization_Unauthenticated{Unauthenticated: &policyv1.Unauthenticated{}}}
	for _, c := range cidrs {
		a.Networks = append(a.Networks, &policyv1.Network{Cidr: c})
	}
	return a
}

func meshTLSOf(name string, ids ...string) *policyv1.Authorization {
	return &policyv1.Authorization{Ref: &policyv1.Ref{Kind: "authorizationpolicy", Name: name},
		Authentication: &policyv1.Authorization_MeshTls{MeshTls: &policyv1.MeshTLS{Identities: ids}}}
}

func portOf(t testing.TB, addr string) uint16 {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(p)
	if err != nil {
		t.Fatal(err)
	}
	return uint16(n)
}

// TestInboundPolicyHTTP: on both HTTP paths a request the port's policy
// refuses gets 403 naming the server (gRPC: PERMISSION_DENIED), never
// reaches the application and is counted; a policy change applies to the
// next request; a port with routes answers 404 to what no route matches.
func TestInboundPolicyHTTP(t *testing.T) {
	reached := 0
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reached++
		io.WriteString(w, "ok")
	}))
	grpcApp, _ := startGRPCBackend(t)
	store := authz.NewStore(authz.Pending(""))
	// Loopback clients are outside the only network allowed.
	store.Set(portOf(t, app), decodePolicy(t, server("web-http", unauthenticatedFrom("pods", "10.0.0.0/8"))))
	store.Set(portOf(t, grpcApp), decodePolicy(t, server("web-grpc", unauthenticatedFrom("pods", "10.0.0.0/8"))))
	seen := &decisions{}
	p := startProxy(t, Config{InboundTarget: app, Policy: store, Observer: seen})
	gp := startProxy(t, Config{InboundTarget: grpcApp, Policy: store})

	get := func(c *http.Client, path string) (*http.Response, string) {
		t.Helper()
		resp, err := c.Get("http://" + p.InboundAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for _, c := range []*http.Client{newClient(t), newH2CClient(t)} {
		resp, _ := get(c, "/")
		why := resp.Header.Get(ErrorHeader)
		if resp.StatusCode != http.StatusForbidden || !strings.Contains(why, "server web-http") {
			t.Errorf("%s denied request: %d %q, want 403 naming server web-http", resp.Proto, resp.StatusCode, why)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, err := dialGRPC(t, gp.InboundAddr()).UnaryCall(ctx, &testpb.SimpleRequest{})
	if st, _ := status.FromError(err); st.Code() != codes.PermissionDenied || !strings.Contains(st.Message(), "server web-grpc") {
		t.Errorf("denied gRPC call: %v, want PERMISSION_DENIED naming server web-grpc", err)
	}
	if reached != 0 {
		t.Errorf("the application got %d denied requests", reached)
	}
	wantMetric(t, p, 2, "inbound_http_authz_deny_total", `srv_kind="server"`, `srv_name="web-http"`, `tls="false"`)
	wantMetric(t, gp, 1, "inbound_http_authz_deny_total", `srv_name="web-grpc"`)
	wantMetric(t, p, 2, "conduit_proxy_errors_total", `direction="inbound"`, `error="unauthorized"`)

	// The policy changes: the next request is admitted, and counted with
	// the authorization that admitted it.
	store.Set(portOf(t, app), decodePolicy(t, server("web-http", unauthenticatedFrom("local", "127.0.0.0/8", "::1/128"))))
	for _, c := range []*http.Client{newClient(t), newH2CClient(t)} {
		if resp, body := get(c, "/"); resp.StatusCode != 200 || body != "ok" {
			t.Errorf("%s admitted request: %d %q", resp.Proto, resp.StatusCode, body)
		}
	}
	wantMetric(t, p, 2, "inbound_http_authz_allow_total", `srv_name="web-http"`, `authz_kind="authorizationpolicy"`, `authz_name="local"`,
		`route_kind="default"`, `route_name="default"`)

	// Routes: /api is open to anyone; nothing else is routed.
	withRoutes := server("web-http")
	withRoutes.HttpRoutes = []*policyv1.HttpRoute{{
		Ref:            &policyv1.Ref{Kind: "httproute", Name: "api"},
		Matches:        []*policyv1.HttpMatch{{Path: &policyv1.PathMatch{Kind: &policyv1.PathMatch_Prefix{Prefix: "/api"}}}},
		Authorizations: []*policyv1.Authorization{unauthenticatedFrom("anyone")},
	}}
	store.Set(portOf(t, app), decodePolicy(t, withRoutes))
	for _, c := range []*http.Client{newClient(t), newH2CClient(t)} {
		if resp, body := get(c, "/api/books?id=1"); resp.StatusCode != 200 || body != "ok" {
			t.Errorf("%s routed request: %d %q", resp.Proto, resp.StatusCode, body)
		}
		resp, _ := get(c, "/admin")
		if why := resp.Header.Get(ErrorHeader); resp.StatusCode != http.StatusNotFound || !strings.Contains(why, "no route") {
			t.Errorf("%s unrouted request: %d %q, want 404", resp.Proto, resp.StatusCode, why)
		}
	}
	wantMetric(t, p, 2, "inbound_http_authz_allow_total", `route_kind="httproute"`, `route_name="api"`, `authz_name="anyone"`)
	// The inbound series carry the route too (HTTP/1.1 and HTTP/2; the
	// 404s matched none).
	wantMetric(t, p, 2, "response_total", `direction="inbound"`, `route_kind="httproute"`, `route_name="api"`, `status_code="200"`)
	wantMetric(t, p, 0, "response_total", `direction="inbound"`, `route_name="default"`)
	// Observers (tap) see each decision, on both paths.
	got := seen.list()
	want := []string{"denied 403 server web-http", "denied 403 server web-http",
		"allowed authorizationpolicy local", "allowed authorizationpolicy local",
		"allowed authorizationpolicy anyone", "denied 404 server web-http",
		"allowed authorizationpolicy anyone", "denied 404 server web-http"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("observed decisions:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if reached != 4 {
		t.Errorf("the application got %d requests, want the 4 admitted", reached)
	}
}

// TestInboundPolicyMeshed: a policy naming an identity admits that meshed
// client through mTLS and refuses another meshed client and a plaintext
// one.
func TestInboundPolicyMeshed(t *testing.T) {
	const (
		trafficID = "spiffe://cluster.local/ns/shop/sa/traffic"
		otherID   = "spiffe://cluster.local/ns/shop/sa/other"
		webID     = "spiffe://cluster.local/ns/shop/sa/web"
	)
	ca := newTestCA(t)
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	store := authz.NewStore(authz.Pending(""))
	store.Set(portOf(t, app), decodePolicy(t, server("web-http", meshTLSOf("traffic-only", trafficID))))
	web := startProxy(t, Config{InboundTarget: app, TLS: newProvider(t, ca, webID), Policy: store})
	res := &fakeResolver{eps: map[string][]resolve.Endpoint{"web:80": {{Addr: web.InboundAddr(), Identity: webID}}}}
	traffic := startProxy(t, Config{Resolver: res, TLS: newProvider(t, ca, trafficID)})
	other := startProxy(t, Config{Resolver: res, TLS: newProvider(t, ca, otherID)})

	get := func(addr string) *http.Response {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
		req.Host = "web"
		resp, err := newClient(t).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := get(traffic.OutboundAddr()); resp.StatusCode != 200 {
		t.Errorf("the identity the policy names: %d %q", resp.StatusCode, resp.Header.Get(ErrorHeader))
	}
	if resp := get(other.OutboundAddr()); resp.StatusCode != 403 || !strings.Contains(resp.Header.Get(ErrorHeader), otherID) {
		t.Errorf("another identity: %d %q, want 403 naming it", resp.StatusCode, resp.Header.Get(ErrorHeader))
	}
	if resp := get(web.InboundAddr()); resp.StatusCode != 403 || !strings.Contains(resp.Header.Get(ErrorHeader), "requires mesh TLS") {
		t.Errorf("a plaintext client: %d %q, want 403 (requires mesh TLS)", resp.StatusCode, resp.Header.Get(ErrorHeader))
	}
	wantMetric(t, web, 1, "inbound_http_authz_allow_total", `tls="true"`, `client_id="`+trafficID+`"`, `authz_name="traffic-only"`)
	wantMetric(t, web, 1, "inbound_http_authz_deny_total", `tls="true"`, `client_id="`+otherID+`"`)
	wantMetric(t, web, 1, "inbound_http_authz_deny_total", `tls="false"`)
}

// TestInboundPolicyOpaque: on an opaque port the mesh TLS of a meshed client
// is terminated (the application gets its own bytes: a server-first
// protocol works through it) and the connection is decided by identity; a
// refused connection is closed before it reaches the application.
func TestInboundPolicyOpaque(t *testing.T) {
	const (
		clientID = "spiffe://cluster.local/ns/shop/sa/traffic"
		dbID     = "spiffe://cluster.local/ns/shop/sa/db"
	)
	banner := func(c net.Conn) {
		io.WriteString(c, "220 ready\r\n")
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Write(buf[:n])
	}
	app := startTCPBackend(t, banner)
	port := portOf(t, app)
	ca := newTestCA(t)
	store := authz.NewStore(authz.Pending(""))
	store.Set(port, decodePolicy(t, server("db", meshTLSOf("traffic", clientID))))
	p := startProxy(t, Config{InboundTarget: app, OpaquePorts: []uint16{port}, TLS: newProvider(t, ca, dbID), Policy: store})

	talk := func(c net.Conn) (string, error) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 64)
		n, err := io.ReadAtLeast(c, buf, len("220 ready\r\n"))
		if err != nil {
			return string(buf[:n]), err
		}
		io.WriteString(c, "HELO")
		m, err := io.ReadAtLeast(c, buf[n:], 4)
		return string(buf[:n+m]), err
	}
	// The meshed client, as its proxy connects: mTLS with the mesh's ALPN.
	cfg := newProvider(t, ca, clientID).ClientConfig(dbID)
	cfg.NextProtos = []string{tlsconf.ALPN}
	tc, err := tls.Dial("tcp", p.InboundAddr(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer tc.Close()
	if got, err := talk(tc); err != nil || got != "220 ready\r\nHELO" {
		t.Errorf("meshed client of an opaque port: %q, %v", got, err)
	}
	// A plaintext client is refused: closed, no banner.
	c, err := net.Dial("tcp", p.InboundAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := talk(c); err == nil || got != "" {
		t.Errorf("refused client read %q, %v; want the connection closed", got, err)
	}
	wantMetric(t, p, 1, "inbound_tcp_authz_allow_total", `srv_name="db"`, `tls="true"`, `client_id="`+clientID+`"`, `authz_name="traffic"`)
	wantMetric(t, p, 1, "inbound_tcp_authz_deny_total", `srv_name="db"`, `tls="false"`)

	// Without a policy for the port (all-unauthenticated pending), the
	// plaintext server-first protocol still works.
	open := startProxy(t, Config{InboundTarget: app, OpaquePorts: []uint16{port}, TLS: newProvider(t, ca, dbID),
		Policy: authz.NewStore(authz.Pending("all-unauthenticated"))})
	c2, err := net.Dial("tcp", open.InboundAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	if got, err := talk(c2); err != nil || got != "220 ready\r\nHELO" {
		t.Errorf("plaintext client under all-unauthenticated: %q, %v", got, err)
	}
}

// TestInboundPolicyDeclaredHTTP: a port whose Server declares HTTP/1 (or
// gRPC) takes HTTP only: what detection does not take for HTTP gets a 400
// naming the Server instead of reaching the application as opaque TCP past
// the port's routes, and a TLS ClientHello is closed unanswered. Under
// detection (unknown) the same bytes are relayed as TCP, decided by the
// port's connection authorizations, as the Server's proxyProtocol
// documents. A request line of HTTP/1.2, which Go's net/http serves, is
// HTTP to detection, and the proxy answers it 505 on every port; so is a
// request line after empty lines, which many servers skip.
func TestInboundPolicyDeclaredHTTP(t *testing.T) {
	var mu sync.Mutex
	var reached []string
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		reached = append(reached, r.Proto+" "+r.URL.Path)
		mu.Unlock()
		io.WriteString(w, "ok")
	}))
	port := portOf(t, app)
	// Every loopback client is admitted to the port; /api is its only route.
	policy := func(proto policyv1.Protocol) *authz.Server {
		m := server("web-http", unauthenticatedFrom("local", "127.0.0.0/8", "::1/128"))
		m.Protocol = proto
		m.HttpRoutes = []*policyv1.HttpRoute{{
			Ref:     &policyv1.Ref{Kind: "httproute", Name: "api"},
			Matches: []*policyv1.HttpMatch{{Path: &policyv1.PathMatch{Kind: &policyv1.PathMatch_Prefix{Prefix: "/api"}}}},
		}}
		return decodePolicy(t, m)
	}
	store := authz.NewStore(authz.Pending(""))
	p := startProxy(t, Config{InboundTarget: app, Policy: store, DetectTimeout: 100 * time.Millisecond})
	dial := func() net.Conn {
		t.Helper()
		c, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	// raw sends req after pause and returns all the answer.
	raw := func(pause time.Duration, req string) string {
		t.Helper()
		c := dial()
		time.Sleep(pause)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		io.WriteString(c, req)
		b, _ := io.ReadAll(c)
		return string(b)
	}
	const (
		notHTTP = "HELLO web, this is not HTTP\r\n\r\n" // as long as an h2 preface
		http12  = "GET /admin HTTP/1.2\r\nHost: web\r\nConnection: close\r\n\r\n"
	)
	for _, proto := range []policyv1.Protocol{policyv1.Protocol_HTTP1, policyv1.Protocol_GRPC} {
		store.Set(port, policy(proto))
		got := raw(0, notHTTP)
		if !strings.HasPrefix(got, "HTTP/1.1 400 ") || !strings.Contains(got, ErrorHeader+": server web-http declares ") {
			t.Errorf("not HTTP, to a port declaring %v: %q, want 400 naming the server", proto, got)
		}
		if got := raw(0, http12); !strings.HasPrefix(got, "HTTP/1.1 505 ") {
			t.Errorf("HTTP/1.2 to a port declaring %v: %q, want 505", proto, got)
		}
	}
	// HTTP/1.1 is routed as before.
	c := newClient(t)
	for path, want := range map[string]int{"/api/books": 200, "/admin": 404} {
		resp, err := c.Get("http://" + p.InboundAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	// A client that connects ahead of its request, past the detect
	// timeout, is served as an HTTP server would; one that sends nothing
	// (a TCP probe) is closed as it leaves, not counted.
	if got := raw(300*time.Millisecond, "GET /api/early HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n"); !strings.HasPrefix(got, "HTTP/1.1 200 ") {
		t.Errorf("a request sent after the detect timeout: %q, want 200", got)
	}
	probe := dial()
	time.Sleep(300 * time.Millisecond)
	probe.Close()
	// A ClientHello that is not the mesh's: closed, with nothing written.
	tc := dial()
	tc.SetDeadline(time.Now().Add(5 * time.Second))
	if err := tls.Client(tc, &tls.Config{ServerName: "web", InsecureSkipVerify: true}).Handshake(); err == nil || !strings.Contains(err.Error(), "EOF") {
		t.Errorf("TLS to a port declaring HTTP/1: %v, want the connection closed", err)
	}
	wantMetric(t, p, 3, "conduit_proxy_errors_total", `direction="inbound"`, `error="not_http"`)
	mu.Lock()
	if want := []string{"HTTP/1.1 /api/books", "HTTP/1.1 /api/early"}; !slices.Equal(reached, want) {
		t.Errorf("the application got %q, want %q", reached, want)
	}
	mu.Unlock()

	// Detection: not HTTP, so a TCP stream under the port's connection
	// authorizations (the application, not the proxy, answers it).
	store.Set(port, policy(policyv1.Protocol_DETECT))
	if got := raw(0, notHTTP); !strings.HasPrefix(got, "HTTP/1.1 400 ") || strings.Contains(got, ErrorHeader) {
		t.Errorf("not HTTP, to a detecting port: %q, want it relayed to the application", got)
	}
	if got := raw(0, http12); !strings.HasPrefix(got, "HTTP/1.1 505 ") {
		t.Errorf("HTTP/1.2 to a detecting port: %q, want 505", got)
	}
	// Empty lines before a request line are HTTP's (RFC 9112 2.2): the
	// port's routes apply.
	if got := raw(0, "\r\n"+strings.Replace(http12, "HTTP/1.2", "HTTP/1.1", 1)); !strings.HasPrefix(got, "HTTP/1.1 404 ") || !strings.Contains(got, "no route") {
		t.Errorf("a request line after an empty line: %q, want the routes' 404", got)
	}
	wantMetric(t, p, 1, "inbound_tcp_authz_allow_total", `srv_name="web-http"`, `authz_name="local"`)
}

// TestInboundPolicyPendingFailsClosed: before the controller has sent a
// port's policy, a proxy whose default is not all-unauthenticated refuses.
func TestInboundPolicyPendingFailsClosed(t *testing.T) {
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	p := startProxy(t, Config{InboundTarget: app, Policy: authz.NewStore(authz.Pending("all-authenticated"))})
	resp, err := newClient(t).Get("http://" + p.InboundAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("pending policy under all-authenticated: %d, want 403", resp.StatusCode)
	}
}

// decisions records the policy decisions an Observer is told.
type decisions struct {
	mu  sync.Mutex
	got []string
}

func (d *decisions) Active() bool { return true }

func (d *decisions) RequestStarted(r *Request) Observation {
	s := "allowed " + r.Authz.Authz.String()
	if !r.Authz.Allowed {
		s = "denied " + strconv.Itoa(r.Authz.Status) + " " + r.Authz.Server.String()
	}
	d.mu.Lock()
	d.got = append(d.got, s)
	d.mu.Unlock()
	return nil
}

func (d *decisions) list() []string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]string(nil), d.got...)
}
