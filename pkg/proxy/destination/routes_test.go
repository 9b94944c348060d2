package destination

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/route"
)

var _ route.Watcher = (*Resolver)(nil)

// GetRoutes sends the authority's current table (an empty one when it has
// none), then whatever publishRoutes publishes.
func (f *fakeDestination) GetRoutes(req *destinationv1.GetDestination, s grpc.ServerStreamingServer[destinationv1.OutboundRoutes]) error {
	if req.Authority == "bad.demo.svc.cluster.local:80" {
		f.mu.Lock()
		f.opened["routes "+req.Authority]++
		f.mu.Unlock()
		return status.Error(codes.InvalidArgument, "bad authority")
	}
	ch := make(chan *destinationv1.OutboundRoutes, 16)
	f.mu.Lock()
	f.opened["routes "+req.Authority]++
	cur := f.routes[req.Authority]
	f.routeSubs[req.Authority] = append(f.routeSubs[req.Authority], ch)
	f.mu.Unlock()
	if cur == nil {
		cur = &destinationv1.OutboundRoutes{}
	}
	for {
		if err := s.Send(cur); err != nil {
			return err
		}
		select {
		case <-s.Context().Done():
			return nil
		case cur = <-ch:
		}
	}
}

func (f *fakeDestination) publishRoutes(authority string, m *destinationv1.OutboundRoutes) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.routes[authority] = m
	for _, ch := range f.routeSubs[authority] {
		ch <- m
	}
}

func routesNamed(name string) *destinationv1.OutboundRoutes {
	return &destinationv1.OutboundRoutes{Found: true, Routes: []*destinationv1.OutboundRoute{{
		Ref: &policyv1.Ref{Kind: "httproute", Name: name, Namespace: "demo"}, Rules: []*destinationv1.OutboundRule{{}},
	}}}
}

// watchRoutes runs WatchRoutes until the test ends; its messages arrive on
// the channel, and it closes when WatchRoutes returns.
func watchRoutes(t *testing.T, r *Resolver, authority string) <-chan []byte {
	ctx, cancel := context.WithCancel(context.Background())
	msgs := make(chan []byte, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		r.WatchRoutes(ctx, authority, func(msg []byte) { msgs <- msg })
		close(msgs)
	}()
	t.Cleanup(func() { cancel(); <-done })
	return msgs
}

func next(t *testing.T, msgs <-chan []byte) *destinationv1.OutboundRoutes {
	t.Helper()
	select {
	case msg, ok := <-msgs:
		if !ok {
			t.Fatal("WatchRoutes returned")
		}
		var m destinationv1.OutboundRoutes
		if err := proto.Unmarshal(msg, &m); err != nil {
			t.Fatal(err)
		}
		return &m
	case <-time.After(10 * time.Second):
		t.Fatal("no message")
	}
	return nil
}

func TestWatchRoutes(t *testing.T) {
	f := newFake()
	f.routes[books] = routesNamed("v1")
	srv, addr := serve(t, "127.0.0.1:0", f)
	r := newResolver(t, addr, Config{})

	msgs := watchRoutes(t, r, "books:8080") // normalized as Get's authorities
	if m := next(t, msgs); !proto.Equal(m, routesNamed("v1")) {
		t.Fatalf("first table %v", m)
	}
	f.publishRoutes(books, routesNamed("v2"))
	if m := next(t, msgs); !proto.Equal(m, routesNamed("v2")) {
		t.Fatalf("second table %v", m)
	}

	// The controller restarts: the stream is opened again, and its first
	// table arrives.
	srv.Stop()
	f2 := newFake()
	f2.routes[books] = routesNamed("v3")
	serve(t, addr, f2)
	if m := next(t, msgs); !proto.Equal(m, routesNamed("v3")) {
		t.Fatalf("table after the restart %v", m)
	}

	// Refused or invalid authorities: one empty message, a Service the
	// controller does not know.
	for _, a := range []string{"bad", "a:b:c"} {
		msgs := watchRoutes(t, r, a)
		if m := next(t, msgs); m.Found || len(m.Routes) > 0 {
			t.Errorf("%s: %v", a, m)
		}
		select {
		case msg := <-msgs:
			t.Errorf("%s: a second message %q", a, msg)
		case <-time.After(100 * time.Millisecond):
		}
	}
	// (asked again every BackoffMax, 50 ms here, but handed over once)
	if opened, _ := f2.counts("routes bad.demo.svc.cluster.local:80"); opened == 0 {
		t.Error("the refused authority was never asked for")
	}

	// Closing the Resolver ends every watch.
	r.Close()
	select {
	case _, ok := <-msgs:
		if ok {
			t.Fatal("a message after Close")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WatchRoutes still runs after the Resolver closed")
	}
}
