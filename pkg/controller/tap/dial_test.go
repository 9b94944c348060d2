package tap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
	conduitproxy "github.com/conduitmesh/conduit/pkg/proxy"
	proxytap "github.com/conduitmesh/conduit/pkg/proxy/tap"
)

// issue makes id's certificate.
func issue(t *testing.T, ca *pkitest.Cert, id string) tls.Certificate {
	t.Helper()
	return pkitest.Workload(t, ca, id).TLS()
}

func newCA(t *testing.T) *pkitest.Cert {
	t.Helper()
	return pkitest.Anchor(t, "root")
}

const (
	controllerID = "spiffe://cluster.local/ns/conduit/sa/conduit-controller"
	webID        = "spiffe://cluster.local/ns/demo/sa/web"
)

// startTLSProxy serves a proxy's tap over TLS with a certificate for webID
// from ca.
func startTLSProxy(t *testing.T, ca *pkitest.Cert) (*proxytap.Server, string) {
	t.Helper()
	px := proxytap.NewServer(proxytap.Config{ControllerID: controllerID})
	hs := httptest.NewUnstartedServer(px.Handler())
	proxyCert := issue(t, ca, webID)
	hs.TLS = &tls.Config{Certificates: []tls.Certificate{proxyCert}, ClientAuth: tls.VerifyClientCertIfGiven, ClientCAs: ca.Pool(),
		NextProtos: []string{"h2"}}
	hs.EnableHTTP2 = true
	hs.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are part of the tests
	hs.StartTLS()
	t.Cleanup(hs.Close)
	return px, hs.Listener.Addr().String()
}

// observeOne taps pod through dial and waits for one event, which it makes
// px send once the stream is open.
func observeOne(dial Dialer, px *proxytap.Server, pod stats.Pod) error {
	client, closeFn, err := dial(context.Background(), pod)
	if err != nil {
		return err
	}
	defer closeFn()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := client.Observe(ctx, &tapv1.ObserveRequest{Limit: 1})
	if err != nil {
		return err
	}
	go func() {
		for px.Subscribers() == 0 && ctx.Err() == nil {
			time.Sleep(5 * time.Millisecond)
		}
		if ro := px.RequestStarted(&conduitproxy.Request{Direction: "inbound", Method: "GET", Path: "/"}); ro != nil {
			ro.ResponseStarted(&conduitproxy.Response{Status: http.StatusOK})
		}
	}()
	_, err = st.Recv()
	return err
}

func TestMTLSDialer(t *testing.T) {
	ca := newCA(t)
	px, addr := startTLSProxy(t, ca)
	observe := func(clientID, podID string) error {
		cert := issue(t, ca, clientID)
		dial := MTLSDialer(func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }, func() *x509.CertPool { return ca.Pool() })
		return observeOne(dial, px, stats.Pod{Namespace: "demo", Name: "web-0", AdminAddr: addr, Identity: podID})
	}
	if err := observe(controllerID, webID); err != nil {
		t.Errorf("the controller over mTLS: %v", err)
	}
	if err := observe("spiffe://cluster.local/ns/demo/sa/books", webID); status.Code(err) != codes.PermissionDenied {
		t.Errorf("another identity: %v, want PermissionDenied", err)
	}
	if err := observe(controllerID, "spiffe://cluster.local/ns/demo/sa/impostor"); err == nil {
		t.Errorf("a proxy with the wrong identity was trusted")
	}
}

// TestMTLSDialerRotatingRoots: the dialer reads the trust anchors at each
// handshake, so that a rotation applies to the next tap without a restart.
func TestMTLSDialerRotatingRoots(t *testing.T) {
	oldCA, newCA := newCA(t), newCA(t)
	px, addr := startTLSProxy(t, newCA)
	var roots atomic.Pointer[x509.CertPool]
	roots.Store(oldCA.Pool())
	cert := issue(t, newCA, controllerID)
	dial := MTLSDialer(func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return &cert, nil }, roots.Load)
	pod := stats.Pod{Namespace: "demo", Name: "web-0", AdminAddr: addr, Identity: webID}
	if err := observeOne(dial, px, pod); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "unknown authority") {
		t.Errorf("a proxy certified by anchors the controller does not have yet: %v, want Unavailable (unknown authority)", err)
	}
	roots.Store(newCA.Pool())
	if err := observeOne(dial, px, pod); err != nil {
		t.Errorf("after the rotation: %v", err)
	}
	roots.Store(nil)
	if err := observeOne(dial, px, pod); status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "no trust anchors") {
		t.Errorf("without anchors: %v, want Unavailable (no trust anchors)", err)
	}
}

func TestMeshDialer(t *testing.T) {
	var got []string
	dialer := func(name string) Dialer {
		return func(_ context.Context, pod stats.Pod) (tapv1.TapClient, func(), error) {
			got = append(got, pod.Name+":"+name)
			return nil, func() {}, nil
		}
	}
	dial := MeshDialer(dialer("mtls"), dialer("plaintext"))
	for _, pod := range []stats.Pod{{Name: "web-0", Identity: webID}, {Name: "legacy-0"}} {
		if _, _, err := dial(context.Background(), pod); err != nil {
			t.Fatal(err)
		}
	}
	if want := "web-0:mtls legacy-0:plaintext"; strings.Join(got, " ") != want {
		t.Errorf("dialed %v, want %s", got, want)
	}
}
