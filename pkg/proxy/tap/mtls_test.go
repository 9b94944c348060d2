package tap

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	ctlidentity "github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/controller/identity/identitytest"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
	ctltap "github.com/conduitmesh/conduit/pkg/controller/tap"
	"github.com/conduitmesh/conduit/pkg/pki"
	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	"github.com/conduitmesh/conduit/pkg/proxy/identity"
)

var (
	controllerID = ctlidentity.ID{TrustDomain: "cluster.local", Namespace: "conduit", ServiceAccount: "conduit-controller"}
	webID        = ctlidentity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "web"}
	booksID      = ctlidentity.ID{TrustDomain: "cluster.local", Namespace: "demo", ServiceAccount: "books"}
)

// mesh is a real identity service (the controller's, with local tokens), a
// proxy that got its certificate from it, with tap on its admin port, and a
// backend behind the proxy's inbound side.
type mesh struct {
	ids   *ctlidentity.Server
	proxy *proxy.Proxy
	taps  *Server
}

func startMesh(t *testing.T, backend http.Handler) *mesh {
	t.Helper()
	svc := identitytest.Start(t, identitytest.Options{Tokens: map[string]string{"web-token": webID.String()}})
	dir, is, ids := svc.Dir, svc.Issuer, svc.Server
	tokenFile := filepath.Join(dir, "web-token")
	if err := os.WriteFile(tokenFile, []byte("web-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn, err := grpcwire.New(svc.Addr, grpcwire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	provider, err := identity.New(identity.Config{Name: webID.String(), TokenFile: tokenFile, TrustAnchors: is.Anchors(), Client: conn})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	idDone := make(chan struct{})
	go func() { defer close(idDone); provider.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-idDone })
	wctx, wcancel := context.WithTimeout(ctx, 10*time.Second)
	defer wcancel()
	if err := provider.WaitReady(wctx); err != nil {
		t.Fatal(err)
	}

	hs := httptest.NewServer(backend)
	t.Cleanup(hs.Close)
	taps := NewServer(Config{ControllerID: controllerID.String()})
	p, err := proxy.New(proxy.Config{
		InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", InboundTarget: strings.TrimPrefix(hs.URL, "http://"),
		TLS: provider, Observer: taps,
		AdminRoutes:  map[string]http.Handler{ObservePath: taps.Handler()},
		ExtraMetrics: []func(io.Writer) error{taps.WriteMetrics},
	})
	if err != nil {
		t.Fatal(err)
	}
	pctx, pcancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(pctx) }()
	t.Cleanup(func() {
		pcancel()
		if err := <-done; err != nil {
			t.Errorf("proxy: %v", err)
		}
	})
	return &mesh{ids: ids, proxy: p, taps: taps}
}

// issue returns a certificate for id from the mesh's issuer.
func (m *mesh) issue(t *testing.T, id ctlidentity.ID) *tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, chain, _, err := m.ids.Issuer().Issue(id, &key.PublicKey, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return &tls.Certificate{Certificate: append([][]byte{leaf}, chain...), PrivateKey: key}
}

func (m *mesh) anchors() *x509.CertPool { return m.ids.Issuer().Anchors() }

