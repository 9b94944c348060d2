package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// awaitingResolver is a fakeResolver whose changes wake AwaitEndpoints, as
// the controller's Destination stream does (resolve.Awaiter).
type awaitingResolver struct {
	fakeResolver
	changed chan struct{} // closed and replaced by set; under mu
	waiters atomic.Int32  // AwaitEndpoints calls under way
}

func newAwaitingResolver(eps map[string][]resolve.Endpoint) *awaitingResolver {
	return &awaitingResolver{fakeResolver: fakeResolver{eps: eps}, changed: make(chan struct{})}
}

func (a *awaitingResolver) set(authority string, eps ...resolve.Endpoint) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.eps[authority] = eps
	close(a.changed)
	a.changed = make(chan struct{})
}

func (a *awaitingResolver) AwaitEndpoints(ctx context.Context, authority string) ([]resolve.Endpoint, error) {
	a.waiters.Add(1)
	defer a.waiters.Add(-1)
	for {
		// The channel first: a set between the two reads then wakes it.
		a.mu.Lock()
		changed := a.changed
		a.mu.Unlock()
		eps, err := a.Endpoints(ctx, authority)
		if err != nil || len(eps) > 0 {
			return eps, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return eps, nil
		}
	}
}

// TestOutboundAwaitsEndpoints: a request for a Service that discovery knows
// without a ready endpoint waits for one (a Deployment rolling out behind
// a new Service) instead of failing at once, on every HTTP path; one that
// none comes for gets 503 no endpoints available after the fail-fast
// timeout.
func TestOutboundAwaitsEndpoints(t *testing.T) {
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "books "+r.Proto)
	}))
	paths := []struct {
		name   string
		cfg    Config
		client func(testing.TB) *http.Client
		proto  string
	}{
		{"HTTP/1.1 fast path", Config{}, newClient, "HTTP/1.1"},
		{"net/http", Config{DisableFastPath: true}, newClient, "HTTP/1.1"},
		{"HTTP/2 fast path", Config{}, newH2CClient, "HTTP/2.0"},
	}
	for _, path := range paths {
		t.Run(path.name, func(t *testing.T) {
			res := newAwaitingResolver(map[string][]resolve.Endpoint{"books:80": {}, "never:80": {}})
			cfg := path.cfg
			cfg.Resolver, cfg.FailFastTimeout = res, 10*time.Second
			p := startProxy(t, cfg)
			c := path.client(t)
			get := func(host string) (*http.Response, string, error) {
				req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
				req.Host = host
				resp, err := c.Do(req)
				if err != nil {
					return nil, "", err
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				return resp, string(body), nil
			}
			type result struct {
				status int
				body   string
				err    error
			}
			done := make(chan result, 1)
			go func() {
				resp, body, err := get("books")
				if err != nil {
					done <- result{err: err}
					return
				}
				done <- result{resp.StatusCode, body, nil}
			}()
			// The request is held: nothing comes back until an endpoint
			// does (the fail-fast timeout is far off).
			waitFor(t, "the request to wait for an endpoint", func() bool { return res.waiters.Load() == 1 })
			wantMetric(t, p, 1, "outbound_endpoint_waiting", `authority="books:80"`)
			select {
			case r := <-done:
				t.Fatalf("answered before any endpoint: %+v", r)
			case <-time.After(200 * time.Millisecond):
			}
			res.set("books:80", resolve.Endpoint{Addr: app, Labels: map[string]string{"pod": "books-1"}})
			select {
			case r := <-done:
				if r.err != nil || r.status != 200 || r.body != "books "+path.proto {
					t.Fatalf("once an endpoint came: %+v, want 200 %q", r, "books "+path.proto)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("the request was not sent on once an endpoint came")
			}
			// Counted once, with the endpoint it went to.
			wantMetric(t, p, 1, "response_total", `direction="outbound"`, `authority="books:80"`, `dst_pod="books-1"`, `status_code="200"`)
			// And its wait, as ended by an endpoint.
			wantMetric(t, p, 0, "outbound_endpoint_waiting", `authority="books:80"`)
			wantMetric(t, p, 1, "outbound_endpoint_wait_total", `authority="books:80"`, `result="ready"`)
			wantMetric(t, p, 1, "outbound_endpoint_wait_total", `authority="books:80"`)
			wantMetric(t, p, 1, "outbound_endpoint_wait_ms_count", `authority="books:80"`)
			if ms := metricSum(scrape(t, p), "outbound_endpoint_wait_ms_sum", `authority="books:80"`); ms < 200 {
				t.Errorf("outbound_endpoint_wait_ms_sum = %v, want at least the 200 ms it was held", ms)
			}
		})
	}

	t.Run("none comes", func(t *testing.T) {
		res := newAwaitingResolver(map[string][]resolve.Endpoint{"never:80": {}})
		p := startProxy(t, Config{Resolver: res, FailFastTimeout: 300 * time.Millisecond})
		for _, c := range []*http.Client{newClient(t), newH2CClient(t)} {
			req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
			req.Host = "never"
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 503 || resp.Header.Get(ErrorHeader) != "no endpoints available" {
				t.Errorf("%s: %d %q, want 503 no endpoints available", resp.Proto, resp.StatusCode, resp.Header.Get(ErrorHeader))
			}
		}
		wantMetric(t, p, 2, "conduit_proxy_errors_total", `direction="outbound"`, `error="no_endpoints"`)
		wantMetric(t, p, 2, "response_total", `direction="outbound"`, `authority="never:80"`, `status_code="503"`)
		wantMetric(t, p, 2, "outbound_endpoint_wait_total", `authority="never:80"`, `result="no_endpoints"`)
		wantMetric(t, p, 2, "outbound_endpoint_wait_total", `authority="never:80"`)
	})

	// A request timeout shorter than the fail-fast timeout ends the wait:
	// the request has timed out, and every path says so (504), not 503.
	t.Run("the route's timeout first", func(t *testing.T) {
		res := newAwaitingResolver(map[string][]resolve.Endpoint{"never:80": {}})
		rts := fakeRoutes{"never:80": decodeRoutes(t, "never:80", &destinationv1.OutboundRoutes{Found: true,
			ServicePolicy: &destinationv1.RoutePolicy{RequestTimeoutMs: 100}})}
		for _, path := range paths {
			cfg := path.cfg
			cfg.Resolver, cfg.Routes, cfg.FailFastTimeout = res, rts, 10*time.Second
			p := startProxy(t, cfg)
			req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
			req.Host = "never"
			start := time.Now()
			resp, err := path.client(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 504 || resp.Header.Get(ErrorHeader) != "request timeout" {
				t.Errorf("%s: %d %q after %v, want 504 request timeout", path.name, resp.StatusCode, resp.Header.Get(ErrorHeader), time.Since(start))
			}
			wantMetric(t, p, 1, "conduit_proxy_errors_total", `direction="outbound"`, `error="request_timeout"`)
			wantMetric(t, p, 0, "conduit_proxy_errors_total", `direction="outbound"`, `error="no_endpoints"`)
			wantMetric(t, p, 1, "outbound_endpoint_wait_total", `authority="never:80"`, `result="timeout"`)
			wantMetric(t, p, 1, "outbound_endpoint_wait_total", `authority="never:80"`)
		}
	})

	// A request whose client goes away while it waits is not a timeout:
	// counted no_endpoints, as without a route timeout.
	t.Run("the client goes first", func(t *testing.T) {
		res := newAwaitingResolver(map[string][]resolve.Endpoint{"never:80": {}})
		rts := fakeRoutes{"never:80": decodeRoutes(t, "never:80", &destinationv1.OutboundRoutes{Found: true,
			ServicePolicy: &destinationv1.RoutePolicy{RequestTimeoutMs: 5000}})}
		p := startProxy(t, Config{Resolver: res, Routes: rts, FailFastTimeout: 10 * time.Second, DisableFastPath: true})
		ctx, cancel := context.WithCancel(context.Background())
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.OutboundAddr()+"/", nil)
		req.Host = "never"
		c := newClient(t)
		done := make(chan error, 1)
		go func() {
			resp, err := c.Do(req)
			if err == nil {
				resp.Body.Close()
				err = fmt.Errorf("answered %d", resp.StatusCode)
			}
			done <- err
		}()
		waitFor(t, "the request to wait for an endpoint", func() bool { return res.waiters.Load() == 1 })
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("after the client went away: %v", err)
		}
		wantMetric(t, p, 1, "conduit_proxy_errors_total", `direction="outbound"`, `error="no_endpoints"`)
		wantMetric(t, p, 0, "conduit_proxy_errors_total", `direction="outbound"`, `error="request_timeout"`)
		wantMetric(t, p, 1, "outbound_endpoint_wait_total", `authority="never:80"`, `result="canceled"`)
		wantMetric(t, p, 0, "outbound_endpoint_waiting", `authority="never:80"`)
	})
}

