package injector

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
)

// writeCert writes a self-signed serving certificate for 127.0.0.1 into
// dir/tls.crt and dir/tls.key and returns it.
func writeCert(t *testing.T, dir, cn string) *x509.Certificate {
	t.Helper()
	c := pkitest.Anchor(t, cn, func(c *x509.Certificate) {
		c.KeyUsage |= x509.KeyUsageDigitalSignature
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		c.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	})
	// Write to temporary names and rename, as a Secret volume update does.
	for name, data := range map[string][]byte{"tls.crt": c.PEM(), "tls.key": c.KeyPEM(t)} {
		tmp := filepath.Join(dir, "."+name+".tmp")
		if err := os.WriteFile(tmp, data, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	return c.Cert
}

// servedCN dials the server and returns the CommonName it presents.
func servedCN(t *testing.T, addr string) string {
	t.Helper()
	conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	return conn.ConnectionState().PeerCertificates[0].Subject.CommonName
}

func TestServeReloadsCertificate(t *testing.T) {
	dir := t.TempDir()
	first := writeCert(t, dir, "first")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeListener(ctx, ln, dir, testHandler(testNamespaces())) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	pool := x509.NewCertPool()
	pool.AddCert(first)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 10 * time.Second}
	resp, err := client.Post("https://"+ln.Addr().String()+"/inject", "application/json", strings.NewReader(string(review("CREATE", "Pod", "meshed", plainPod))))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	client.CloseIdleConnections()

	if got := servedCN(t, ln.Addr().String()); got != "first" {
		t.Fatalf("serving %q, want first", got)
	}
	writeCert(t, dir, "second")
	if got := servedCN(t, ln.Addr().String()); got != "second" {
		t.Fatalf("after the update serving %q, want second", got)
	}
	// A broken update keeps the last good certificate.
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if got := servedCN(t, ln.Addr().String()); got != "second" {
		t.Fatalf("after a broken update serving %q, want second", got)
	}
}

func TestServeErrors(t *testing.T) {
	ctx := context.Background()
	if err := Serve(ctx, "127.0.0.1:0", t.TempDir(), http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "tls.crt") {
		t.Errorf("missing certificate: %v", err)
	}
	if err := Serve(ctx, "256.0.0.1:x", t.TempDir(), http.NotFoundHandler()); err == nil || !strings.Contains(err.Error(), "listening") {
		t.Errorf("bad address: %v", err)
	}
	dir := t.TempDir()
	writeCert(t, dir, "x")
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := Serve(cctx, "127.0.0.1:0", dir, http.NotFoundHandler()); err != nil {
		t.Errorf("Serve after cancel: %v", err)
	}
}
