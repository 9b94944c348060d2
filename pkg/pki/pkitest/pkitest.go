// Package pkitest makes trust anchors, issuers and leaves for tests, with
// hooks to break them (a missing key usage, a past validity) in the ways
// pki.CheckIssuer must catch.
package pkitest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"net/url"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki"
)

// Cert is a certificate and its key.
type Cert struct {
	Cert *x509.Certificate
	Key  *ecdsa.PrivateKey
}

// PEM is the certificate as PEM.
func (c *Cert) PEM() []byte { return pki.EncodeCert(c.Cert.Raw) }

// KeyPEM is the key as PEM.
func (c *Cert) KeyPEM(t testing.TB) []byte {
	t.Helper()
	b, err := pki.EncodeKey(c.Key)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TLS is the certificate and key for a tls.Config.
func (c *Cert) TLS() tls.Certificate {
	return tls.Certificate{Certificate: [][]byte{c.Cert.Raw}, PrivateKey: c.Key, Leaf: c.Cert}
}

// Pool is a pool holding just the certificate, for a CA.
func (c *Cert) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.Cert)
	return p
}

// URI makes a leaf's identity the URI SAN id, such as a SPIFFE ID.
func URI(t testing.TB, id string) Mod {
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	return func(c *x509.Certificate) { c.URIs = append(c.URIs, u) }
}

// Mod changes a template before it is signed.
type Mod func(*x509.Certificate)

// Anchor makes a self-signed trust anchor named cn, valid for a day from
// an hour ago.
func Anchor(t testing.TB, cn string, mods ...Mod) *Cert {
	t.Helper()
	return sign(t, ca(cn, 1), nil, mods)
}

// Issuer makes an issuer named cn signed by parent, valid for a day from an
// hour ago.
func Issuer(t testing.TB, parent *Cert, cn string, mods ...Mod) *Cert {
	t.Helper()
	return sign(t, ca(cn, 0), parent, mods)
}

// Leaf makes a serving and client certificate for dnsNames signed by parent.
func Leaf(t testing.TB, parent *Cert, dnsNames []string, mods ...Mod) *Cert {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:     pkix.Name{CommonName: first(dnsNames)},
		DNSNames:    dnsNames,
		NotBefore:   time.Now().Add(-time.Hour),
		NotAfter:    time.Now().Add(24 * time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	return sign(t, tmpl, parent, mods)
}

// Workload makes a mesh workload's certificate: a leaf whose URI SAN is
// the SPIFFE ID id, signed by parent.
func Workload(t testing.TB, parent *Cert, id string) *Cert {
	t.Helper()
	return Leaf(t, parent, nil, URI(t, id))
}

func first(s []string) string {
	if len(s) == 0 {
		return ""
	}
	return s[0]
}

func ca(cn string, maxPathLen int) *x509.Certificate {
	return &x509.Certificate{
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
	}
}

// New signs tmpl (given a random serial number when it has none) with
// parent, or self-signs it when parent is nil, after applying mods.
func New(t testing.TB, tmpl *x509.Certificate, parent *Cert, mods ...Mod) *Cert {
	t.Helper()
	return sign(t, tmpl, parent, mods)
}

func sign(t testing.TB, tmpl *x509.Certificate, parent *Cert, mods []Mod) *Cert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	if tmpl.SerialNumber == nil {
		if tmpl.SerialNumber, err = pki.NewSerial(); err != nil {
			t.Fatal(err)
		}
	}
	for _, m := range mods {
		m(tmpl)
	}
	parentCert, parentKey := tmpl, key
	if parent != nil {
		parentCert, parentKey = parent.Cert, parent.Key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parentCert, &key.PublicKey, parentKey)
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return &Cert{Cert: c, Key: key}
}
