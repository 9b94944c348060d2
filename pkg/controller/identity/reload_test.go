package identity

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki"
)

func TestWatchIssuer(t *testing.T) {
	dir := t.TempDir()
	a, _ := pki.Generate(time.Now(), "cluster.local", time.Hour, time.Hour)
	b, _ := pki.Generate(time.Now(), "cluster.local", time.Hour, time.Hour)
	if err := a.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan *Issuer, 10)
	done := make(chan struct{})
	go func() {
		WatchIssuer(ctx, dir, "", 5*time.Millisecond, func(is *Issuer) { got <- is }, slog.New(slog.DiscardHandler))
		close(done)
	}()
	defer func() {
		cancel()
		<-done
	}()

	// Half a rotation (a new key with the old certificate) is not an issuer: nothing happens.
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), b.IssuerKeyPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
		t.Fatal("a mismatched key and certificate were loaded")
	case <-time.After(100 * time.Millisecond):
	}
	if err := b.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	select {
	case is := <-got:
		if !bytes.Equal(is.AnchorsPEM(), b.AnchorPEM) {
			t.Error("the reloaded issuer has the old trust anchors")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the rotated issuer was not loaded")
	}
}
