package proxy

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch/httpmatchtest"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
)

const (
	retrySvc     = "retry.shop.svc.cluster.local:80"
	retryGRPCSvc = "retry-grpc.shop.svc.cluster.local:80"
)

// flakyBackend fails every other request to a path (the first, the third…)
// and answers the others with the path and the request's body; under
// /always/ it always fails, under /slow/ the failing requests hang
// instead until the client gives up.
type flakyBackend struct {
	mu    sync.Mutex
	calls map[string]int
}

func (b *flakyBackend) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	b.mu.Lock()
	b.calls[r.URL.Path]++
	n := b.calls[r.URL.Path]
	b.mu.Unlock()
	if strings.HasPrefix(r.URL.Path, "/always/") || strings.HasPrefix(r.URL.Path, "/budget/") || n%2 == 1 {
		if strings.HasPrefix(r.URL.Path, "/slow/") {
			<-r.Context().Done()
			return
		}
		http.Error(w, "flaky", http.StatusServiceUnavailable)
		return
	}
	io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(body))
}

func (b *flakyBackend) count(path string) int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.calls[path]
}

func retryRoutes(t testing.TB) fakeRoutes {
	prefix := func(p string) *policyv1.HttpMatch { return &policyv1.HttpMatch{Path: httpmatchtest.Prefix(p)} }
	retry5xx := &destinationv1.RoutePolicy{Retry: &destinationv1.Retry{Limit: 1,
		HttpStatuses: []*destinationv1.StatusRange{{Min: 500, Max: 599}}, TimeoutMs: 300}}
	flaky := outRule(prefix("/"))
	flaky.Policy = retry5xx
	always := outRule(prefix("/always/"))
	always.Policy = retry5xx
	budget := outRule(prefix("/budget/"))
	budget.Policy = retry5xx
	grpcRule := outRule(prefix("/"))
	grpcRule.Policy = &destinationv1.RoutePolicy{Retry: &destinationv1.Retry{Limit: 1, GrpcCodes: []uint32{uint32(codes.Unavailable)}}}
	return fakeRoutes{
		retrySvc: decodeRoutes(t, retrySvc, &destinationv1.OutboundRoutes{Found: true, Routes: []*destinationv1.OutboundRoute{
			mkRoute("flaky", 100, flaky), mkRoute("always", 50, always), mkRoute("budget", 60, budget)}}),
		retryGRPCSvc: decodeRoutes(t, retryGRPCSvc, &destinationv1.OutboundRoutes{Found: true, Routes: []*destinationv1.OutboundRoute{
			mkRoute("grpc-flaky", 100, grpcRule)}}),
	}
}