// TestH2StreamAwaitsAlone: on the HTTP/2 fast path a stream that waits for
// an endpoint holds up nobody else: the client's other streams on the same
// connection are served meanwhile. A gRPC call that no endpoint comes for
// ends UNAVAILABLE; one its client cancels while it waits is counted and
// gives back its request slot.
func TestH2StreamAwaitsAlone(t *testing.T) {
	addr, _ := startGRPCBackend(t)
	res := newAwaitingResolver(map[string][]resolve.Endpoint{"books:80": {}, "web:80": {{Addr: addr}}, "never:80": {}})
	// One request slot: a waiting stream that kept its slot would refuse
	// every later one.
	p := startProxy(t, Config{Resolver: res, FailFastTimeout: 10 * time.Second, MaxRequests: 1})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	client := dialGRPC(t, p.OutboundAddr())
	call := func(ctx context.Context, authority string) error {
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.CallAuthority(authority))
		return err
	}

	// A call cancelled while it waits: counted, its slot given back.
	cctx, ccancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() { errc <- call(cctx, "never:80") }()
	waitFor(t, "the call to wait for an endpoint", func() bool { return res.waiters.Load() == 1 })
	ccancel()
	if err := <-errc; status.Code(err) != codes.Canceled {
		t.Fatalf("cancelled call: %v", err)
	}
	waitFor(t, "the cancelled call's wait to end", func() bool { return res.waiters.Load() == 0 })
	wantMetric(t, p, 1, "response_total", `direction="outbound"`, `authority="never:80"`)

	// Two slots are needed from here on: one waits while the other runs.
	p2 := startProxy(t, Config{Resolver: res, FailFastTimeout: 10 * time.Second})
	client2 := dialGRPC(t, p2.OutboundAddr())
	go func() {
		_, err := client2.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.CallAuthority("books:80"))
		errc <- err
	}()
	waitFor(t, "the books call to wait for an endpoint", func() bool { return res.waiters.Load() == 1 })
	// The same connection serves another Service meanwhile.
	for range 3 {
		if _, err := client2.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.CallAuthority("web:80")); err != nil {
			t.Fatalf("a call on the same connection while another waits: %v", err)
		}
	}
	select {
	case err := <-errc:
		t.Fatalf("the waiting call ended before its endpoint came: %v", err)
	default:
	}
	res.set("books:80", resolve.Endpoint{Addr: addr})
	if err := <-errc; err != nil {
		t.Fatalf("the waiting call, once its endpoint came: %v", err)
	}

	// The first proxy's only slot was given back: it still serves.
	if err := call(ctx, "web:80"); err != nil {
		t.Fatalf("after a cancelled wait, with one request slot: %v", err)
	}
	// No endpoint ever: UNAVAILABLE once the fail-fast timeout passed.
	p3 := startProxy(t, Config{Resolver: res, FailFastTimeout: 200 * time.Millisecond})
	_, err := dialGRPC(t, p3.OutboundAddr()).UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.CallAuthority("never:80"))
	if status.Code(err) != codes.Unavailable || !strings.Contains(status.Convert(err).Message(), "no endpoints available") {
		t.Fatalf("no endpoint ever: %v, want UNAVAILABLE no endpoints available", err)
	}
	wantMetric(t, p3, 1, "response_total", `direction="outbound"`, `authority="never:80"`, `grpc_status="14"`)
}

