package proxy

import (
	"context"
	"io"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch/httpmatchtest"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
)

// fakeRoutes is a RouteSource with fixed tables.
type fakeRoutes map[string]*routes.Table

func (f fakeRoutes) Lookup(_ context.Context, authority string) *routes.Table { return f[authority] }

// Outbound routes of the tests: the books Service (HTTP) and the grpc one.
const (
	booksSvc  = "books.shop.svc.cluster.local:80"
	booksV1   = "books-v1.shop.svc.cluster.local:80"
	booksV2   = "books-v2.shop.svc.cluster.local:80"
	plainSvc  = "plain.shop.svc.cluster.local:80" // no routes
	grpcSvc   = "grpc.shop.svc.cluster.local:80"
	grpcV1    = "grpc-v1.shop.svc.cluster.local:80"
	grpcV2    = "grpc-v2.shop.svc.cluster.local:80"
	testSvcGo = "/grpc.testing.TestService/"
	timedSvc  = "timed.shop.svc.cluster.local:80" // no routes, a Service timeout
)

func mkRoute(name string, created int64, rules ...*destinationv1.OutboundRule) *destinationv1.OutboundRoute {
	return &destinationv1.OutboundRoute{Ref: &policyv1.Ref{Kind: "httproute", Name: name, Namespace: "shop"}, Rules: rules, CreatedUnixNano: created}
}

func outRule(m *policyv1.HttpMatch, bs ...*destinationv1.Backend) *destinationv1.OutboundRule {
	return &destinationv1.OutboundRule{Matches: []*policyv1.HttpMatch{m}, Backends: bs}
}

func outBackend(authority string, weight uint32) *destinationv1.Backend {
	return &destinationv1.Backend{Authority: authority, Weight: weight}
}

func setHeader(request bool, name, value string) *destinationv1.Filter {
	m := &destinationv1.HeaderModifier{Set: []*destinationv1.Header{{Name: name, Value: value}}}
	if request {
		return &destinationv1.Filter{Kind: &destinationv1.Filter_RequestHeaderModifier{RequestHeaderModifier: m}}
	}
	return &destinationv1.Filter{Kind: &destinationv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: m}}
}

// decodeRoutes marshals m with the generated types and decodes it as the
// proxy does.
func decodeRoutes(t testing.TB, authority string, m *destinationv1.OutboundRoutes) *routes.Table {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	tb, err := routes.Decode(authority, b)
	if err != nil {
		t.Fatal(err)
	}
	return tb
}

