// Package pemcert reads PEM certificate bundles: trust anchors, issuer
// certificates. It uses only the standard library, so the proxy, the
// controller and the CLI all share it.
package pemcert

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
)

// ErrNone means the data held no CERTIFICATE block.
var ErrNone = errors.New("no PEM certificate")

// Parse returns every CERTIFICATE block of data, in order; other block types
// (keys, for instance) are skipped. Every certificate must parse, and there
// must be at least one.
func Parse(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		if b, data = pem.Decode(data); b == nil {
			break
		}
		if b.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("certificate %d: %w", len(certs)+1, err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, ErrNone
	}
	return certs, nil
}

// Pool parses data like Parse into a certificate pool.
func Pool(data []byte) (*x509.CertPool, error) {
	certs, err := Parse(data)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		pool.AddCert(c)
	}
	return pool, nil
}
