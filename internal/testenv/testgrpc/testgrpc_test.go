package testgrpc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// TestServe: a service registered on the in-memory server answers through
// the returned connection, still in the test's own cleanups, and not once
// the test has ended.
func TestServe(t *testing.T) {
	check := func(conn *grpc.ClientConn) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{Service: "conduit"})
		if err == nil && resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			err = fmt.Errorf("status %v, want SERVING", resp.GetStatus())
		}
		return err
	}
	var conn *grpc.ClientConn
	t.Run("serve", func(t *testing.T) {
		hs := health.NewServer()
		hs.SetServingStatus("conduit", healthpb.HealthCheckResponse_SERVING)
		conn = Serve(t, func(s *grpc.Server) { healthpb.RegisterHealthServer(s, hs) })
		if err := check(conn); err != nil {
			t.Fatalf("Check: %v", err)
		}
		t.Cleanup(func() {
			if err := check(conn); err != nil {
				t.Errorf("Check in the test's own cleanup: %v", err)
			}
		})
	})
	if err := check(conn); err == nil {
		t.Error("Check after the test ended succeeded: the connection was not closed")
	}
}