// firstAnswer holds back the first answer about the authorities in slow
// until release, as the controller's first answer may take a while.
type firstAnswer struct {
	slow    map[string]bool
	release chan struct{}
}

func newFirstAnswer(slow ...string) firstAnswer {
	g := firstAnswer{slow: map[string]bool{}, release: make(chan struct{})}
	for _, a := range slow {
		g.slow[a] = true
	}
	return g
}

func (g *firstAnswer) pending(authority string) bool {
	select {
	case <-g.release:
		return false
	default:
		return g.slow[authority]
	}
}

// await waits until release; false when ctx ends first.
func (g *firstAnswer) await(ctx context.Context) bool {
	select {
	case <-g.release:
		return true
	case <-ctx.Done():
		return false
	}
}

// slowResolver is a fakeResolver whose discovery has not answered about
// the pending authorities yet (resolve.NowResolver): Endpoints of one of
// them waits until release, as destination.Resolver's first call waits for
// the controller.
type slowResolver struct {
	fakeResolver
	firstAnswer
	waiting atomic.Int32
}

func (r *slowResolver) EndpointsNow(authority string) ([]resolve.Endpoint, error) {
	if r.pending(authority) {
		return nil, resolve.ErrPending
	}
	return r.fakeResolver.Endpoints(context.Background(), authority)
}

