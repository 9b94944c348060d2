package destination

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/conduitmesh/conduit/internal/testenv"
	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	netv1 "github.com/conduitmesh/conduit/pkg/api/net/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

func TestNormalize(t *testing.T) {
	tests := []struct{ in, want string }{
		{"books:8080", "books.demo.svc.cluster.local:8080"},
		{"Books.Demo:8080", "books.demo.svc.cluster.local:8080"},
		{"books.demo.svc:8080", "books.demo.svc.cluster.local:8080"},
		{"books.demo.svc.cluster.local:8080", "books.demo.svc.cluster.local:8080"},
		{"books.demo.svc.cluster.local.:8080", "books.demo.svc.cluster.local:8080"},
		{"books", "books.demo.svc.cluster.local:80"},
		{"api.example.org:443", "api.example.org:443"},
		{"10.1.2.3:80", "10.1.2.3:80"},
		{"10.1.2.3", "10.1.2.3:80"},
		{"[::ffff:10.1.2.3]:80", "10.1.2.3:80"},
		{"[2001:db8::1]:80", "[2001:db8::1]:80"},
	}
	for _, tt := range tests {
		got, err := Normalize(tt.in, "demo", "cluster.local")
		if err != nil || got != tt.want {
			t.Errorf("Normalize(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
	for _, bad := range []string{"", ":80", "a:b:c"} {
		if _, err := Normalize(bad, "demo", "cluster.local"); err == nil {
			t.Errorf("Normalize(%q) succeeded", bad)
		}
	}
}

// fakeDestination is a grpc-go Destination server whose streams the test
// feeds: every Get first sends the authority's current update, then
// whatever the test publishes.
type fakeDestination struct {
	destinationv1.UnimplementedDestinationServer
	mu      sync.Mutex
	current map[string]*destinationv1.Update
	subs    map[string][]chan *destinationv1.Update
	opened  map[string]int
	closed  map[string]int
	// GetRoutes (routes_test.go): the current table of each authority
	// and the open streams'.
	routes    map[string]*destinationv1.OutboundRoutes
	routeSubs map[string][]chan *destinationv1.OutboundRoutes
}

func newFake() *fakeDestination {
	return &fakeDestination{
		current: map[string]*destinationv1.Update{},
		subs:    map[string][]chan *destinationv1.Update{},
		opened:  map[string]int{},
		closed:  map[string]int{},

		routes:    map[string]*destinationv1.OutboundRoutes{},
		routeSubs: map[string][]chan *destinationv1.OutboundRoutes{},
	}
}

func (f *fakeDestination) Get(req *destinationv1.GetDestination, s grpc.ServerStreamingServer[destinationv1.Update]) error {
	if req.Authority == "bad" || req.Authority == "bad:80" {
		return status.Error(codes.InvalidArgument, "bad authority")
	}
	ch := make(chan *destinationv1.Update, 16)
	f.mu.Lock()
	f.opened[req.Authority]++
	cur := f.current[req.Authority]
	f.subs[req.Authority] = append(f.subs[req.Authority], ch)
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.closed[req.Authority]++
		f.mu.Unlock()
	}()
	if cur == nil {
		cur = &destinationv1.Update{Update: &destinationv1.Update_NoEndpoints{NoEndpoints: &destinationv1.NoEndpoints{}}}
	}
	if err := s.Send(cur); err != nil {
		return err
	}
	for {
		select {
		case <-s.Context().Done():
			return nil
		case u := <-ch:
			if err := s.Send(u); err != nil {
				return err
			}
		}
	}
}

// set replaces the authority's current state (sent to new streams) and
// publishes u to open ones.
func (f *fakeDestination) publish(authority string, u *destinationv1.Update, snapshot *destinationv1.Update) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current[authority] = snapshot
	for _, ch := range f.subs[authority] {
		ch <- u
	}
}

func (f *fakeDestination) counts(authority string) (opened, closed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opened[authority], f.closed[authority]
}

func serve(t *testing.T, addr string, f *fakeDestination) (*grpc.Server, string) {
	t.Helper()
	lis := testenv.Listen(t, addr) // the port of a just-stopped server may take a moment
	srv := grpc.NewServer()
	destinationv1.RegisterDestinationServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return srv, lis.Addr().String()
}

func add(addrs ...string) *destinationv1.Update {
	var was []*destinationv1.WeightedAddr
	for _, a := range addrs {
		was = append(was, &destinationv1.WeightedAddr{Addr: tcp(a), Identity: "spiffe://cluster.local/ns/demo/sa/books"})
	}
	return &destinationv1.Update{Update: &destinationv1.Update_Add{Add: &destinationv1.WeightedAddrSet{
		Addrs: was, MetricLabels: map[string]string{"service": "books"},
	}}}
}

func addrsOf(eps []resolve.Endpoint) []string {
	var out []string
	for _, ep := range eps {
		out = append(out, ep.Addr)
	}
	return out
}

// eventually polls Endpoints until want (addresses, in order) is returned.
func eventually(t *testing.T, r *Resolver, authority string, want ...string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		eps, err := r.Endpoints(context.Background(), authority)
		if got := addrsOf(eps); err != nil || !equal(got, want) {
			return fmt.Errorf("Endpoints(%s) = %v, %v; want %v", authority, got, err, want)
		}
		return nil
	})
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

