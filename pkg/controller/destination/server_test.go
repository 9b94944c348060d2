package destination

import (
	"context"
	"net/netip"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/conduitmesh/conduit/internal/testenv/testgrpc"
	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// fakeBackend serves snapshots set by the test.
type fakeBackend struct {
	hub discovery.Hub[string]

	mu    sync.Mutex // guards state
	state map[string]discovery.Snapshot
}

func (f *fakeBackend) Subscribe(authority, _ string, l discovery.Listener) (func(), error) {
	a, err := discovery.ParseAuthority(authority)
	if err != nil {
		return nil, err
	}
	return f.hub.Subscribe(a.String(), func() discovery.Snapshot { return f.get(a.String()) }, l), nil
}

func (f *fakeBackend) get(k string) discovery.Snapshot {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.state[k]
}

func (f *fakeBackend) set(k string, s discovery.Snapshot) {
	f.mu.Lock()
	if f.state == nil {
		f.state = map[string]discovery.Snapshot{}
	}
	f.state[k] = s
	f.mu.Unlock()
	f.hub.Refresh(func(key string) bool { return key == k }, f.get)
}

// serve starts srv on an in-memory listener and returns a client.
func serve(t testing.TB, srv *Server) destinationv1.DestinationClient {
	t.Helper()
	conn := testgrpc.Serve(t, func(gs *grpc.Server) { destinationv1.RegisterDestinationServer(gs, srv) })
	t.Cleanup(srv.Shutdown)
	return destinationv1.NewDestinationClient(conn)
}

func recv(t *testing.T, s destinationv1.Destination_GetClient) []string {
	t.Helper()
	u, err := s.Recv()
	if err != nil {
		t.Fatalf("Recv: %v", err)
	}
	return text([]*destinationv1.Update{u})
}

func TestGetStreamsChanges(t *testing.T) {
	fb := &fakeBackend{}
	srv, err := NewServer(fb, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	svc := map[string]string{"service": "web"}
	a, b := ep("10.0.0.1:80", "spiffe://td/ns/a/sa/a"), ep("10.0.0.2:80", "")
	fb.set("web.ns:80", snap(svc, a))

	stream, err := client.Get(ctx, &destinationv1.GetDestination{Authority: "web.ns:80"})
	if err != nil {
		t.Fatal(err)
	}
	steps := []struct {
		next discovery.Snapshot
		want string
	}{
		{snap(svc, a), "add 10.0.0.1:80/spiffe://td/ns/a/sa/a map[service:web]"},
		{snap(svc, a, b), "add 10.0.0.2:80/ map[service:web]"},
		{snap(svc, b), "remove 10.0.0.1:80"},
		{discovery.Snapshot{Exists: true}, "no_endpoints exists"},
	}
	for i, st := range steps {
		if i > 0 {
			fb.set("web.ns:80", st.next)
		}
		if got := recv(t, stream); len(got) != 1 || got[0] != st.want {
			t.Fatalf("step %d: got %q, want %q", i, got, st.want)
		}
	}

	srv.Shutdown()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("after Shutdown: got %v, want UNAVAILABLE", err)
	}
}

func TestGetRejectsBadAuthority(t *testing.T) {
	srv, err := NewServer(&fakeBackend{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, srv)
	for _, auth := range []string{"", "web:notaport", "web:0", "web:70000"} {
		stream, err := client.Get(context.Background(), &destinationv1.GetDestination{Authority: auth})
		if err == nil {
			_, err = stream.Recv()
		}
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("authority %q: got %v, want INVALID_ARGUMENT", auth, err)
		}
	}
}

// BenchmarkFanOut measures one endpoint change reaching 1,000 open Get
// streams: an op is the time from the backend publishing the change until
// every stream's client has received it.
func BenchmarkFanOut(b *testing.B) {
	const streams = 1000
	fb := &fakeBackend{}
	srv, err := NewServer(fb, nil, nil)
	if err != nil {
		b.Fatal(err)
	}
	client := serve(b, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	base := map[netip.AddrPort]discovery.Endpoint{}
	for i := range 10 {
		e := ep(netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, 0, byte(i + 1)}), 80).String(), "spiffe://td/ns/a/sa/a")
		base[e.Addr] = e
	}
	labels := map[string]string{"service": "web"}
	fb.set("web.ns:80", discovery.Snapshot{Exists: true, Labels: labels, Endpoints: base})

	received := make(chan struct{}, streams)
	var wg sync.WaitGroup
	for range streams {
		stream, err := client.Get(ctx, &destinationv1.GetDestination{Authority: "web.ns:80"})
		if err != nil {
			b.Fatal(err)
		}
		if _, err := stream.Recv(); err != nil { // the initial add
			b.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				if _, err := stream.Recv(); err != nil {
					return
				}
				received <- struct{}{}
			}
		}()
	}

	extra := ep("10.0.1.1:80", "spiffe://td/ns/a/sa/a")
	b.ResetTimer()
	for i := range b.N {
		eps := make(map[netip.AddrPort]discovery.Endpoint, len(base)+1)
		for k, v := range base {
			eps[k] = v
		}
		if i%2 == 0 {
			eps[extra.Addr] = extra
		}
		fb.set("web.ns:80", discovery.Snapshot{Exists: true, Labels: labels, Endpoints: eps})
		for range streams {
			<-received
		}
	}
	b.StopTimer()
	cancel()
	wg.Wait()
}

// syncingBackend is a fakeBackend whose caches fill when the test says so.
type syncingBackend struct {
	*fakeBackend
	waiting chan struct{} // receives when a stream starts waiting
	synced  chan struct{}
}

func (b *syncingBackend) WaitSynced(ctx context.Context) error {
	b.waiting <- struct{}{}
	select {
	case <-b.synced:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestGetWaitsForSync(t *testing.T) {
	sb := &syncingBackend{fakeBackend: &fakeBackend{}, waiting: make(chan struct{}, 2), synced: make(chan struct{})}
	srv, err := NewServer(sb, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	client := serve(t, srv)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	// Before the caches are full, the backend would say there is no such service.
	sb.set("web.ns:80", discovery.Snapshot{Reason: "caches empty"})
	stream, err := client.Get(ctx, &destinationv1.GetDestination{Authority: "web.ns:80"})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-sb.waiting:
	case <-ctx.Done():
		t.Fatal("Get did not wait for the backend's caches")
	}
	sb.set("web.ns:80", snap(map[string]string{"service": "web"}, ep("10.0.0.1:80", "")))
	close(sb.synced)
	if got := recv(t, stream); len(got) != 1 || got[0] != "add 10.0.0.1:80/ map[service:web]" {
		t.Fatalf("first update %q, want the synced state", got)
	}

	// A stream still waiting when the server shuts down gets UNAVAILABLE.
	sb2 := &syncingBackend{fakeBackend: &fakeBackend{}, waiting: make(chan struct{}, 2), synced: make(chan struct{})}
	srv2, err := NewServer(sb2, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	stream2, err := serve(t, srv2).Get(ctx, &destinationv1.GetDestination{Authority: "web.ns:80"})
	if err != nil {
		t.Fatal(err)
	}
	<-sb2.waiting
	srv2.Shutdown()
	if _, err := stream2.Recv(); status.Code(err) != codes.Unavailable {
		t.Fatalf("got %v, want UNAVAILABLE", err)
	}
}
