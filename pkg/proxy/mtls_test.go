package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

func newTestCA(t *testing.T) *pkitest.Cert {
	t.Helper()
	return pkitest.Anchor(t, "test trust anchor")
}

// provider is a tlsconf.Provider for one identity.
type provider struct {
	id   string
	ca   *pkitest.Cert
	cert tls.Certificate
}

func newProvider(t *testing.T, ca *pkitest.Cert, id string) *provider {
	t.Helper()
	return &provider{id: id, ca: ca, cert: pkitest.Workload(t, ca, id).TLS()}
}

func (p *provider) LocalID() string { return p.id }

func (p *provider) ServerConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{p.cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    p.ca.Pool(),
		MinVersion:   tls.VersionTLS13,
	}
}

func (p *provider) ClientConfig(serverID string) *tls.Config {
	return &tls.Config{
		Certificates:       []tls.Certificate{p.cert},
		MinVersion:         tls.VersionTLS13,
		InsecureSkipVerify: true, // verified below: chain to the anchors and the URI SAN
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no peer certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: p.ca.Pool(), Intermediates: inter}); err != nil {
				return err
			}
			if got := peerIdentity(cs.PeerCertificates); got != serverID {
				return fmt.Errorf("peer is %q, want %q", got, serverID)
			}
			return nil
		},
	}
}

func TestMTLSBetweenProxies(t *testing.T) {
	const (
		clientID = "spiffe://cluster.local/ns/default/sa/client"
		serverID = "spiffe://cluster.local/ns/default/sa/web"
	)
	ca := newTestCA(t)
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "hello from web over "+r.Proto)
	}))
	grpcApp, _ := startGRPCBackend(t)
	server := startProxy(t, Config{InboundTarget: app, TLS: newProvider(t, ca, serverID)})
	grpcServer := startProxy(t, Config{InboundTarget: grpcApp, TLS: newProvider(t, ca, serverID)})
	labels := map[string]string{"namespace": "default", "deployment": "web"}
	res := &fakeResolver{eps: map[string][]resolve.Endpoint{
		"web:80":       {{Addr: server.InboundAddr(), Identity: serverID, Labels: labels}},
		"grpc:80":      {{Addr: grpcServer.InboundAddr(), Identity: serverID, Labels: labels}},
		"impostor:80":  {{Addr: server.InboundAddr(), Identity: "spiffe://cluster.local/ns/default/sa/other"}},
		"plaintext:80": {{Addr: app}}, // not meshed
	}}
	client := startProxy(t, Config{Resolver: res, TLS: newProvider(t, ca, clientID)})

	get := func(c *http.Client, host string) (*http.Response, string) {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+client.OutboundAddr()+"/", nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b)
	}
	for _, c := range []*http.Client{newClient(t), newH2CClient(t)} {
		resp, body := get(c, "web")
		if resp.StatusCode != 200 || body != "hello from web over "+resp.Proto {
			t.Errorf("%s through mTLS: %d %q", resp.Proto, resp.StatusCode, body)
		}
	}
	resp, _ := get(newClient(t), "impostor")
	if resp.StatusCode != 502 || resp.Header.Get(ErrorHeader) != "mTLS handshake with the peer proxy failed" {
		t.Errorf("wrong server identity: %d %q, want 502", resp.StatusCode, resp.Header.Get(ErrorHeader))
	}
	resp, body := get(newClient(t), "plaintext")
	if resp.StatusCode != 200 || body != "hello from web over HTTP/1.1" {
		t.Errorf("unmeshed endpoint: %d %q", resp.StatusCode, body)
	}

	// gRPC inside mTLS: h2 is detected again after termination.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// grpc-go sends the dial target as :authority; route it by a name.
	cc := dialGRPC(t, client.OutboundAddr(), grpc.WithAuthority("grpc"))
	if _, err := cc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("over mtls")}}); err != nil {
		t.Errorf("gRPC through mTLS: %v", err)
	}

	wantMetric(t, client, 2, "response_total", `direction="outbound"`, `authority="web:80"`, `tls="true"`, `server_id="`+serverID+`"`, `dst_deployment="web"`, `status_code="200"`)
	wantMetric(t, client, 1, "response_total", `authority="plaintext:80"`, `tls="false"`)
	wantMetric(t, client, 1, "response_total", `authority="impostor:80"`, `status_code="502"`)
	wantMetric(t, client, 1, "conduit_proxy_errors_total", `direction="outbound"`, `error="tls_handshake"`)
	if got := metricSum(scrape(t, client), "tcp_open_total", `direction="outbound"`, `peer="dst"`, `tls="true"`, `server_id="`+serverID+`"`); got < 2 {
		t.Errorf("client proxy: mTLS connections = %v, want >= 2", got)
	}
	wantMetric(t, server, 2, "request_total", `direction="inbound"`, `tls="true"`, `client_id="`+clientID+`"`)
	if got := metricSum(scrape(t, server), "tcp_open_total", `direction="inbound"`, `peer="src"`, `tls="true"`, `client_id="`+clientID+`"`); got < 2 {
		t.Errorf("server proxy: mTLS connections = %v, want >= 2", got)
	}
	wantMetric(t, grpcServer, 1, "response_total", `direction="inbound"`, `tls="true"`, `grpc_status="0"`)
}

// TestOpaqueOverMTLS: an application's own TLS, routed on the outbound side
// by its SNI to a meshed endpoint, travels inside proxy-to-proxy mTLS and
// is relayed untouched to the server application.
func TestOpaqueOverMTLS(t *testing.T) {
	const (
		clientID = "spiffe://cluster.local/ns/default/sa/client"
		serverID = "spiffe://cluster.local/ns/db/sa/db"
	)
	ca := newTestCA(t)
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "end-to-end TLS")
	}))
	app.StartTLS()
	defer app.Close()
	server := startProxy(t, Config{InboundTarget: app.Listener.Addr().String(), TLS: newProvider(t, ca, serverID)})
	res := &fakeResolver{eps: map[string][]resolve.Endpoint{
		"example.com:443": {{Addr: server.InboundAddr(), Identity: serverID}},
	}}
	client := startProxy(t, Config{Resolver: res, TLS: newProvider(t, ca, clientID)})

	tr := app.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "example.com"
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + client.OutboundAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "end-to-end TLS" {
		t.Errorf("got %q", b)
	}
	wantMetric(t, client, 1, "tcp_open_total", `direction="outbound"`, `peer="dst"`, `tls="true"`, `server_id="`+serverID+`"`)
	wantMetric(t, server, 1, "tcp_open_total", `direction="inbound"`, `peer="src"`, `tls="true"`, `client_id="`+clientID+`"`)
	wantMetric(t, server, 0, "request_total", `direction="inbound"`)
}
