package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"sync"
	"time"
)

// Issuer returns the issuer in use.
func (s *Server) Issuer() *Issuer { return s.issuer.Load() }

// ownCert is the controller's own certificate, issued by its own issuer.
type ownCert struct {
	mu       sync.Mutex // guards the fields below
	cert     *tls.Certificate
	issuer   *Issuer // that signed cert
	renewAt  time.Time
	notAfter time.Time
}

// Certificate returns a certificate for the controller's own identity (for
// example spiffe://cluster.local/ns/conduit/sa/conduit-controller), signed by
// the current issuer. It is renewed at 70 % of its lifetime and as soon as
// the issuer changes.
func (s *Server) Certificate(id ID) (*tls.Certificate, error) {
	s.own.mu.Lock()
	defer s.own.mu.Unlock()
	now := s.cfg.Now()
	is := s.issuer.Load()
	if s.own.cert != nil && s.own.issuer == is && now.Before(s.own.renewAt) {
		return s.own.cert, nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leaf, chain, notAfter, err := is.Issue(id, &key.PublicKey, now, s.cfg.Lifetime)
	if err != nil {
		return nil, fmt.Errorf("issuing the controller's own certificate: %w", err)
	}
	parsed, err := x509.ParseCertificate(leaf)
	if err != nil {
		return nil, err
	}
	cert := &tls.Certificate{Certificate: append([][]byte{leaf}, chain...), PrivateKey: key, Leaf: parsed}
	s.own.cert, s.own.issuer, s.own.notAfter = cert, is, notAfter
	s.own.renewAt = now.Add(notAfter.Sub(now) * 7 / 10)
	return cert, nil
}

// ServerTLS returns the TLS configuration of the controller's gRPC port: it
// presents the controller's own certificate for id. Client certificates are
// requested but not verified: no call is authorized by one (Certify checks
// a token), and a proxy whose certificate expired while the controller was
// away must still be able to connect and renew it.
func (s *Server) ServerTLS(id ID) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, err := s.Certificate(id)
			if err != nil {
				return nil, err
			}
			return &tls.Config{
				MinVersion:   tls.VersionTLS12,
				Certificates: []tls.Certificate{*cert},
				ClientAuth:   tls.RequestClientCert,
				NextProtos:   []string{"h2"},
			}, nil
		},
	}
}
