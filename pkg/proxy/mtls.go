package proxy

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"github.com/conduitmesh/conduit/pkg/proxy/tlsconf"
)

// Proxy-to-proxy mTLS: the inbound side terminates it (terminateTLS), the
// upstream dialer originates it (originateTLS). Both speak tlsconf.ALPN with
// the certificates of Config.TLS.

// tlsFor reports whether connections to ep use proxy-to-proxy mTLS.
func (p *Proxy) tlsFor(ep resolve.Endpoint) bool {
	return ep.Identity != "" && p.cfg.TLS != nil
}

// terminateTLS completes a meshed peer's mTLS handshake and returns the
// connection and the peer's identity (its certificate's URI SAN).
func (p *Proxy) terminateTLS(c net.Conn) (net.Conn, string, error) {
	cfg := p.cfg.TLS.ServerConfig()
	if cfg == nil {
		return nil, "", errors.New("identity not ready")
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{tlsconf.ALPN}
	tc := tls.Server(c, cfg)
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.DetectTimeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, "", err
	}
	return tc, peerIdentity(tc.ConnectionState().PeerCertificates), nil
}

// peerIdentity is the SPIFFE ID (URI SAN) of a verified peer certificate.
func peerIdentity(chain []*x509.Certificate) string {
	if len(chain) == 0 {
		return ""
	}
	for _, u := range chain[0].URIs {
		return u.String()
	}
	if len(chain[0].DNSNames) > 0 {
		return chain[0].DNSNames[0]
	}
	return ""
}

// originateTLS completes the mTLS handshake with a meshed peer that must
// present serverID, over c, which it closes on failure. Handshake failures
// are *tlsError (the tls_handshake reason of the connect metrics).
func (p *Proxy) originateTLS(ctx context.Context, c net.Conn, serverID string) (net.Conn, error) {
	cfg := p.cfg.TLS.ClientConfig(serverID)
	if cfg == nil {
		c.Close()
		return nil, &tlsError{errors.New("identity not ready")}
	}
	cfg = cfg.Clone()
	cfg.NextProtos = []string{tlsconf.ALPN}
	tc := tls.Client(c, cfg)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, &tlsError{err}
	}
	// Hide the *tls.Conn: to net/http this is a cleartext stream.
	return &servedConn{Conn: tc}, nil
}

type tlsError struct{ err error }

func (e *tlsError) Error() string { return "mTLS handshake: " + e.err.Error() }
func (e *tlsError) Unwrap() error { return e.err }
