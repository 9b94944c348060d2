package destination

import (
	"context"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
)

// Without a route source (local discovery), every authority gets
// found=false once and the stream stays open; a malformed authority is
// refused. (package routes tests GetRoutes with its source.)
func TestGetRoutesWithoutSource(t *testing.T) {
	srv := mustServer(t)
	c := serve(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	s, err := c.GetRoutes(ctx, &destinationv1.GetDestination{Authority: "web.demo.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	m, err := s.Recv()
	if err != nil || m.GetFound() || len(m.GetRoutes()) != 0 {
		t.Fatalf("first message %v, %v; want found=false", m, err)
	}
	got := make(chan error, 1)
	go func() {
		_, err := s.Recv()
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("the stream ended: %v", err)
	case <-time.After(100 * time.Millisecond):
	}
	srv.Shutdown()
	if err := <-got; status.Code(err) != codes.Unavailable {
		t.Errorf("after Shutdown: %v, want UNAVAILABLE", err)
	}

	bad, err := serve(t, mustServer(t)).GetRoutes(ctx, &destinationv1.GetDestination{Authority: "web:port"})
	if err == nil {
		_, err = bad.Recv()
	}
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("malformed authority: %v, want INVALID_ARGUMENT", err)
	}
}

func mustServer(t *testing.T) *Server {
	t.Helper()
	srv, err := NewServer(&fakeBackend{}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	return srv
}