func testRoutes(t testing.TB) fakeRoutes {
	prefix := func(p string) *policyv1.HttpMatch { return &policyv1.HttpMatch{Path: httpmatchtest.Prefix(p)} }
	hdrRule := outRule(prefix("/hdr"), outBackend(booksV1, 1))
	hdrRule.Filters = []*destinationv1.Filter{setHeader(true, "x-route", "rule"), setHeader(false, "x-resp", "rule")}
	hdrRule.Backends[0].Filters = []*destinationv1.Filter{setHeader(true, "x-backend", "v1")}
	redirect := outRule(prefix("/old"))
	redirect.Filters = []*destinationv1.Filter{{Kind: &destinationv1.Filter_RequestRedirect{RequestRedirect: &destinationv1.Redirect{
		Hostname: "example.com", StatusCode: 301}}}, setHeader(false, "x-resp", "redirect")}
	timed := outRule(prefix("/t/"), outBackend(booksV1, 1))
	timed.Policy = &destinationv1.RoutePolicy{RequestTimeoutMs: 200}
	books := &destinationv1.OutboundRoutes{Found: true, Routes: []*destinationv1.OutboundRoute{
		mkRoute("books-split", 100, outRule(prefix("/split"), outBackend(booksV1, 10), outBackend(booksV2, 90))),
		mkRoute("books-paths", 200,
			outRule(prefix("/api"), outBackend(booksV1, 1)),
			outRule(&policyv1.HttpMatch{Path: httpmatchtest.Exact("/api/exact")}, outBackend(booksV2, 1))),
		mkRoute("books-redirect", 300, redirect),
		mkRoute("books-invalid", 400, outRule(prefix("/invalid"),
			&destinationv1.Backend{Authority: "gone.shop.svc.cluster.local:80", Weight: 1, Invalid: "Service gone not found"})),
		mkRoute("books-hdr", 500, hdrRule),
		mkRoute("books-timeout", 600, timed),
	}}
	grpcHdr := outRule(&policyv1.HttpMatch{Path: httpmatchtest.Prefix(testSvcGo), Headers: []*policyv1.HeaderMatch{httpmatchtest.Header("x-test", "hdr")}},
		outBackend(grpcV1, 1))
	grpcHdr.Filters = []*destinationv1.Filter{setHeader(true, "x-route", "grpc-rule")}
	grpcTimed := outRule(&policyv1.HttpMatch{Path: httpmatchtest.Prefix(testSvcGo), Headers: []*policyv1.HeaderMatch{httpmatchtest.Header("x-test", "timed")}},
		outBackend(grpcV1, 1))
	grpcTimed.Policy = &destinationv1.RoutePolicy{RequestTimeoutMs: 200}
	grpcRoutes := &destinationv1.OutboundRoutes{Found: true, Routes: []*destinationv1.OutboundRoute{
		mkRoute("grpc-split", 100, outRule(prefix(testSvcGo), outBackend(grpcV1, 10), outBackend(grpcV2, 90)), grpcHdr, grpcTimed,
			outRule(&policyv1.HttpMatch{Path: httpmatchtest.Exact(testSvcGo + "EmptyCall")},
				&destinationv1.Backend{Authority: "gone.shop.svc.cluster.local:80", Weight: 1, Invalid: "Service gone not found"})),
	}}
	// A Service without routes whose own policy has a timeout.
	slowSvc := &destinationv1.OutboundRoutes{Found: true, ServicePolicy: &destinationv1.RoutePolicy{RequestTimeoutMs: 200}}
	return fakeRoutes{booksSvc: decodeRoutes(t, booksSvc, books), grpcSvc: decodeRoutes(t, grpcSvc, grpcRoutes),
		timedSvc: decodeRoutes(t, timedSvc, slowSvc)}
}

// echoBackend answers "name path x-route x-backend".
func echoBackend(t testing.TB, name string) string {
	return startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/partial") {
			io.WriteString(w, "part")
			http.NewResponseController(w).Flush()
			<-r.Context().Done()
			return
		}
		if strings.HasSuffix(r.URL.Path, "/slow") {
			select {
			case <-r.Context().Done():
				return
			case <-time.After(5 * time.Second):
			}
		}
		io.WriteString(w, name+" "+r.URL.Path+" host="+r.Host+" x-route="+r.Header.Get("X-Route")+" x-backend="+r.Header.Get("X-Backend"))
	}))
}

type routedProxy struct {
	p        *Proxy
	v1, v2   string // backend addresses
	def      string // the books Service's own endpoint
	plainEnd string
}

func startRoutedProxy(t *testing.T, cfg Config) routedProxy {
	rp := routedProxy{v1: echoBackend(t, "v1"), v2: echoBackend(t, "v2"), def: echoBackend(t, "books"), plainEnd: echoBackend(t, "plain")}
	cfg.Resolver = &fakeResolver{eps: map[string][]resolve.Endpoint{
		booksSvc: {{Addr: rp.def}}, booksV1: {{Addr: rp.v1}}, booksV2: {{Addr: rp.v2}}, plainSvc: {{Addr: rp.plainEnd}}, timedSvc: {{Addr: rp.plainEnd}},
	}}
	cfg.Routes = testRoutes(t)
	rp.p = startProxy(t, cfg)
	return rp
}

// do sends one request to the outbound listener as authority host.
func do(t testing.TB, c *http.Client, p *Proxy, host, path string) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+path, nil)
	req.Host = host
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

// wantShare checks that backend v1 took 10 % (±3) of n requests and v2
// the rest.
func wantShare(t *testing.T, n int, pick func() string) {
	t.Helper()
	counts := map[string]int{}
	for range n {
		counts[pick()]++
	}
	share := float64(counts["v1"]) / float64(n) * 100
	if counts["v1"]+counts["v2"] != n || share < 7 || share > 13 {
		t.Errorf("%d requests: %v; v1 took %.2f %%, want 10 ± 3", n, counts, share)
	}
	t.Logf("%d requests: %v (v1 %.2f %%)", n, counts, share)
}

