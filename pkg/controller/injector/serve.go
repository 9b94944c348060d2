package injector

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Serve serves h over TLS on addr until ctx is done, with the certificate
// and key read from certDir/tls.crt and certDir/tls.key and read again
// whenever those files change (a Secret volume update swaps them).
func Serve(ctx context.Context, addr, certDir string, h http.Handler) error {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("webhook: listening on %s: %w", addr, err)
	}
	return ServeListener(ctx, ln, certDir, h)
}

// ServeListener is Serve on an existing listener, which it closes.
func ServeListener(ctx context.Context, ln net.Listener, certDir string, h http.Handler) error {
	certs, err := newCertReloader(certDir)
	if err != nil {
		ln.Close()
		return err
	}
	srv := &http.Server{
		Handler:           h,
		TLSConfig:         &tls.Config{GetCertificate: certs.get, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       90 * time.Second,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-errc:
		return fmt.Errorf("webhook: serving: %w", err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		srv.Close()
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("webhook: serving: %w", err)
	}
	return nil
}

// certReloader hands out the serving certificate, reloading it when the
// files' identity, size or modification time change. A failed reload keeps
// the previous certificate (a half-written update is retried next time).
type certReloader struct {
	certFile, keyFile string

	mu       sync.Mutex // guards the fields below
	cert     *tls.Certificate
	certStat os.FileInfo
	keyStat  os.FileInfo
}

func newCertReloader(dir string) (*certReloader, error) {
	r := &certReloader{certFile: filepath.Join(dir, "tls.crt"), keyFile: filepath.Join(dir, "tls.key")}
	if err := r.reload(); err != nil {
		return nil, err
	}
	return r, nil
}

func (r *certReloader) reload() error {
	cs, err := os.Stat(r.certFile)
	if err != nil {
		return fmt.Errorf("webhook certificate: %w", err)
	}
	ks, err := os.Stat(r.keyFile)
	if err != nil {
		return fmt.Errorf("webhook key: %w", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cert != nil && sameFile(r.certStat, cs) && sameFile(r.keyStat, ks) {
		return nil
	}
	cert, err := tls.LoadX509KeyPair(r.certFile, r.keyFile)
	if err != nil {
		return fmt.Errorf("webhook certificate %s: %w", r.certFile, err)
	}
	r.cert, r.certStat, r.keyStat = &cert, cs, ks
	return nil
}

func sameFile(a, b os.FileInfo) bool {
	return os.SameFile(a, b) && a.ModTime().Equal(b.ModTime()) && a.Size() == b.Size()
}

func (r *certReloader) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if err := r.reload(); err != nil {
		slog.Warn("keeping the previous webhook certificate", "err", err)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cert, nil
}
