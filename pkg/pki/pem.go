package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
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

// ParseKey parses the first PEM block of data as a private key: SEC 1
// ("EC PRIVATE KEY"), PKCS #8 ("PRIVATE KEY") or PKCS #1 ("RSA PRIVATE KEY").
func ParseKey(data []byte) (crypto.Signer, error) {
	b, _ := pem.Decode(bytes.TrimSpace(data))
	if b == nil {
		return nil, errors.New("no PEM private key found")
	}
	switch b.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("unsupported PEM block %q (want EC PRIVATE KEY, PRIVATE KEY or RSA PRIVATE KEY)", b.Type)
	}
}

// EncodeCert returns der as a PEM CERTIFICATE block.
func EncodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// EncodeKey returns key as a PEM EC PRIVATE KEY block.
func EncodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding a private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
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
