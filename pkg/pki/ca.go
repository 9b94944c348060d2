package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// ClockSkew backdates NotBefore so a slightly slow clock accepts a freshly
// made certificate.
const ClockSkew = 5 * time.Minute

// MinLeafLifetime is the shortest lifetime of the workload certificates
// the controller issues (--identity-lifetime, the chart's
// identity.issuer.issuanceLifetime): a proxy renews its certificate well
// before it expires, which a shorter one would not leave time for.
const MinLeafLifetime = time.Minute

// PKI is a trust anchor and an issuer certificate signed by it, PEM-encoded,
// as `conduit install` and `conduit demo` create them.
type PKI struct {
	AnchorPEM     []byte // ca.crt
	IssuerCertPEM []byte // tls.crt
	IssuerKeyPEM  []byte // tls.key
}

// Generate makes a self-signed ECDSA P-256 trust anchor valid from now for
// anchorLifetime and an issuer signed by it for trustDomain valid for
// issuerLifetime.
func Generate(now time.Time, trustDomain string, anchorLifetime, issuerLifetime time.Duration) (*PKI, error) {
	anchorKey, anchor, err := NewCA("root.conduit."+trustDomain, now, anchorLifetime, 1, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("generating the trust anchor: %w", err)
	}
	issuerKey, issuer, err := NewCA("identity.conduit."+trustDomain, now, issuerLifetime, 0, anchor, anchorKey)
	if err != nil {
		return nil, fmt.Errorf("generating the issuer: %w", err)
	}
	keyPEM, err := EncodeKey(issuerKey)
	if err != nil {
		return nil, err
	}
	return &PKI{AnchorPEM: EncodeCert(anchor.Raw), IssuerCertPEM: EncodeCert(issuer.Raw), IssuerKeyPEM: keyPEM}, nil
}

// NewCA makes an ECDSA P-256 CA certificate named cn, valid from now for
// lifetime, that may sign certificates (KeyUsageCertSign) down a path of
// maxPathLen further CAs. It is self-signed when parent is nil, else signed
// by parent with parentKey.
func NewCA(cn string, now time.Time, lifetime time.Duration, maxPathLen int, parent *x509.Certificate, parentKey crypto.Signer) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, err := NewSerial()
	if err != nil {
		return nil, nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing %q: %w", cn, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return key, cert, nil
}

// NewSerial returns a random 127-bit certificate serial number.
func NewSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	return serial, nil
}

// WriteDir writes ca.crt, tls.crt and tls.key (mode 0600) into dir, the
// layout the controller's --identity-issuer-dir reads.
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
