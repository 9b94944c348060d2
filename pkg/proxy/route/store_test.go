package route

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/conduitmesh/conduit/internal/testenv"
	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/destination"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
)

// fakeWatcher is a Watcher whose messages the test sends.
type fakeWatcher struct {
	mu     sync.Mutex
	opened map[string]int
	closed map[string]int
	feeds  map[string]chan []byte
}

func newFakeWatcher() *fakeWatcher {
	return &fakeWatcher{opened: map[string]int{}, closed: map[string]int{}, feeds: map[string]chan []byte{}}
}

func (f *fakeWatcher) feed(authority string) chan []byte {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.feeds[authority] == nil {
		f.feeds[authority] = make(chan []byte, 16)
	}
	return f.feeds[authority]
}

func (f *fakeWatcher) WatchRoutes(ctx context.Context, authority string, update func([]byte)) {
	feed := f.feed(authority)
	f.mu.Lock()
	f.opened[authority]++
	f.mu.Unlock()
	defer func() {
		f.mu.Lock()
		f.closed[authority]++
		f.mu.Unlock()
	}()
	for {
		select {
		case <-ctx.Done():
			return
		case msg := <-feed:
			update(msg)
		}
	}
}

func (f *fakeWatcher) counts(authority string) (opened, closed int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.opened[authority], f.closed[authority]
}

func newStore(t *testing.T, w Watcher, opts StoreOptions) *Store {
	s := NewStore(context.Background(), w, opts)
	t.Cleanup(s.Close)
	return s
}

// named is a table whose only route is named name.
func named(t testing.TB, name string) []byte {
	return marshal(t, routes(httpRoute(name, 1, rule())))
}

func nameOf(tb *Table) string {
	if tb == nil || len(tb.rules) == 0 {
		return ""
	}
	return tb.rules[0].Route.Name
}

// TestStoreLazyWatch: an authority is watched from its first Lookup, once,
// and that Lookup waits for the first table.
func TestStoreLazyWatch(t *testing.T) {
	w := newFakeWatcher()
	s := newStore(t, w, StoreOptions{FirstTableWait: 10 * time.Second})
	if opened, _ := w.counts(authority); opened != 0 {
		t.Fatal("watched before any Lookup")
	}
	time.AfterFunc(50*time.Millisecond, func() { w.feed(authority) <- named(t, "v1") })
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			if got := nameOf(s.Lookup(context.Background(), authority)); got != "v1" {
				t.Errorf("first Lookup: %q, want v1 (it waits for the first table)", got)
			}
		})
	}
	wg.Wait()
	if opened, _ := w.counts(authority); opened != 1 {
		t.Errorf("opened %d watches, want 1", opened)
	}
	w.feed(authority) <- named(t, "v2")
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if got := nameOf(s.Lookup(context.Background(), authority)); got != "v2" {
			return fmt.Errorf("table %q, want v2", got)
		}
		return nil
	})
	// found=false: no routes.
	w.feed(authority) <- marshal(t, &msgRoutes{})
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if tb := s.Lookup(context.Background(), authority); tb != nil {
			return fmt.Errorf("table %v, want none", tb)
		}
		return nil
	})
}

// TestStoreFirstWait: without an answer, Lookups wait FirstTableWait after
// the watch opened and no longer; a cancelled request does not wait.
func TestStoreFirstWait(t *testing.T) {
	w := newFakeWatcher()
	const wait = 500 * time.Millisecond
	s := newStore(t, w, StoreOptions{FirstTableWait: wait})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	if tb := s.Lookup(ctx, authority); tb != nil || time.Since(start) > wait*4/5 {
		t.Fatalf("cancelled Lookup: %v after %v", tb, time.Since(start))
	}
	if tb := s.Lookup(context.Background(), authority); tb != nil || time.Since(start) < wait {
		t.Fatalf("Lookup: %v after %v, want nil after the first wait", tb, time.Since(start))
	}
	start = time.Now()
	if tb := s.Lookup(context.Background(), authority); tb != nil || time.Since(start) > wait*4/5 {
		t.Fatalf("Lookup after the first wait: %v after %v, want nil at once", tb, time.Since(start))
	}
	// The table arrives late: used from then on.
	w.feed(authority) <- named(t, "late")
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if got := nameOf(s.Lookup(context.Background(), authority)); got != "late" {
			return fmt.Errorf("table %q", got)
		}
		return nil
	})
}

