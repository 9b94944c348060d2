package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/conduitmesh/conduit/internal/testenv"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
)

// fakeController serves InboundPolicies with grpc-go, as the controller
// does: each WatchPort call gets the port's current policy at once and
// every later one.
type fakeController struct {
	policyv1.UnimplementedInboundPoliciesServer
	mu      sync.Mutex
	current map[uint32]*policyv1.InboundServer
	changed chan struct{} // closed and replaced on every change
	specs   []string      // namespace/pod:port of every call
}

func newFakeController() *fakeController {
	return &fakeController{current: map[uint32]*policyv1.InboundServer{}, changed: make(chan struct{})}
}

func (f *fakeController) set(port uint32, m *policyv1.InboundServer) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.current[port] = m
	close(f.changed)
	f.changed = make(chan struct{})
}

func (f *fakeController) calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.specs...)
}

func (f *fakeController) WatchPort(spec *policyv1.PortSpec, stream grpc.ServerStreamingServer[policyv1.InboundServer]) error {
	f.mu.Lock()
	f.specs = append(f.specs, fmt.Sprintf("%s/%s:%d", spec.Namespace, spec.Pod, spec.Port))
	f.mu.Unlock()
	var last *policyv1.InboundServer
	for {
		f.mu.Lock()
		cur, changed := f.current[spec.Port], f.changed
		f.mu.Unlock()
		if cur != nil && cur != last {
			if err := stream.Send(cur); err != nil {
				return err
			}
			last = cur
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// serve serves f on addr ("127.0.0.1:0" for any port) until stop.
func serve(t *testing.T, f *fakeController, addr string) (bound string, stop func()) {
	t.Helper()
	lis := testenv.Listen(t, addr)
	srv := grpc.NewServer()
	policyv1.RegisterInboundPoliciesServer(srv, f)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), srv.Stop
}

func serverNamed(name string) *policyv1.InboundServer {
	return &policyv1.InboundServer{Server: pref("server", name), Authorizations: []*policyv1.Authorization{unauthenticated(name)}}
}

// has waits until port's policy is the server named name.
func has(t *testing.T, st *Store, port uint16, name string) {
	t.Helper()
	testenv.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if srv, ok := st.Lookup(port); !ok || srv.Ref().Name != name {
			return fmt.Errorf("port %d has %v (arrived: %v), want server %s", port, srv, ok, name)
		}
		return nil
	})
}

func TestStoreWatch(t *testing.T) {
	ctrl := newFakeController()
	addr, stop := serve(t, ctrl, "127.0.0.1:0")
	conn, err := grpcwire.New(addr, grpcwire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var logs testenv.SyncBuffer
	log := slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	st := NewStore(Pending("all-authenticated"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- st.Watch(ctx, conn, "shop", "web-0", []uint16{8080, 9090, 8080}, WatchOptions{
			BackoffBase: 10 * time.Millisecond, BackoffMax: 50 * time.Millisecond, Log: log})
	}()
	defer func() {
		cancel()
		select {
		case err := <-done:
			if !errors.Is(err, context.Canceled) {
				t.Errorf("Watch returned %v, want context.Canceled", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context ended")
		}
	}()

	// Pending: the fallback answers and fails closed.
	if srv, ok := st.Lookup(8080); ok || !srv.Pending() || srv.AllowConn(plain("10.1.1.1")).Allowed {
		t.Fatalf("before any policy: %v, %v", srv, ok)
	}

	ctrl.set(8080, serverNamed("one"))
	has(t, st, 8080, "one")
	if srv, ok := st.Lookup(9090); ok || !srv.Pending() {
		t.Errorf("port 9090 without a policy: %v, %v", srv, ok)
	}
	if srv, _ := st.Lookup(8080); !srv.AllowConn(plain("10.1.1.1")).Allowed {
		t.Errorf("policy one does not admit")
	}
	testenv.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		calls := strings.Join(ctrl.calls(), " ")
		if !strings.Contains(calls, "shop/web-0:8080") || !strings.Contains(calls, "shop/web-0:9090") {
			return fmt.Errorf("calls %q, want one per port", calls)
		}
		return nil
	})
	if n := len(ctrl.calls()); n != 2 {
		t.Errorf("%d calls for two ports: %q", n, ctrl.calls())
	}

	// An update replaces the policy; the other port gets its own.
	ctrl.set(8080, serverNamed("two"))
	ctrl.set(9090, serverNamed("nine"))
	has(t, st, 8080, "two")
	has(t, st, 9090, "nine")

	// A policy that does not decode is logged; the previous one stays.
	ctrl.set(8080, &policyv1.InboundServer{Server: pref("server", "bad"),
		Authorizations: []*policyv1.Authorization{unauthenticated("bad", nets("10.0.0.0/99")...)}})
	testenv.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "inbound policy rejected") {
			return errors.New("no rejection logged")
		}
		return nil
	})
	has(t, st, 8080, "two")

	// The controller goes away: the last policies stay.
	stop()
	testenv.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if strings.Count(logs.String(), "inbound policy stream ended") < 2 {
			return errors.New("the streams have not noticed the controller is gone")
		}
		return nil
	})
	time.Sleep(100 * time.Millisecond) // a few failed reconnects
	has(t, st, 8080, "two")
	has(t, st, 9090, "nine")

	// It comes back on the same address with news: the streams reconnect.
	ctrl2 := newFakeController()
	ctrl2.set(8080, serverNamed("three"))
	ctrl2.set(9090, serverNamed("nine"))
	serve(t, ctrl2, addr)
	has(t, st, 8080, "three")
	testenv.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if n := len(ctrl2.calls()); n != 2 {
			return fmt.Errorf("%d calls to the restarted controller, want 2", n)
		}
		return nil
	})
}