// observe opens Observe on the proxy's admin port as the controller does
// (pkg/controller/tap.MTLSDialer), presenting cert.
func (m *mesh) observe(ctx context.Context, t *testing.T, cert *tls.Certificate, req *tapv1.ObserveRequest) (tapv1.Tap_ObserveClient, error) {
	t.Helper()
	dial := ctltap.MTLSDialer(func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }, m.anchors)
	client, closeFn, err := dial(ctx, stats.Pod{Namespace: "demo", Name: "web-0", AdminAddr: m.proxy.AdminAddr(), Identity: webID.String()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(closeFn)
	st, err := client.Observe(ctx, req)
	if err != nil {
		return nil, err
	}
	// The proxy subscribes the stream before it sends the response
	// headers; a refused stream is trailers-only and fails at Recv.
	if _, err := st.Header(); err != nil {
		return nil, err
	}
	if m.taps.Subscribers() == 0 {
		_, err := st.Recv()
		return nil, err
	}
	return st, nil
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()
	client := &http.Client{Timeout: 10 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestTapOverMTLS taps a real proxy as the controller does in a cluster:
// over mutual TLS on the admin port, which still serves plaintext
// /metrics and /ready.
func TestTapOverMTLS(t *testing.T) {
	m := startMesh(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello")
	}))
	admin := m.proxy.AdminAddr()

	// Connections that send nothing, or one byte, and stall: they hold
	// only their own goroutine.
	var stalled []net.Conn
	for _, first := range []string{"", "\x16", "G"} {
		c, err := net.Dial("tcp", admin)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if _, err := io.WriteString(c, first); err != nil {
			t.Fatal(err)
		}
		stalled = append(stalled, c)
	}

	if code, body := get(t, "http://"+admin+"/ready"); code != http.StatusOK {
		t.Errorf("plaintext /ready: %d %s", code, body)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	own, err := m.ids.Certificate(controllerID)
	if err != nil {
		t.Fatal(err)
	}
	st, err := m.observe(ctx, t, own, &tapv1.ObserveRequest{Limit: 3})
	if err != nil {
		t.Fatalf("the controller's identity over mTLS: %v", err)
	}
	if code, body := get(t, "http://"+m.proxy.InboundAddr()+"/books"); code != http.StatusOK || body != "hello" {
		t.Fatalf("request through the proxy: %d %q", code, body)
	}
	var kinds []string
	for {
		ev, err := st.Recv()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Recv after %v: %v", kinds, err)
		}
		h := ev.GetHttp()
		switch {
		case h.GetRequestInit() != nil:
			kinds = append(kinds, "req "+h.GetRequestInit().GetPath())
		case h.GetResponseInit() != nil:
			kinds = append(kinds, "rsp")
		case h.GetResponseEnd() != nil:
			kinds = append(kinds, "end")
		}
	}
	if got := strings.Join(kinds, ","); got != "req /books,rsp,end" {
		t.Errorf("events = %s, want req /books,rsp,end", got)
	}

	code, metrics := get(t, "http://"+admin+"/metrics")
	if code != http.StatusOK || !strings.Contains(metrics, "tap_subscribers ") {
		t.Errorf("plaintext /metrics: %d, tap metrics missing:\n%.300s", code, metrics)
	}

	// The stalled connections are still open: nothing waited for them.
	for i, c := range stalled {
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		var b [1]byte
		if _, err := c.Read(b[:]); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("stalled connection %d: read %v, want it still waiting", i, err)
		}
	}
}

// TestTapOverMTLSRefusesOthers checks who may not tap: another meshed
// identity, a client without certificate, and a certificate naming the
// controller from another trust anchor.
func TestTapOverMTLSRefusesOthers(t *testing.T) {
	m := startMesh(t, http.NotFoundHandler())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	_, err := m.observe(ctx, t, m.issue(t, booksID), &tapv1.ObserveRequest{})
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), booksID.String()) {
		t.Errorf("another meshed identity: %v, want PermissionDenied naming %s", err, booksID)
	}

	// No client certificate: the handshake is refused.
	c, err := tls.Dial("tcp", m.proxy.AdminAddr(), &tls.Config{InsecureSkipVerify: true, NextProtos: []string{"h2"}})
	if err == nil {
		c.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = c.Read(make([]byte, 1)) // TLS 1.3: the server's alert arrives after the client's Finished
		c.Close()
	}
	if err == nil || !strings.Contains(err.Error(), "certificate required") {
		t.Errorf("TLS without a client certificate: %v, want the handshake refused", err)
	}

	// The controller's name, signed by another trust anchor.
	other, err := pki.Generate(time.Now(), "cluster.local", time.Hour, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := other.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	otherIssuer, err := ctlidentity.LoadIssuer(dir, "", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leaf, chain, _, err := otherIssuer.Issue(controllerID, &key.PublicKey, time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	impostor := &tls.Certificate{Certificate: append([][]byte{leaf}, chain...), PrivateKey: key}
	if _, err := m.observe(ctx, t, impostor, &tapv1.ObserveRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("the controller's name from another trust anchor: %v, want the connection refused (Unavailable)", err)
	}
	if n := m.taps.Subscribers(); n != 0 {
		t.Errorf("%d subscribers, want none", n)
	}
}
