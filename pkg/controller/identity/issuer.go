package identity

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki"
)

// clockSkew backdates certificates so peers with slightly slow clocks accept them.
const clockSkew = time.Minute

// Issuer signs leaf certificates with an issuer key that chains to the trust anchors.
type Issuer struct {
	cert          *x509.Certificate
	key           crypto.Signer
	intermediates [][]byte // DER: the issuer, then any further intermediates from tls.crt
	anchors       *x509.CertPool
	anchorsPEM    []byte
}

// LoadIssuer reads tls.crt, tls.key and ca.crt from dir. When anchorsFile is
// not empty, the trust anchors come from it instead of ca.crt. It checks
// that the issuer is a CA that chains to the anchors and matches its key.
func LoadIssuer(dir, anchorsFile string, now time.Time) (*Issuer, error) {
	certPEM, err := os.ReadFile(filepath.Join(dir, "tls.crt"))
	if err != nil {
		return nil, fmt.Errorf("reading issuer certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "tls.key"))
	if err != nil {
		return nil, fmt.Errorf("reading issuer key: %w", err)
	}
	if anchorsFile == "" {
		anchorsFile = filepath.Join(dir, "ca.crt")
	}
	anchorsPEM, err := os.ReadFile(anchorsFile)
	if err != nil {
		return nil, fmt.Errorf("reading trust anchors: %w", err)
	}
	return NewIssuer(certPEM, keyPEM, anchorsPEM, now)
}

// NewIssuer builds an issuer from PEM: the issuer certificate (optionally
// followed by intermediates up to the anchors), its key and the anchors.
func NewIssuer(certPEM, keyPEM, anchorsPEM []byte, now time.Time) (*Issuer, error) {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("issuer certificate and key: %w", err)
	}
	signer, ok := pair.PrivateKey.(crypto.Signer)
	if !ok {
		return nil, errors.New("issuer key cannot sign")
	}
	var chain []*x509.Certificate
	for _, der := range pair.Certificate {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, fmt.Errorf("issuer certificate: %w", err)
		}
		chain = append(chain, c)
	}
	anchorCerts, err := pki.Parse(anchorsPEM)
	if err != nil {
		return nil, fmt.Errorf("trust anchors: %w", err)
	}
	if err := pki.CheckIssuer(chain, signer.Public(), anchorCerts, now); err != nil {
		return nil, err
	}
	cert := chain[0]
	anchors := x509.NewCertPool()
	for _, a := range anchorCerts {
		anchors.AddCert(a)
	}
	return &Issuer{cert: cert, key: signer, intermediates: pair.Certificate, anchors: anchors, anchorsPEM: bytes.Clone(anchorsPEM)}, nil
}

// Anchors returns the trust anchors, for verifying peers.
func (is *Issuer) Anchors() *x509.CertPool { return is.anchors }

// AnchorsPEM returns the trust anchors as PEM.
func (is *Issuer) AnchorsPEM() []byte { return bytes.Clone(is.anchorsPEM) }

// NotAfter is when the issuer expires; no leaf outlives it.
func (is *Issuer) NotAfter() time.Time { return is.cert.NotAfter }

// Issue signs a leaf for id with pub, valid from now for lifetime (cut
// short to the issuer's own expiry). It returns the leaf and intermediates
// in DER, and the leaf's expiry.
func (is *Issuer) Issue(id ID, pub *ecdsa.PublicKey, now time.Time, lifetime time.Duration) ([]byte, [][]byte, time.Time, error) {
	serial, err := pki.NewSerial()
	if err != nil {
		return nil, nil, time.Time{}, err
	}
	notAfter := now.Add(lifetime)
	if notAfter.After(is.cert.NotAfter) {
		notAfter = is.cert.NotAfter
	}
	if !notAfter.After(now) {
		return nil, nil, time.Time{}, fmt.Errorf("issuer certificate expired at %s", is.cert.NotAfter.Format(time.RFC3339))
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{id.URL()},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, is.cert, pub, is.key)
	if err != nil {
		return nil, nil, time.Time{}, fmt.Errorf("signing certificate for %s: %w", id, err)
	}
	return der, is.intermediates, notAfter, nil
}
