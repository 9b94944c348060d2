package sidecar

import (
	"context"
	"log/slog"
	"testing"
	"time"
)

// TestConnectRoutes: the outbound route store exists with a controller,
// and is nil (no routes, as before) without one; Close stops it.
func TestConnectRoutes(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	pl, err := (&ControlPlane{}).Connect(context.Background(), log)
	if err != nil {
		t.Fatal(err)
	}
	if pl.Routes != nil || pl.Resolver != nil {
		t.Errorf("without a controller: Routes %v, Resolver %v; want nil", pl.Routes, pl.Resolver)
	}
	pl.Close()

	// Nothing listens there: the watch retries until Close.
	pl, err = (&ControlPlane{ControllerAddr: "127.0.0.1:1", PodNamespace: "shop"}).Connect(context.Background(), log)
	if err != nil {
		t.Fatal(err)
	}
	if pl.Routes == nil {
		t.Fatal("with a controller: no route store")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if tbl := pl.Routes.Lookup(ctx, "web.shop.svc.cluster.local:80"); tbl != nil {
		t.Errorf("unreachable controller: table %v, want none", tbl)
	}
	done := make(chan struct{})
	go func() { pl.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not return")
	}
}
