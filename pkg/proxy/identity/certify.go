package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
)

// certifyMethod is the full gRPC method name of Identity.Certify.
const certifyMethod = "/conduit.identity.v1.Identity/Certify"

// Run obtains the proxy's certificate and renews it at RenewFraction of its
// lifetime until ctx ends. Failed calls are retried with exponential
// backoff and jitter; the current certificate stays in use meanwhile.
func (p *Provider) Run(ctx context.Context) {
	log := p.cfg.Log.With("identity", p.cfg.Name)
	failures := 0
	for {
		var wait time.Duration
		cert, err := p.certify(ctx)
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			wait = grpcwire.Backoff(p.cfg.RetryBase, p.cfg.RetryMax, failures)
			failures++
			// A refused token or identity is a configuration error that
			// retrying may not fix; say so loudly, but keep trying
			// (a projected token may be replaced).
			level := "warn"
			switch grpcwire.CodeOf(err) {
			case grpcwire.Unauthenticated, grpcwire.PermissionDenied, grpcwire.InvalidArgument:
				level = "error"
			}
			if level == "error" {
				log.Error("certificate request refused", "err", err, "retry_in", wait)
			} else {
				log.Warn("certificate request failed", "err", err, "retry_in", wait)
			}
			if c := p.cert.Load(); c != nil {
				// Never wait past the current certificate's expiry by much.
				if left := c.Leaf.NotAfter.Sub(p.cfg.Now()); left > 0 && wait > left/2 {
					wait = max(left/2, p.cfg.RetryBase)
				}
			}
		} else {
			failures = 0
			p.cert.Store(cert)
			p.once.Do(func() { close(p.ready) })
			now := p.cfg.Now()
			lifetime := cert.Leaf.NotAfter.Sub(now)
			wait = time.Duration(float64(lifetime) * p.cfg.RenewFraction)
			log.Info("certified", "valid_until", cert.Leaf.NotAfter.UTC().Format(time.RFC3339), "renew_in", wait.Round(time.Millisecond))
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// certify makes one Certify call and checks the answer.
func (p *Provider) certify(ctx context.Context) (*tls.Certificate, error) {
	token, err := os.ReadFile(p.cfg.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("reading identity token: %w", err)
	}
	token = []byte(strings.TrimSpace(string(token)))
	if len(token) == 0 {
		return nil, fmt.Errorf("identity token file %s is empty", p.cfg.TokenFile)
	}
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		URIs: []*url.URL{p.id},
	}, p.key)
	if err != nil {
		return nil, fmt.Errorf("creating certificate signing request: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.CallTimeout)
	defer cancel()
	resp, err := p.cfg.Client.Unary(ctx, certifyMethod, encodeCertifyRequest(p.cfg.Name, token, csr))
	if err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	leafDER, chainDER, err := decodeCertifyResponse(resp)
	if err != nil {
		return nil, fmt.Errorf("certify: %w", err)
	}
	return p.checkIssued(leafDER, chainDER)
}

// checkIssued verifies that the controller signed our key for our identity
// under the trust anchors, and builds the tls.Certificate.
func (p *Provider) checkIssued(leafDER []byte, chainDER [][]byte) (*tls.Certificate, error) {
	leaf, err := x509.ParseCertificate(leafDER)
	if err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	if pub, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !pub.Equal(p.key.Public()) {
		return nil, errors.New("issued certificate is not for the proxy's key")
	}
	chain := []*x509.Certificate{leaf}
	for _, der := range chainDER {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("issued intermediate certificate: %w", err)
		}
		chain = append(chain, c)
	}
	if _, err := p.verifyPeer(chain, p.cfg.Name); err != nil {
		return nil, fmt.Errorf("issued certificate: %w", err)
	}
	return &tls.Certificate{
		Certificate: append([][]byte{leafDER}, chainDER...),
		PrivateKey:  p.key,
		Leaf:        leaf,
	}, nil
}

// encodeCertifyRequest encodes a conduit.identity.v1.CertifyRequest by hand
// (see pkg/proxy/destination for why the proxy does not link pkg/api).
func encodeCertifyRequest(identity string, token, csr []byte) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, identity)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendBytes(b, token)
	b = protowire.AppendTag(b, 3, protowire.BytesType)
	b = protowire.AppendBytes(b, csr)
	return b
}

// decodeCertifyResponse decodes a conduit.identity.v1.CertifyResponse; the
// leaf's own NotAfter is authoritative, so valid_until is not needed.
func decodeCertifyResponse(b []byte) (leaf []byte, chain [][]byte, err error) {
	err = grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			leaf = f.Bytes
		case 2:
			chain = append(chain, f.Bytes)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("malformed certify response: %w", err)
	}
	if len(leaf) == 0 {
		return nil, nil, errors.New("certify response has no certificate")
	}
	return leaf, chain, nil
}