// TestOutboundRouteSplit: a 10 %/90 % split between two backend
// authorities, counted on the HTTP/1.1 fast path and on net/http's path.
func TestOutboundRouteSplit(t *testing.T) {
	for _, path := range []struct {
		name string
		cfg  Config
		n    int
	}{{"h1-fast", Config{}, 10000}, {"net-http", Config{DisableFastPath: true}, 2000}} {
		t.Run(path.name, func(t *testing.T) {
			n := path.n
			if testing.Short() {
				n = 2000
			}
			rp := startRoutedProxy(t, path.cfg)
			c := newClient(t)
			wantShare(t, n, func() string {
				resp, body := do(t, c, rp.p, "Books.shop.svc.cluster.local", "/split/x")
				name, _, _ := strings.Cut(body, " ")
				if resp.StatusCode != 200 || !strings.Contains(body, " host=Books.shop.svc.cluster.local ") {
					t.Fatalf("status %d, body %q (the request's Host is not changed)", resp.StatusCode, body)
				}
				return name
			})
			wantMetric(t, rp.p, float64(n), "request_total", `direction="outbound"`, `authority="books.shop.svc.cluster.local:80"`,
				`route_kind="httproute"`, `route_name="books-split"`)
			text := scrape(t, rp.p)
			for _, addr := range []string{rp.v1, rp.v2} {
				if metricSum(text, "response_total", `route_name="books-split"`, `target_addr="`+addr+`"`, `status_code="200"`) == 0 {
					t.Errorf("no response_total of route books-split to %s:\n%s", addr, text)
				}
			}
		})
	}
}

// httpPaths are the proxy's HTTP request paths and a client for each.
var httpPaths = []struct {
	name   string
	cfg    Config
	client func(testing.TB) *http.Client
}{
	{"h1-fast", Config{}, newClient},
	{"net-http", Config{DisableFastPath: true}, newClient},
	{"h2-fast", Config{}, newH2CClient},
	{"net-http-h2", Config{DisableFastPath: true}, newH2CClient},
}