// TestOutboundRetries: a route's retries on each HTTP path — failed
// idempotent requests sent again with their body, POST never, a body over
// 64 KiB never, a hung attempt retried after the retry timeout, the limit
// and the budget counted.
func TestOutboundRetries(t *testing.T) {
	for _, path := range httpPaths {
		t.Run(path.name, func(t *testing.T) {
			b := &flakyBackend{calls: map[string]int{}}
			addr := startHTTPBackend(t, b)
			cfg := path.cfg
			cfg.Resolver = &fakeResolver{eps: map[string][]resolve.Endpoint{retrySvc: {{Addr: addr}}}}
			cfg.Routes = retryRoutes(t)
			p := startProxy(t, cfg)
			c := path.client(t)
			send := func(method, path string, body []byte) (int, string) {
				t.Helper()
				req, _ := http.NewRequest(method, "http://"+p.OutboundAddr()+path, bytes.NewReader(body))
				req.Host = "retry.shop.svc.cluster.local"
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				got, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(got)
			}
			// Within the budget's first second: 10 retries plus 20 % of
			// the requests.
			const n = 5
			for i := range n {
				if code, got := send("GET", "/get", nil); code != 200 || got != "GET /get " {
					t.Fatalf("GET %d: %d %q, want 200 after a retry", i, code, got)
				}
				if code, got := send("PUT", "/put", []byte("the body")); code != 200 || got != "PUT /put the body" {
					t.Fatalf("PUT %d: %d %q, want 200 with the body replayed", i, code, got)
				}
			}
			if got := b.count("/get") + b.count("/put"); got != 4*n {
				t.Errorf("the backend saw %d requests, want %d (each sent twice)", got, 4*n)
			}
			// POST is not idempotent: its 503 is the client's.
			if code, _ := send("POST", "/post", []byte("x")); code != 503 || b.count("/post") != 1 {
				t.Errorf("POST: %d after %d tries, want 503 after 1", code, b.count("/post"))
			}
			if n := p.h1HandedOff.Load(); path.name == "h1-fast" && n != 0 {
				t.Errorf("the HTTP/1.1 fast path handed %d connections to net/http's path, want none", n)
			}
			// A body over 64 KiB is not kept: not retried.
			big := bytes.Repeat([]byte("b"), routes.MaxReplayBody+1)
			if code, _ := send("PUT", "/big", big); code != 503 || b.count("/big") != 1 {
				t.Errorf("PUT of 64 KiB + 1: %d after %d tries, want 503 after 1", code, b.count("/big"))
			}
			// A hung attempt: cut at the retry timeout (300 ms), retried.
			if code, got := send("GET", "/slow/x", nil); code != 200 || got != "GET /slow/x " {
				t.Errorf("hung attempt: %d %q, want 200 after a retry", code, got)
			}
			// Always failing: one retry, then the limit.
			if code, _ := send("GET", "/always/x", nil); code != 503 || b.count("/always/x") != 2 {
				t.Errorf("always failing: %d after %d tries, want 503 after 2", code, b.count("/always/x"))
			}
			wantMetric(t, p, 2*n+1, "outbound_http_route_retry_requests_total", `route_name="flaky"`)
			wantMetric(t, p, 2*n+1, "outbound_http_route_retry_successes_total", `route_name="flaky"`)
			wantMetric(t, p, 1, "outbound_http_route_retry_limit_exceeded_total", `route_name="always"`)
			// The client-facing series count each request once.
			wantMetric(t, p, 2*n+1, "response_total", `route_name="flaky"`, `status_code="200"`)

			// The budget: with every attempt failing, retries stay within
			// 20 % of the requests plus the minimum rate (10 a second,
			// from the route's first request).
			start := time.Now()
			const m = 60
			for range m {
				send("GET", "/budget/x", nil)
			}
			elapsed := time.Since(start)
			retries := b.count("/budget/x") - m
			limit := (m+1)/5 + 10*(int(elapsed/time.Second)+1) + 1
			if retries > limit {
				t.Errorf("%d requests in %v got %d retries, want at most %d", m, elapsed, retries, limit)
			}
			if retries == m {
				t.Errorf("every request was retried: the budget did not hold")
			}
			t.Logf("%d failing requests in %v: %d retries", m, elapsed, retries)
		})
	}
}

// TestOutboundRetriesGRPC: UNAVAILABLE answers (trailers-only) retried with
// the request's message, on the HTTP/2 fast path and net/http's.
func TestOutboundRetriesGRPC(t *testing.T) {
	for _, tc := range grpcPaths {
		t.Run(tc.name, func(t *testing.T) {
			addr, calls := flakyGRPCServer(t, func(_ context.Context, n int) error {
				if n%2 == 1 {
					return status.Error(codes.Unavailable, "flaky")
				}
				return nil
			})
			cfg := tc.cfg
			cfg.Resolver = &fakeResolver{eps: map[string][]resolve.Endpoint{retryGRPCSvc: {{Addr: addr}}}}
			cfg.Routes = retryRoutes(t)
			obs := &retryObserver{}
			cfg.Observer = obs
			p := startProxy(t, cfg)
			client := dialGRPC(t, p.OutboundAddr(), grpc.WithAuthority("retry-grpc.shop.svc.cluster.local"))
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			payload := &testpb.Payload{Body: bytes.Repeat([]byte("p"), 1000)}
			const n = 10 // within the budget's first second
			for i := range n {
				resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: payload})
				if err != nil {
					t.Fatalf("call %d: %v, want OK after a retry", i, err)
				}
				if !bytes.Equal(resp.GetPayload().GetBody(), payload.Body) {
					t.Fatalf("call %d: the payload came back changed", i)
				}
			}
			if got := calls(); got != 2*n {
				t.Errorf("the server saw %d calls, want %d", got, 2*n)
			}
			wantMetric(t, p, n, "outbound_http_route_retry_requests_total", `route_name="grpc-flaky"`)
			// Tap sees each call once, with its retry.
			waitFor(t, "the observer to see every call end", func() bool { return obs.ended.Load() == n })
			if got := obs.retries.Load(); got != n {
				t.Errorf("the observer saw %d retries, want %d", got, n)
			}
			wantMetric(t, p, n, "response_total", `route_name="grpc-flaky"`, `grpc_status="0"`)
		})
	}
}

// grpcPaths are the two paths a gRPC call can take through the proxy.
var grpcPaths = []struct {
	name string
	cfg  Config
}{{"h2-fast", Config{}}, {"net-http", Config{DisableFastPath: true}}}