// TestStoreStartsWithoutController: while the controller is unreachable
// from the start, ports stay pending; its first policy then arrives.
func TestStoreStartsWithoutController(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close() // nothing listens there yet
	conn, err := grpcwire.New(addr, grpcwire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st := NewStore(Pending(""))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go st.Watch(ctx, conn, "shop", "web-0", []uint16{8080}, WatchOptions{BackoffBase: 10 * time.Millisecond, BackoffMax: 20 * time.Millisecond})
	time.Sleep(50 * time.Millisecond)
	srv, ok := st.Lookup(8080)
	if ok || !srv.Pending() || !srv.AllowConn(plain("10.1.1.1")).Allowed {
		t.Fatalf("without a controller: %v, %v; want the pending all-unauthenticated policy", srv, ok)
	}
	ctrl := newFakeController()
	ctrl.set(8080, serverNamed("late"))
	serve(t, ctrl, addr)
	has(t, st, 8080, "late")
}

func TestWatchArguments(t *testing.T) {
	conn, err := grpcwire.New("127.0.0.1:1", grpcwire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := NewStore(nil)
	ctx := context.Background()
	for name, err := range map[string]error{
		"no client":    st.Watch(ctx, nil, "shop", "web-0", []uint16{80}, WatchOptions{}),
		"no namespace": st.Watch(ctx, conn, "", "web-0", []uint16{80}, WatchOptions{}),
		"no pod":       st.Watch(ctx, conn, "shop", "", []uint16{80}, WatchOptions{}),
		"port 0":       st.Watch(ctx, conn, "shop", "web-0", []uint16{80, 0}, WatchOptions{}),
	} {
		if err == nil || errors.Is(err, context.Canceled) {
			t.Errorf("%s: Watch = %v", name, err)
		}
	}
	if srv, ok := st.Lookup(80); ok || srv.Ref().Name != "all-unauthenticated" {
		t.Errorf("NewStore(nil) falls back to %v", srv)
	}
}

// TestEncodePortSpecMatchesGenerated checks the hand-written request.
func TestEncodePortSpecMatchesGenerated(t *testing.T) {
	var got policyv1.PortSpec
	if err := proto.Unmarshal(encodePortSpec("shop", "web-0", 65535), &got); err != nil {
		t.Fatal(err)
	}
	if got.Namespace != "shop" || got.Pod != "web-0" || got.Port != 65535 {
		t.Errorf("decoded %v", &got)
	}
}

// TestStoreWatchesUndeclaredPort: a port Watch was not given is watched
// from its first Lookup, which waits for the controller's answer instead
// of deciding with the pending policy; later Lookups do not wait.
func TestStoreWatchesUndeclaredPort(t *testing.T) {
	ctrl := newFakeController()
	ctrl.set(7000, serverNamed("undeclared"))
	addr, _ := serve(t, ctrl, "127.0.0.1:0")
	conn, err := grpcwire.New(addr, grpcwire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st := NewStore(Pending("deny"))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- st.Watch(ctx, conn, "shop", "web-0", []uint16{8080}, WatchOptions{}) }()
	defer func() { cancel(); <-done }()
	testenv.Eventually(t, 5*time.Second, 5*time.Millisecond, func() error {
		if st.watch.Load() == nil {
			return errors.New("Watch has not started")
		}
		return nil
	})
	if srv, ok := st.Lookup(7000); !ok || srv.Ref().Name != "undeclared" {
		t.Fatalf("first Lookup of an undeclared port: %v (arrived %v), want its policy", srv, ok)
	}
	if got := ctrl.calls(); !slices.Contains(got, "shop/web-0:7000") {
		t.Errorf("WatchPort calls %v, want one for port 7000", got)
	}
	// A port the controller never answers for: the first Lookup gives up
	// after FirstPolicyWait, the next answers pending at once.
	if srv, ok := st.Lookup(7001); ok || !srv.Pending() {
		t.Fatalf("unanswered port: %v, %v", srv, ok)
	}
	start := time.Now()
	st.Lookup(7001)
	if waited := time.Since(start); waited >= FirstPolicyWait {
		t.Errorf("the second Lookup of an unanswered port waited %v", waited)
	}
}