// TestOutboundRouteRules: precedence, redirects, invalid backends, header
// modifiers, labels and requests without routes, on each HTTP path.
func TestOutboundRouteRules(t *testing.T) {
	for _, path := range httpPaths {
		t.Run(path.name, func(t *testing.T) {
			obs := &routeObserver{}
			path.cfg.Observer = obs
			rp := startRoutedProxy(t, path.cfg)
			c := path.client(t)
			c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
			const host = "books.shop.svc.cluster.local"

			// (b) An exact path beats a prefix.
			if _, body := do(t, c, rp.p, host, "/api/exact"); !strings.HasPrefix(body, "v2 /api/exact") {
				t.Errorf("/api/exact: %q, want the exact rule's v2", body)
			}
			if _, body := do(t, c, rp.p, host, "/api/other"); !strings.HasPrefix(body, "v1 /api/other") {
				t.Errorf("/api/other: %q, want the prefix rule's v1", body)
			}
			// No rule matches: the Service itself.
			if _, body := do(t, c, rp.p, host, "/nothing"); !strings.HasPrefix(body, "books /nothing") {
				t.Errorf("/nothing: %q, want the Service's own endpoint", body)
			}

			// (c) A redirect, never forwarded.
			resp, body := do(t, c, rp.p, host, "/old/page?q=1")
			if resp.StatusCode != 301 || resp.Header.Get("Location") != "http://example.com/old/page?q=1" || body != "" ||
				resp.Header.Get("X-Resp") != "redirect" {
				t.Errorf("redirect: %d Location %q X-Resp %q body %q", resp.StatusCode, resp.Header.Get("Location"), resp.Header.Get("X-Resp"), body)
			}

			// (d) An invalid backend: 500 with the reason.
			resp, body = do(t, c, rp.p, host, "/invalid")
			if resp.StatusCode != 500 || !strings.Contains(resp.Header.Get(ErrorHeader), "Service gone not found") {
				t.Errorf("invalid backend: %d %s=%q body %q", resp.StatusCode, ErrorHeader, resp.Header.Get(ErrorHeader), body)
			}

			// (e) Request header modifiers (the rule's, then the
			// backend's) reach the backend; the rule's response modifier
			// the client. Twice, on the same connection.
			for i := range 2 {
				resp, body = do(t, c, rp.p, host, "/hdr")
				if body != "v1 /hdr host="+host+" x-route=rule x-backend=v1" || resp.Header.Get("X-Resp") != "rule" {
					t.Errorf("header modifiers, request %d: body %q, X-Resp %q", i, body, resp.Header.Get("X-Resp"))
				}
			}
			if _, body := do(t, c, rp.p, host, "/api/after"); !strings.HasPrefix(body, "v1 /api/after host="+host+" x-route= ") {
				t.Errorf("after a modified request: %q", body)
			}

			// A request timeout: 504 after 200 ms, counted; within it,
			// answered. Then the Service's own timeout (no routes).
			start := time.Now()
			resp, body = do(t, c, rp.p, host, "/t/slow")
			if resp.StatusCode != 504 || resp.Header.Get(ErrorHeader) != "request timeout" || time.Since(start) > 3*time.Second {
				t.Errorf("timeout: %d %q after %v", resp.StatusCode, body, time.Since(start))
			}
			if resp, body := do(t, c, rp.p, host, "/t/ok"); resp.StatusCode != 200 || !strings.HasPrefix(body, "v1 /t/ok") {
				t.Errorf("within the timeout: %d %q", resp.StatusCode, body)
			}
			if resp, body := do(t, c, rp.p, "timed.shop.svc.cluster.local", "/slow"); resp.StatusCode != 504 {
				t.Errorf("Service timeout: %d %q", resp.StatusCode, body)
			}
			// Past the timeout with the response begun: the stream is cut.
			req, _ := http.NewRequest("GET", "http://"+rp.p.OutboundAddr()+"/t/partial", nil)
			req.Host = host
			if resp, err := c.Do(req); err != nil {
				t.Errorf("partial: %v", err)
			} else {
				b, err := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || err == nil {
					t.Errorf("partial: %d %q %v, want the body cut", resp.StatusCode, b, err)
				}
			}
			// The HTTP/1.1 fast path serves all of it itself.
			if n := rp.p.h1HandedOff.Load(); path.name == "h1-fast" && n != 0 {
				t.Errorf("the HTTP/1.1 fast path handed %d connections to net/http's path, want none", n)
			}
			wantMetric(t, rp.p, 1, "response_total", `route_name="books-timeout"`, `status_code="200"`, `classification="failure"`)
			wantMetric(t, rp.p, 3, "conduit_proxy_errors_total", `error="request_timeout"`)
			wantMetric(t, rp.p, 1, "response_total", `route_name="books-timeout"`, `status_code="504"`)

			// (g) No table: as without routes.
			if resp, body := do(t, c, rp.p, "plain.shop.svc.cluster.local", "/split/x"); resp.StatusCode != 200 || !strings.HasPrefix(body, "plain /split/x") {
				t.Errorf("no routes: %d %q", resp.StatusCode, body)
			}

			// (f) Route labels on the routed series only.
			wantMetric(t, rp.p, 1, "response_total", `authority="books.shop.svc.cluster.local:80"`, `route_kind="httproute"`,
				`route_name="books-paths"`, `target_addr="`+rp.v2+`"`, `status_code="200"`)
			wantMetric(t, rp.p, 3, "request_total", `route_name="books-paths"`)
			wantMetric(t, rp.p, 1, "response_total", `route_name="books-redirect"`, `status_code="301"`)
			wantMetric(t, rp.p, 1, "response_total", `route_name="books-invalid"`, `status_code="500"`)
			wantMetric(t, rp.p, 2, "response_total", `route_name="books-hdr"`, `status_code="200"`)
			wantMetric(t, rp.p, 1, "conduit_proxy_errors_total", `error="invalid_backend"`)
			text := scrape(t, rp.p)
			for _, line := range strings.Split(text, "\n") {
				if strings.Contains(line, `authority="plain.shop.svc.cluster.local:80"`) && strings.Contains(line, "route_") ||
					strings.Contains(line, `authority="books.shop.svc.cluster.local:80"`) && strings.Contains(line, `target_addr="`+rp.def+`"`) && strings.Contains(line, "route_") {
					t.Errorf("a series of requests without a route has route labels: %s", line)
				}
			}
			if metricSum(text, "request_total", `authority="plain.shop.svc.cluster.local:80"`, `target_addr="`+rp.plainEnd+`"`) != 1 {
				t.Errorf("no plain series:\n%s", text)
			}

			// Tap sees the route.
			obs.mu.Lock()
			defer obs.mu.Unlock()
			for _, want := range []string{"/api/exact httproute/books-paths " + rp.v2, "/old/page httproute/books-redirect invalid AddrPort",
				"/nothing / " + rp.def, "/split/x / " + rp.plainEnd} {
				if !slices.Contains(obs.seen, want) {
					t.Errorf("tap did not see %q: %q", want, obs.seen)
				}
			}
		})
	}
}