// flakyGRPCServer serves the interop TestService, first asking fail with
// the call's number (1, 2, …) whether and how that call fails; calls
// reports how many it got.
func flakyGRPCServer(t *testing.T, fail func(ctx context.Context, n int) error) (addr string, calls func() int) {
	var mu sync.Mutex
	n := 0
	srv := grpc.NewServer(grpc.UnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		mu.Lock()
		n++
		call := n
		mu.Unlock()
		if err := fail(ctx, call); err != nil {
			return nil, err
		}
		return h(ctx, req)
	}))
	testpb.RegisterTestServiceServer(srv, &grpcService{})
	return serveGRPC(t, srv), func() int {
		mu.Lock()
		defer mu.Unlock()
		return n
	}
}

// TestOutboundRetriesConcurrent: many concurrent calls on one connection,
// a third failing, some outliving the retry timeout, some cancelled by
// their client: every call ends with an answer the client can have, no
// panic, and no stream is left behind on either side (run it with -race).
func TestOutboundRetriesConcurrent(t *testing.T) {
	for _, tc := range grpcPaths {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := flakyGRPCServer(t, func(ctx context.Context, n int) error {
				switch n % 6 {
				case 1, 4:
					return status.Error(codes.Unavailable, "flaky")
				case 2:
					select { // past the retry timeout (50 ms)
					case <-ctx.Done():
						return ctx.Err()
					case <-time.After(80 * time.Millisecond):
					}
				}
				return nil
			})
			var mu sync.Mutex // guards outcomes' counts
			rule := outRule(&policyv1.HttpMatch{Path: httpmatchtest.Prefix("/")})
			rule.Policy = &destinationv1.RoutePolicy{Retry: &destinationv1.Retry{Limit: 2, GrpcCodes: []uint32{uint32(codes.Unavailable)}, TimeoutMs: 50}}
			cfg := tc.cfg
			cfg.Resolver = &fakeResolver{eps: map[string][]resolve.Endpoint{retryGRPCSvc: {{Addr: addr}, {Addr: addr}}}}
			cfg.Routes = fakeRoutes{retryGRPCSvc: decodeRoutes(t, retryGRPCSvc, &destinationv1.OutboundRoutes{Found: true,
				Routes: []*destinationv1.OutboundRoute{mkRoute("busy", 1, rule)}})}
			p := startProxy(t, cfg)
			client := dialGRPC(t, p.OutboundAddr(), grpc.WithAuthority("retry-grpc.shop.svc.cluster.local"))
			payload := &testpb.Payload{Body: bytes.Repeat([]byte("p"), 3000)}
			var wg sync.WaitGroup
			var outcomes sync.Map
			for g := range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := range 15 {
						d := 10 * time.Second
						if (g+i)%5 == 0 {
							d = 30 * time.Millisecond // cancelled mid-way, now and then
						}
						ctx, cancel := context.WithTimeout(context.Background(), d)
						resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: payload})
						cancel()
						code := status.Code(err)
						switch code {
						case codes.OK:
							if !bytes.Equal(resp.GetPayload().GetBody(), payload.Body) {
								t.Errorf("a payload came back changed")
							}
						case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
						default:
							t.Errorf("call: %v", err)
						}
						v, _ := outcomes.LoadOrStore(code, new(int64))
						mu.Lock()
						*v.(*int64)++
						mu.Unlock()
					}
				}()
			}
			wg.Wait()
			outcomes.Range(func(k, v any) bool { t.Logf("%v: %d", k, *v.(*int64)); return true })
			// Still serving, and nothing left behind.
			// (An answer the proxy makes counts: the budget may be spent.)
			if _, err := client.UnaryCall(context.Background(), &testpb.SimpleRequest{}); err != nil &&
				status.Code(err) != codes.Unavailable && status.Code(err) != codes.DeadlineExceeded {
				t.Errorf("after the storm: %v", err)
			}
			wantMetric(t, p, 0, "conduit_proxy_panics_total")
			if tc.cfg.DisableFastPath {
				return
			}
			waitFor(t, "every upstream stream to be forgotten", func() bool {
				p.h2Ups.mu.Lock()
				defer p.h2Ups.mu.Unlock()
				for _, list := range p.h2Ups.m {
					for _, up := range list {
						up.mu.Lock()
						n := len(up.streams)
						up.mu.Unlock()
						if n != 0 {
							up.mu.Lock()
							for id, st := range up.streams {
								t.Logf("left upstream stream %d: %s", id, st.debugState())
							}
							up.mu.Unlock()
							return false
						}
					}
				}
				return true
			})
			waitFor(t, "every client stream to be forgotten", func() bool {
				p.mu.Lock()
				defer p.mu.Unlock()
				for d := range p.h2Downs {
					d.mu.Lock()
					n := len(d.streams)
					d.mu.Unlock()
					if n != 0 {
						return false
					}
				}
				return true
			})
		})
	}
}