// TestStoreLookupNow: LookupNow is Lookup without the first wait: not ok
// while the first table is awaited (the first call starts the watch), the
// table once it came, and ok without one once FirstTableWait passed.
func TestStoreLookupNow(t *testing.T) {
	w := newFakeWatcher()
	s := newStore(t, w, StoreOptions{FirstTableWait: 10 * time.Second})
	if tb, ok := s.LookupNow(authority); ok || tb != nil {
		t.Fatalf("LookupNow before the first table: %v, %v; want nil, false", tb, ok)
	}
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if opened, _ := w.counts(authority); opened != 1 {
			return fmt.Errorf("opened %d watches, want 1 (LookupNow starts it)", opened)
		}
		return nil
	})
	w.feed(authority) <- named(t, "v1")
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if tb, ok := s.LookupNow(authority); !ok || nameOf(tb) != "v1" {
			return fmt.Errorf("LookupNow: %v, %v; want v1", tb, ok)
		}
		return nil
	})

	// Without an answer: ok, without a table, once Lookup no longer waits.
	silent := newStore(t, newFakeWatcher(), StoreOptions{FirstTableWait: 100 * time.Millisecond})
	if _, ok := silent.LookupNow(authority); ok {
		t.Fatal("LookupNow at once: ok, want the first wait pending")
	}
	if tb := silent.Lookup(context.Background(), authority); tb != nil {
		t.Fatalf("Lookup after the first wait: %v", tb)
	}
	if tb, ok := silent.LookupNow(authority); !ok || tb != nil {
		t.Fatalf("LookupNow after the first wait: %v, %v; want nil, true", tb, ok)
	}
}

// TestStoreKeepsTable: a message that does not decode leaves the last
// table.
func TestStoreKeepsTable(t *testing.T) {
	w := newFakeWatcher()
	var logs testenv.SyncBuffer
	s := newStore(t, w, StoreOptions{Log: slog.New(slog.NewTextHandler(&logs, nil))})
	w.feed(authority) <- named(t, "good")
	if got := nameOf(s.Lookup(context.Background(), authority)); got != "good" {
		t.Fatalf("table %q", got)
	}
	w.feed(authority) <- []byte{0x12, 0xff}
	w.feed(authority) <- marshal(t, routes(httpRoute("bad", 1, rule(&msgMatch{Path: regex("(")}))))
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if n := strings.Count(logs.String(), "outbound routes rejected; keeping the previous ones"); n != 2 {
			return fmt.Errorf("%d rejections logged:\n%s", n, logs.String())
		}
		return nil
	})
	if got := nameOf(s.Lookup(context.Background(), authority)); got != "good" {
		t.Errorf("after malformed tables: %q, want good", got)
	}
}

// TestStoreClosesIdleWatches: a watch nobody looked up since the last
// sweep closes; the next Lookup opens it again. The janitor sweeps every
// IdleTimeout. Close stops every watch.
func TestStoreClosesIdleWatches(t *testing.T) {
	w := newFakeWatcher()
	s := NewStore(context.Background(), w, StoreOptions{IdleTimeout: time.Hour, FirstTableWait: time.Millisecond})
	defer s.Close()
	closed := func(a string) int {
		_, c := w.counts(a)
		return c
	}
	ctx := context.Background()
	s.Lookup(ctx, "idle:80")
	s.Lookup(ctx, "busy:80")
	s.sweep() // both used since they opened
	s.Lookup(ctx, "busy:80")
	if closed("idle:80")+closed("busy:80") != 0 {
		t.Fatal("a watch in use was closed")
	}
	s.sweep()
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if closed("idle:80") != 1 {
			return fmt.Errorf("the idle watch was not closed")
		}
		return nil
	})
	if closed("busy:80") != 0 {
		t.Error("a watch in use was closed")
	}
	s.Lookup(ctx, "idle:80")
	if opened, _ := w.counts("idle:80"); opened != 2 {
		t.Errorf("idle:80 opened %d times, want 2", opened)
	}
	s.Close()
	for _, a := range []string{"idle:80", "busy:80"} {
		if opened, closed := w.counts(a); closed != opened {
			t.Errorf("%s after Close: %d opened, %d closed", a, opened, closed)
		}
	}
	if s.Lookup(ctx, "new:80") != nil {
		t.Error("a closed store has a table")
	}
	if opened, _ := w.counts("new:80"); opened != 0 {
		t.Error("a closed store opened a watch")
	}

	// The janitor sweeps by itself.
	s2 := newStore(t, w, StoreOptions{IdleTimeout: 10 * time.Millisecond, FirstTableWait: time.Millisecond})
	s2.Lookup(ctx, "janitor:80")
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if closed("janitor:80") != 1 {
			return fmt.Errorf("the janitor did not close an idle watch")
		}
		return nil
	})
}