const books = "books.demo.svc.cluster.local:8080"

func newResolver(t *testing.T, addr string, cfg Config) *Resolver {
	t.Helper()
	c, err := grpcwire.New(addr, grpcwire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	cfg.Client = c
	cfg.Namespace = "demo"
	if cfg.BackoffBase == 0 {
		cfg.BackoffBase, cfg.BackoffMax = 10*time.Millisecond, 50*time.Millisecond
	}
	r := New(context.Background(), cfg)
	t.Cleanup(r.Close)
	t.Cleanup(c.Close)
	return r
}

func TestResolverFollowsUpdates(t *testing.T) {
	f := newFake()
	f.current[books] = add("127.0.0.1:1001")
	_, addr := serve(t, "127.0.0.1:0", f)
	r := newResolver(t, addr, Config{})

	// The short form a pod in namespace demo would use; the first call
	// waits for the first update.
	eps, err := r.Endpoints(context.Background(), "books:8080")
	if err != nil {
		t.Fatal(err)
	}
	if len(eps) != 1 || eps[0].Addr != "127.0.0.1:1001" || eps[0].Identity != "spiffe://cluster.local/ns/demo/sa/books" || eps[0].Labels["service"] != "books" {
		t.Fatalf("first endpoints = %+v", eps)
	}
	f.publish(books, add("127.0.0.1:1002"), add("127.0.0.1:1001", "127.0.0.1:1002"))
	eventually(t, r, "books:8080", "127.0.0.1:1001", "127.0.0.1:1002")
	f.publish(books, &destinationv1.Update{Update: &destinationv1.Update_Remove{Remove: &destinationv1.AddrSet{Addrs: []*netv1.TcpAddress{tcp("127.0.0.1:1001")}}}}, add("127.0.0.1:1002"))
	eventually(t, r, books, "127.0.0.1:1002")

	// No ready endpoints: an empty set, no error.
	none := &destinationv1.Update{Update: &destinationv1.Update_NoEndpoints{NoEndpoints: &destinationv1.NoEndpoints{Exists: true}}}
	f.publish(books, none, none)
	eventually(t, r, books)

	// Unknown service: ErrNotFound.
	if _, err := r.Endpoints(context.Background(), "nope.demo:80"); !errors.Is(err, resolve.ErrNotFound) || errors.Is(err, ErrNoAnswer) {
		t.Fatalf("unknown authority: err = %v, want ErrNotFound", err)
	}
	// An authority the controller rejects: ErrNotFound too.
	if _, err := r.Endpoints(context.Background(), "bad"); !errors.Is(err, resolve.ErrNotFound) {
		t.Fatalf("bad authority: err = %v", err)
	}
	if opened, _ := f.counts(books); opened != 1 {
		t.Errorf("streams opened for %s = %d, want 1 (short and long forms share one)", books, opened)
	}
}

// TestResolverSurvivesControllerRestart: the last known endpoints stay while
// the controller is down; after it is back, the new stream's first update
// replaces the set.
func TestResolverSurvivesControllerRestart(t *testing.T) {
	f := newFake()
	f.current[books] = add("127.0.0.1:1001", "127.0.0.1:1002")
	srv, addr := serve(t, "127.0.0.1:0", f)
	r := newResolver(t, addr, Config{})
	eventually(t, r, books, "127.0.0.1:1001", "127.0.0.1:1002")

	srv.Stop()
	for range 20 {
		eps, err := r.Endpoints(context.Background(), books)
		if err != nil || len(eps) != 2 {
			t.Fatalf("with the controller down: %v, %v", addrsOf(eps), err)
		}
		time.Sleep(10 * time.Millisecond)
	}

	f2 := newFake()
	f2.current[books] = add("127.0.0.1:1003")
	serve(t, addr, f2)
	eventually(t, r, books, "127.0.0.1:1003")
	f2.publish(books, add("127.0.0.1:1004"), nil)
	eventually(t, r, books, "127.0.0.1:1003", "127.0.0.1:1004")
}

func TestResolverWithoutController(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	r := newResolver(t, addr, Config{InitialWait: 50 * time.Millisecond})
	if _, err := r.Endpoints(context.Background(), books); !errors.Is(err, ErrNoAnswer) || !errors.Is(err, resolve.ErrNotFound) {
		t.Fatalf("err = %v, want ErrNoAnswer", err)
	}
	// The controller comes up later: the stream reconnects by itself.
	f := newFake()
	f.current[books] = add("127.0.0.1:1001")
	serve(t, addr, f)
	eventually(t, r, books, "127.0.0.1:1001")
}

// TestResolverEndpointsNow: EndpointsNow is Endpoints without the wait for
// the controller's first answer: ErrPending while it is awaited (the first
// call opens the stream), Endpoints' answer once it came or InitialWait
// passed.
func TestResolverEndpointsNow(t *testing.T) {
	f := newFake()
	f.current[books] = add("127.0.0.1:1001")
	_, addr := serve(t, "127.0.0.1:0", f)
	r := newResolver(t, addr, Config{})
	if _, err := r.EndpointsNow("books:8080"); !errors.Is(err, resolve.ErrPending) {
		t.Errorf("EndpointsNow before any answer: %v, want ErrPending", err)
	}
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		eps, err := r.EndpointsNow("books:8080") // the first call's stream answers
		if err != nil || len(eps) != 1 || eps[0].Addr != "127.0.0.1:1001" {
			return fmt.Errorf("EndpointsNow = %v, %v", eps, err)
		}
		return nil
	})
	for _, a := range []string{books, "books.demo:8080"} { // the long forms share the stream
		if eps, err := r.EndpointsNow(a); err != nil || len(eps) != 1 {
			t.Errorf("EndpointsNow(%s) once the controller answered: %v, %v", a, eps, err)
		}
	}
	if _, err := r.EndpointsNow("a:b:c"); err == nil || errors.Is(err, resolve.ErrPending) {
		t.Errorf("EndpointsNow of a name Endpoints rejects: %v, want its error", err)
	}

	// A controller that never answers: pending until InitialWait passed,
	// then ErrNoAnswer, as Endpoints.
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lis.Close() }) // accepts, never answers
	slow := newResolver(t, lis.Addr().String(), Config{InitialWait: 300 * time.Millisecond})
	if _, err := slow.EndpointsNow(books); !errors.Is(err, resolve.ErrPending) { // not ErrNoAnswer: it did not wait
		t.Errorf("EndpointsNow while the first answer is awaited: %v, want ErrPending", err)
	}
	if _, err := slow.Endpoints(context.Background(), books); !errors.Is(err, ErrNoAnswer) {
		t.Fatalf("Endpoints after InitialWait: %v, want ErrNoAnswer", err)
	}
	if _, err := slow.EndpointsNow(books); !errors.Is(err, ErrNoAnswer) {
		t.Errorf("EndpointsNow once InitialWait passed: %v, want ErrNoAnswer", err)
	}
}