func (st *h2Stream) debugState() string {
	st.down.out.mu.Lock()
	defer st.down.out.mu.Unlock()
	tries := 0
	if st.rty != nil {
		tries = st.rty.tries
	}
	return fmt.Sprintf("bits %04b respStarted %v respDone %v ended %v upID %d cur %d tries %d status %d grpc %q proxyErr %q", st.bits.Load(), st.respStarted, st.respDone, st.ended.Load(), st.upID, st.curUpID.Load(), tries, st.status, st.grpcStatus, st.proxyErr)
}

// retryObserver counts the requests that ended and their retries.
type retryObserver struct{ ended, retries atomic.Int64 }

func (o *retryObserver) Active() bool                        { return true }
func (o *retryObserver) RequestStarted(*Request) Observation { return o }
func (o *retryObserver) ResponseStarted(*Response)           {}
func (o *retryObserver) Ended(e EndInfo) {
	o.ended.Add(1)
	o.retries.Add(int64(e.Retries))
}

// slowRoutes is fakeRoutes whose first tables of the pending authorities
// have not come yet (NowRouteSource): Lookup of one waits until release,
// as route.Store's first Lookups wait for the controller.
type slowRoutes struct {
	fakeRoutes
	firstAnswer
}

func (r *slowRoutes) LookupNow(authority string) (*routes.Table, bool) {
	if r.pending(authority) {
		return nil, false
	}
	return r.fakeRoutes[authority], true
}

func (r *slowRoutes) Lookup(ctx context.Context, authority string) *routes.Table {
	if r.pending(authority) && !r.await(ctx) {
		return nil
	}
	return r.fakeRoutes[authority]
}

// TestH2FirstRouteTableAlone: the first request for an authority whose
// route table has not come yet waits for it on a goroutine of its own,
// not on the HTTP/2 connection's reader: requests to another Service on
// the same connection go on meanwhile. Once the table comes, the waiting
// request is routed by it: here a retry, whose replay carries the body
// sent before the table came and the body sent after.
func TestH2FirstRouteTableAlone(t *testing.T) {
	b := &flakyBackend{calls: map[string]int{}}
	addr := startHTTPBackend(t, b)
	web := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "web") }))
	rts := &slowRoutes{fakeRoutes: retryRoutes(t), firstAnswer: newFirstAnswer(retrySvc)}
	res := &fakeResolver{eps: map[string][]resolve.Endpoint{retrySvc: {{Addr: addr}}, "web:80": {{Addr: web}}}}
	p := startProxy(t, Config{Resolver: res, Routes: rts})
	c := newH2CClient(t)
	c.Timeout = 20 * time.Second

	first, second := "sent before the table came, ", "sent after"
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("PUT", "http://"+p.OutboundAddr()+"/put", pr)
	req.Host = "retry.shop.svc.cluster.local"
	req.ContentLength = int64(len(first + second))
	type result struct {
		code int
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := c.Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		done <- result{resp.StatusCode, string(body), err}
	}()
	if _, err := pw.Write([]byte(first)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		wreq, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
		wreq.Host = "web"
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		resp, err := c.Do(wreq.WithContext(ctx))
		if err != nil {
			cancel()
			t.Fatalf("request %d to another Service on the same connection while a route table is awaited: %v", i, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		cancel()
		if resp.StatusCode != 200 || string(body) != "web" {
			t.Fatalf("request %d to another Service: %d %q", i, resp.StatusCode, body)
		}
	}
	// A request the client gives up on while its table is awaited is
	// never sent, and counted once.
	gone, cancelGone := context.WithCancel(context.Background())
	greq, _ := http.NewRequestWithContext(gone, "GET", "http://"+p.OutboundAddr()+"/gone", nil)
	greq.Host = "retry.shop.svc.cluster.local"
	time.AfterFunc(100*time.Millisecond, cancelGone)
	if _, err := c.Do(greq); err == nil {
		t.Fatal("the request given up on got a response")
	}
	wantMetric(t, p, 1, "response_total", `authority="retry.shop.svc.cluster.local:80"`, `classification="failure"`)
	select {
	case r := <-done:
		t.Fatalf("the PUT ended before its route table came: %+v", r)
	default:
	}
	close(rts.release)
	if _, err := pw.Write([]byte(second)); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	r := <-done
	if r.err != nil || r.code != 200 || r.body != "PUT /put "+first+second {
		t.Fatalf("the PUT once its table came: %d %q %v; want 200 with the whole body, after a retry", r.code, r.body, r.err)
	}
	if n := b.count("/put"); n != 2 {
		t.Errorf("the backend saw %d PUTs, want 2 (the table's retry)", n)
	}
	if n := b.count("/gone"); n != 0 {
		t.Errorf("the backend saw %d requests the client had given up on", n)
	}
	wantMetric(t, p, 1, "outbound_http_route_retry_requests_total", `route_name="flaky"`)
}