// routesServer serves Destination.GetRoutes with grpc-go, as the
// controller does: the current table, then each new one.
type routesServer struct {
	destinationv1.UnimplementedDestinationServer
	mu      sync.Mutex
	current *msgRoutes
	changed chan struct{}
}

func (r *routesServer) set(m *msgRoutes) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.current = m
	close(r.changed)
	r.changed = make(chan struct{})
}

func (r *routesServer) GetRoutes(_ *destinationv1.GetDestination, s grpc.ServerStreamingServer[destinationv1.OutboundRoutes]) error {
	var last *msgRoutes
	for {
		r.mu.Lock()
		cur, changed := r.current, r.changed
		r.mu.Unlock()
		if cur != last {
			if err := s.Send(cur); err != nil {
				return err
			}
			last = cur
		}
		select {
		case <-changed:
		case <-s.Context().Done():
			return nil
		}
	}
}

// serveRoutes serves m on addr ("127.0.0.1:0" for any port) until stop.
func serveRoutes(t *testing.T, addr string, m *msgRoutes) (rs *routesServer, bound string, stop func()) {
	t.Helper()
	lis := testenv.Listen(t, addr)
	rs = &routesServer{current: m, changed: make(chan struct{})}
	srv := grpc.NewServer()
	destinationv1.RegisterDestinationServer(srv, rs)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return rs, lis.Addr().String(), srv.Stop
}

// TestStoreWithController: through the destination resolver's GetRoutes
// against a grpc-go server, a table change reaches the store, and the last
// table stays while the controller is down.
func TestStoreWithController(t *testing.T) {
	rs, addr, stop := serveRoutes(t, "127.0.0.1:0", routes(httpRoute("v1", 1, rule())))
	conn, err := grpcwire.New(addr, grpcwire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	res := destination.New(context.Background(), destination.Config{Client: conn, Namespace: "shop",
		BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond})
	defer res.Close()
	s := newStore(t, res, StoreOptions{})
	const short = "web:80" // as a client in namespace shop writes it
	if got := nameOf(s.Lookup(context.Background(), short)); got != "v1" {
		t.Fatalf("first table %q", got)
	}
	if tb := s.Lookup(context.Background(), short); tb.Authority() != short {
		t.Errorf("authority %q", tb.Authority())
	}
	start := time.Now()
	rs.set(routes(httpRoute("v2", 1, rule())))
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if got := nameOf(s.Lookup(context.Background(), short)); got != "v2" {
			return fmt.Errorf("table %q, want v2", got)
		}
		return nil
	})
	if d := time.Since(start); d > time.Second {
		t.Errorf("a route change took %v to arrive (issue 14: < 1 s)", d)
	}
	stop()
	for range 20 {
		if got := nameOf(s.Lookup(context.Background(), short)); got != "v2" {
			t.Fatalf("with the controller down: %q", got)
		}
		time.Sleep(10 * time.Millisecond)
	}
	serveRoutes(t, addr, routes(httpRoute("v3", 1, rule()))) // the same port
	testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
		if got := nameOf(s.Lookup(context.Background(), short)); got != "v3" {
			return fmt.Errorf("table %q after the controller came back, want v3", got)
		}
		return nil
	})
}