// TestOutboundRouteGRPC: the split, a request header modifier and an
// invalid backend (INTERNAL) on the HTTP/2 fast path and net/http's.
func TestOutboundRouteGRPC(t *testing.T) {
	t.Run("h2-fast", func(t *testing.T) { testOutboundRouteGRPC(t, Config{}) })
	t.Run("net-http", func(t *testing.T) { testOutboundRouteGRPC(t, Config{DisableFastPath: true}) })
}

func testOutboundRouteGRPC(t *testing.T, cfg Config) {
	var mu sync.Mutex
	seen := map[string]int{}
	var lastRoute string
	svc := &grpcService{}
	v1, v2 := startGRPCServer(t, "v1", &mu, seen, &lastRoute, svc), startGRPCServer(t, "v2", &mu, seen, &lastRoute, &grpcService{})
	cfg.Resolver = &fakeResolver{eps: map[string][]resolve.Endpoint{grpcV1: {{Addr: v1}}, grpcV2: {{Addr: v2}}}}
	cfg.Routes = testRoutes(t)
	p := startProxy(t, cfg)
	client := dialGRPC(t, p.OutboundAddr(), grpc.WithAuthority("grpc.shop.svc.cluster.local"))
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	n := 2000
	if testing.Short() {
		n = 1000
	}
	for range n {
		if _, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	share := float64(seen["v1"]) / float64(n) * 100
	if seen["v1"]+seen["v2"] != n || share < 7 || share > 13 {
		t.Errorf("%d calls: %v; v1 took %.2f %%, want 10 ± 3", n, seen, share)
	}
	t.Logf("%d calls: %v (v1 %.2f %%)", n, seen, share)
	mu.Unlock()

	// The timed rule: DEADLINE_EXCEEDED after 200 ms, the call cancelled
	// upstream.
	start := time.Now()
	sctx := metadata.AppendToOutgoingContext(ctx, "x-test", "timed", "sleep", "1")
	if _, err := client.UnaryCall(sctx, &testpb.SimpleRequest{}); status.Code(err) != codes.DeadlineExceeded || time.Since(start) > 3*time.Second {
		t.Errorf("timeout: %v after %v, want DEADLINE_EXCEEDED after 200 ms", err, time.Since(start))
	}
	waitFor(t, "the backend to see the cancel", func() bool {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		return svc.canceled == 1
	})
	wantMetric(t, p, 1, "conduit_proxy_errors_total", `error="request_timeout"`)
	wantMetric(t, p, 1, "response_total", `route_name="grpc-split"`, `grpc_status="4"`, `classification="failure"`)
	// Within the timeout: answered.
	if _, err := client.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-test", "timed"), &testpb.SimpleRequest{}); err != nil {
		t.Errorf("within the timeout: %v", err)
	}

	// The header rule: its modifier reaches v1.
	if _, err := client.UnaryCall(metadata.AppendToOutgoingContext(ctx, "x-test", "hdr"), &testpb.SimpleRequest{}); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	if lastRoute != "v1 grpc-rule" {
		t.Errorf("header modifier: the backends saw %q, want v1 grpc-rule", lastRoute)
	}
	mu.Unlock()

	// An invalid backend: INTERNAL, trailers-only, with the reason.
	var hdr metadata.MD
	_, err := client.EmptyCall(ctx, &testpb.Empty{}, grpc.Trailer(&hdr))
	if status.Code(err) != codes.Internal || !strings.Contains(status.Convert(err).Message(), "Service gone not found") {
		t.Errorf("invalid backend: %v, want INTERNAL", err)
	}
	if got := hdr.Get(ErrorHeader); len(got) != 1 || !strings.Contains(got[0], "Service gone not found") {
		t.Errorf("invalid backend: %s = %q", ErrorHeader, got)
	}
	wantMetric(t, p, float64(n+2), "response_total", `authority="grpc.shop.svc.cluster.local:80"`, `route_kind="httproute"`,
		`route_name="grpc-split"`, `grpc_status="0"`)
	wantMetric(t, p, 1, "response_total", `route_name="grpc-split"`, `grpc_status="13"`, `classification="failure"`)
}