func TestResolverClosesIdleStreams(t *testing.T) {
	f := newFake()
	f.current[books] = add("127.0.0.1:1001")
	_, addr := serve(t, "127.0.0.1:0", f)
	r := newResolver(t, addr, Config{IdleTimeout: 100 * time.Millisecond})
	eventually(t, r, books, "127.0.0.1:1001")
	deadline := time.Now().Add(10 * time.Second)
	for {
		if _, closed := f.counts(books); closed == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("idle stream was not closed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Used again: a new stream.
	eventually(t, r, books, "127.0.0.1:1001")
	if opened, _ := f.counts(books); opened != 2 {
		t.Fatalf("opened = %d, want 2", opened)
	}
}

// TestResolverAwaitsEndpoints: AwaitEndpoints holds while the controller
// knows the authority without a ready endpoint and returns as soon as one
// is announced; it gives up, without an error, when its context ends, and
// does not wait for an authority the controller does not know.
func TestResolverAwaitsEndpoints(t *testing.T) {
	f := newFake()
	none := &destinationv1.Update{Update: &destinationv1.Update_NoEndpoints{NoEndpoints: &destinationv1.NoEndpoints{Exists: true}}}
	f.current[books] = none
	_, addr := serve(t, "127.0.0.1:0", f)
	r := newResolver(t, addr, Config{})

	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	eps, err := r.AwaitEndpoints(ctx, "books:8080")
	cancel()
	if err != nil || len(eps) != 0 || ctx.Err() == nil {
		t.Fatalf("AwaitEndpoints without endpoints = %v, %v (ctx %v); want an empty set once ctx ended", eps, err, ctx.Err())
	}

	type result struct {
		eps []resolve.Endpoint
		err error
	}
	done := make(chan result, 1)
	go func() {
		eps, err := r.AwaitEndpoints(context.Background(), "books:8080")
		done <- result{eps, err}
	}()
	select {
	case res := <-done:
		t.Fatalf("AwaitEndpoints returned %v, %v before any endpoint", res.eps, res.err)
	case <-time.After(100 * time.Millisecond):
	}
	// An update that still leaves the set empty does not end the wait.
	f.publish(books, none, none)
	select {
	case res := <-done:
		t.Fatalf("AwaitEndpoints returned %v, %v on an empty update", res.eps, res.err)
	case <-time.After(100 * time.Millisecond):
	}
	f.publish(books, add("127.0.0.1:1001"), add("127.0.0.1:1001"))
	select {
	case res := <-done:
		if res.err != nil || !equal(addrsOf(res.eps), []string{"127.0.0.1:1001"}) {
			t.Fatalf("AwaitEndpoints = %v, %v; want [127.0.0.1:1001]", addrsOf(res.eps), res.err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("AwaitEndpoints did not return once an endpoint was announced")
	}

	// Unknown to the controller: ErrNotFound at once, as Endpoints says.
	ctx, cancel = context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := r.AwaitEndpoints(ctx, "nope.demo:80"); !errors.Is(err, resolve.ErrNotFound) || ctx.Err() != nil {
		t.Fatalf("unknown authority: err = %v (ctx %v), want ErrNotFound without waiting", err, ctx.Err())
	}
}
