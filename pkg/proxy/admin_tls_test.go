package proxy

import (
	"crypto/tls"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/tlsconf"
)

// TestAdminTLS checks that the admin port speaks TLS with the proxy's
// identity (HTTP/2 and HTTP/1.1 by ALPN) next to plaintext, and refuses
// TLS when the proxy has no certificate.
func TestAdminTLS(t *testing.T) {
	ca := newTestCA(t)
	const webID, controllerID = "spiffe://cluster.local/ns/demo/sa/web", "spiffe://cluster.local/ns/conduit/sa/conduit-controller"
	client := newProvider(t, ca, controllerID)
	tests := []struct {
		name   string
		tls    tlsconf.Provider
		protos []string
		want   string // the protocol served; "" when the handshake must fail
	}{
		{"h2 with identity", newProvider(t, ca, webID), []string{"h2"}, "HTTP/2.0"},
		{"http/1.1 with identity", newProvider(t, ca, webID), []string{"http/1.1"}, "HTTP/1.1"},
		{"no identity", nil, []string{"h2"}, ""},
		{"certificate not issued yet", &readyProvider{}, []string{"h2"}, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, Config{InboundTarget: "127.0.0.1:1", TLS: tc.tls})
			if code, body := adminDo(t, p, "GET", "/live", ""); code != http.StatusOK {
				t.Errorf("plaintext /live: %d %q", code, body)
			}
			cfg := client.ClientConfig(webID)
			cfg.NextProtos = tc.protos
			tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: tc.want != "HTTP/1.1"}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + p.AdminAddr() + "/live")
			if tc.want == "" {
				if err == nil {
					resp.Body.Close()
					t.Fatalf("TLS without a proxy certificate: %s, want the handshake to fail", resp.Status)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)
			if resp.StatusCode != http.StatusOK || resp.Proto != tc.want || resp.TLS == nil {
				t.Errorf("/live over TLS: %s %s %q, want 200 over %s", resp.Proto, resp.Status, body, tc.want)
			}
		})
	}
}

// TestAdminTLSNeedsClientCertificate: the identity's server configuration
// requires a verified client certificate on the admin port as well.
func TestAdminTLSNeedsClientCertificate(t *testing.T) {
	ca := newTestCA(t)
	p := startProxy(t, Config{InboundTarget: "127.0.0.1:1", TLS: newProvider(t, ca, "spiffe://cluster.local/ns/demo/sa/web")})
	for name, cert := range map[string][]tls.Certificate{
		"none":              nil,
		"from another root": {newProvider(t, newTestCA(t), "spiffe://cluster.local/ns/conduit/sa/conduit-controller").cert},
	} {
		c, err := tls.Dial("tcp", p.AdminAddr(), &tls.Config{InsecureSkipVerify: true, Certificates: cert, NextProtos: []string{"h2"}})
		if err == nil {
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			_, err = c.Read(make([]byte, 1)) // TLS 1.3: the server's verdict comes after the client's Finished
			c.Close()
		}
		if err == nil {
			t.Errorf("client certificate %s: accepted", name)
		}
	}
}