// startGRPCServer serves the interop TestService, counting the calls it
// gets as name and noting the x-route metadata it saw.
func startGRPCServer(t *testing.T, name string, mu *sync.Mutex, seen map[string]int, lastRoute *string, svc *grpcService) string {
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		md, _ := metadata.FromIncomingContext(ctx)
		mu.Lock()
		seen[name]++
		if v := md.Get("x-route"); len(v) > 0 {
			*lastRoute = name + " " + v[0]
		}
		mu.Unlock()
		return h(ctx, req)
	}))
	testpb.RegisterTestServiceServer(srv, svc)
	return serveGRPC(t, srv)
}

// routeObserver records the route and destination of each request.
type routeObserver struct {
	mu   sync.Mutex
	seen []string
}

func (o *routeObserver) Active() bool { return true }

func (o *routeObserver) RequestStarted(req *Request) Observation {
	o.mu.Lock()
	o.seen = append(o.seen, req.Path+" "+req.RouteKind+"/"+req.RouteName+" "+req.Destination.String())
	o.mu.Unlock()
	return nil
}

// TestOutboundFailureAccrual: a Service's consecutive failure accrual takes
// an endpoint that answers 5xx out of the balancer, on each HTTP path, and
// fails fast (503) when every endpoint is out.
func TestOutboundFailureAccrual(t *testing.T) {
	const flakySvc, deadSvc = "flaky.shop.svc.cluster.local:80", "dead.shop.svc.cluster.local:80"
	accrual := &destinationv1.FailureAccrual{ConsecutiveMaxFailures: 2, MinPenaltyMs: 60000, MaxPenaltyMs: 60000}
	for _, path := range httpPaths {
		t.Run(path.name, func(t *testing.T) {
			var mu sync.Mutex
			hits := map[string]int{}
			backend := func(name string, status int) string {
				return startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					mu.Lock()
					hits[name]++
					mu.Unlock()
					w.WriteHeader(status)
				}))
			}
			bad, good, dead, noAccrual := backend("bad", 500), backend("good", 200), backend("dead", 500), backend("no-accrual", 500)
			cfg := path.cfg
			cfg.Resolver = &fakeResolver{eps: map[string][]resolve.Endpoint{
				flakySvc: {{Addr: bad}, {Addr: good}}, deadSvc: {{Addr: dead}}, plainSvc: {{Addr: noAccrual}},
			}}
			cfg.Routes = fakeRoutes{
				flakySvc: decodeRoutes(t, flakySvc, &destinationv1.OutboundRoutes{Found: true, FailureAccrual: accrual}),
				deadSvc:  decodeRoutes(t, deadSvc, &destinationv1.OutboundRoutes{Found: true, FailureAccrual: accrual}),
			}
			p := startProxy(t, cfg)
			c := path.client(t)
			send := func(host string, n int) map[int]int {
				statuses := map[int]int{}
				for range n {
					resp, _ := do(t, c, p, host, "/")
					statuses[resp.StatusCode]++
					if resp.StatusCode == 503 && resp.Header.Get(ErrorHeader) != errAllUnavailable.msg {
						t.Errorf("503 %s=%q", ErrorHeader, resp.Header.Get(ErrorHeader))
					}
				}
				return statuses
			}
			// One endpoint, always 500: out after 2 failures, then every
			// request fails fast.
			if got := send("dead.shop.svc.cluster.local", 6); got[500] != 2 || got[503] != 4 {
				t.Errorf("dead: %v, want 2 × 500 then 4 fail-fast 503s", got)
			}
			// Without failure accrual: as before.
			if got := send("plain.shop.svc.cluster.local", 6); got[500] != 6 {
				t.Errorf("no accrual: %v, want 6 × 500", got)
			}
			// A bad and a good endpoint: the bad one gets at most 2.
			if got := send("flaky.shop.svc.cluster.local", 40); got[200] < 38 || got[503] != 0 {
				t.Errorf("flaky: %v", got)
			}
			mu.Lock()
			if hits["dead"] != 2 || hits["bad"] > 2 || hits["no-accrual"] != 6 {
				t.Errorf("backend hits %v", hits)
			}
			mu.Unlock()
			wantMetric(t, p, 4, "conduit_proxy_errors_total", `error="failure_accrual"`)
		})
	}
}