func (r *slowResolver) Endpoints(ctx context.Context, authority string) ([]resolve.Endpoint, error) {
	if r.pending(authority) {
		r.waiting.Add(1)
		defer r.waiting.Add(-1)
		if !r.await(ctx) {
			return nil, ctx.Err()
		}
	}
	return r.fakeResolver.Endpoints(ctx, authority)
}

// TestH2FirstResolutionAlone: the first request for an authority whose
// discovery has not answered yet waits for it on a goroutine of its own,
// not on the HTTP/2 connection's reader: the client's calls to another
// Service on the same connection go on meanwhile.
func TestH2FirstResolutionAlone(t *testing.T) {
	addr, _ := startGRPCBackend(t)
	res := &slowResolver{
		fakeResolver: fakeResolver{eps: map[string][]resolve.Endpoint{"books:80": {{Addr: addr}}, "web:80": {{Addr: addr}}}},
		firstAnswer:  newFirstAnswer("books:80"),
	}
	p := startProxy(t, Config{Resolver: res})
	client := dialGRPC(t, p.OutboundAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	errc := make(chan error, 1)
	go func() {
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.CallAuthority("books:80"))
		errc <- err
	}()
	waitFor(t, "the books call to wait for discovery", func() bool { return res.waiting.Load() == 1 })
	for range 3 {
		cctx, ccancel := context.WithTimeout(ctx, 3*time.Second)
		_, err := client.UnaryCall(cctx, &testpb.SimpleRequest{}, grpc.CallAuthority("web:80"))
		ccancel()
		if err != nil {
			t.Fatalf("a call on the same connection while another's discovery is awaited: %v", err)
		}
	}
	close(res.release)
	if err := <-errc; err != nil {
		t.Fatalf("the call once discovery answered: %v", err)
	}
	wantMetric(t, p, 1, "response_total", `direction="outbound"`, `authority="books:80"`, `grpc_status="0"`)
}

// TestOpaqueAwaitsEndpoints: an opaque connection (TLS the proxy passes
// through, by its SNI) to a Service without a ready endpoint waits for one
// too.
func TestOpaqueAwaitsEndpoints(t *testing.T) {
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "books over TLS")
	}))
	app.StartTLS()
	defer app.Close()
	res := newAwaitingResolver(map[string][]resolve.Endpoint{"example.com:443": {}})
	p := startProxy(t, Config{Resolver: res, FailFastTimeout: 10 * time.Second})

	tr := app.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "example.com" // in the test certificate
	tr.Proxy = nil
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 20 * time.Second}
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Get("https://" + p.OutboundAddr() + "/")
		if err != nil {
			done <- result{err: err}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{body: string(b)}
	}()
	waitFor(t, "the connection to wait for an endpoint", func() bool { return res.waiters.Load() == 1 })
	res.set("example.com:443", resolve.Endpoint{Addr: app.Listener.Addr().String()})
	if r := <-done; r.err != nil || r.body != "books over TLS" {
		t.Fatalf("once an endpoint came: %+v", r)
	}
	wantMetric(t, p, 1, "outbound_endpoint_wait_total", `authority="example.com:443"`, `result="ready"`)
	wantMetric(t, p, 0, "outbound_endpoint_waiting", `authority="example.com:443"`)
}
