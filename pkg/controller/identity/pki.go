package identity

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// PKI is a trust anchor and an issuer certificate signed by it, PEM-encoded,
// as `conduit install` and `conduit demo` create them.
type PKI struct {
	AnchorPEM     []byte // ca.crt
	IssuerCertPEM []byte // tls.crt
	IssuerKeyPEM  []byte // tls.key
}

// GeneratePKI creates a self-signed ECDSA P-256 trust anchor and an issuer
// signed by it for trustDomain, both valid from now for lifetime.
func GeneratePKI(now time.Time, trustDomain string, lifetime time.Duration) (*PKI, error) {
	anchorKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	anchorTmpl, err := caTemplate(now, "root.conduit."+trustDomain, lifetime, 1)
	if err != nil {
		return nil, err
	}
	anchorDER, err := x509.CreateCertificate(rand.Reader, anchorTmpl, anchorTmpl, &anchorKey.PublicKey, anchorKey)
	if err != nil {
		return nil, fmt.Errorf("creating trust anchor: %w", err)
	}
	anchor, err := x509.ParseCertificate(anchorDER)
	if err != nil {
		return nil, err
	}
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	issuerTmpl, err := caTemplate(now, "identity.conduit."+trustDomain, lifetime, 0)
	if err != nil {
		return nil, err
	}
	issuerDER, err := x509.CreateCertificate(rand.Reader, issuerTmpl, anchor, &issuerKey.PublicKey, anchorKey)
	if err != nil {
		return nil, fmt.Errorf("creating issuer: %w", err)
	}
	keyDER, err := x509.MarshalECPrivateKey(issuerKey)
	if err != nil {
		return nil, err
	}
	return &PKI{
		AnchorPEM:     pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: anchorDER}),
		IssuerCertPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: issuerDER}),
		IssuerKeyPEM:  pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}, nil
}

func caTemplate(now time.Time, cn string, lifetime time.Duration, maxPathLen int) (*x509.Certificate, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}, nil
}

func newSerial() (*big.Int, error) {
	return rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
}

// WriteDir writes ca.crt, tls.crt and tls.key (mode 0600) into dir, the
// layout --identity-issuer-dir reads.
func (p *PKI) WriteDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	for name, data := range map[string][]byte{"ca.crt": p.AnchorPEM, "tls.crt": p.IssuerCertPEM, "tls.key": p.IssuerKeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			return fmt.Errorf("writing issuer: %w", err)
		}
	}
	return nil
}
