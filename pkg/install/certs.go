package install

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"time"

	"github.com/conduitmesh/conduit/pkg/pemcert"
)

// Lifetimes of the certificates `conduit install` generates. The trust
// anchor is long-lived because replacing it means restarting every proxy;
// the issuer, which signs the 24h workload certificates, is rotated yearly
// (as Linkerd does) by installing a new one signed by the same anchor; the
// webhook CA and serving certificate are made anew by `conduit upgrade` when
// the serving certificate has less than RenewBefore left.
const (
	TrustAnchorLifetime = 10 * 365 * 24 * time.Hour
	IssuerLifetime      = 365 * 24 * time.Hour
	WebhookCALifetime   = 10 * 365 * 24 * time.Hour
	WebhookLifetime     = 365 * 24 * time.Hour
	RenewBefore         = 60 * 24 * time.Hour
	// clockSkew backdates NotBefore so a slightly slow node clock accepts a
	// freshly made certificate.
	clockSkew = 5 * time.Minute
)

// Identity is the mesh's trust anchors and the issuer that signs workload
// certificates, all PEM.
type Identity struct {
	TrustAnchorsPEM string
	IssuerCertPEM   string
	IssuerKeyPEM    string
}

// WebhookCerts is the injector's serving certificate and its CA, PEM.
type WebhookCerts struct {
	CAPEM   string
	CertPEM string
	KeyPEM  string
}

// GenerateIdentity makes a new ECDSA P-256 trust anchor and an issuer signed
// by it for trustDomain.
func GenerateIdentity(now time.Time, trustDomain string) (*Identity, error) {
	anchorKey, anchor, anchorPEM, err := selfSignedCA("root.conduit."+trustDomain, now, TrustAnchorLifetime, 1)
	if err != nil {
		return nil, fmt.Errorf("generating the trust anchor: %w", err)
	}
	issuerKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the issuer key: %w", err)
	}
	tmpl, err := caTemplate("identity.conduit."+trustDomain, now, IssuerLifetime, 0)
	if err != nil {
		return nil, err
	}
	issuerDER, err := x509.CreateCertificate(rand.Reader, tmpl, anchor, &issuerKey.PublicKey, anchorKey)
	if err != nil {
		return nil, fmt.Errorf("signing the issuer: %w", err)
	}
	keyPEM, err := encodeKey(issuerKey)
	if err != nil {
		return nil, err
	}
	return &Identity{
		TrustAnchorsPEM: anchorPEM,
		IssuerCertPEM:   encodeCert(issuerDER),
		IssuerKeyPEM:    keyPEM,
	}, nil
}

// GenerateWebhookCerts makes a CA and a serving certificate for the
// injector's Service in namespace ns.
func GenerateWebhookCerts(now time.Time, ns string) (*WebhookCerts, error) {
	caKey, ca, caPEM, err := selfSignedCA("webhook.conduit."+ns, now, WebhookCALifetime, 0)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook CA: %w", err)
	}
	return signWebhookCert(now, ns, caKey, ca, caPEM)
}

func signWebhookCert(now time.Time, ns string, caKey crypto.Signer, ca *x509.Certificate, caPEM string) (*WebhookCerts, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	svc := "conduit-controller." + ns
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: svc + ".svc"},
		DNSNames:     []string{svc + ".svc", svc + ".svc.cluster.local", svc},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     now.Add(WebhookLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing the webhook certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, err
	}
	return &WebhookCerts{CAPEM: caPEM, CertPEM: encodeCert(der), KeyPEM: keyPEM}, nil
}

func selfSignedCA(cn string, now time.Time, lifetime time.Duration, maxPathLen int) (*ecdsa.PrivateKey, *x509.Certificate, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, "", err
	}
	tmpl, err := caTemplate(cn, now, lifetime, maxPathLen)
	if err != nil {
		return nil, nil, "", err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, nil, "", err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, "", err
	}
	return key, cert, encodeCert(der), nil
}

func caTemplate(cn string, now time.Time, lifetime time.Duration, maxPathLen int) (*x509.Certificate, error) {
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: cn},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLen:            maxPathLen,
		MaxPathLenZero:        maxPathLen == 0,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}, nil
}

func randomSerial() (*big.Int, error) {
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, fmt.Errorf("generating a serial number: %w", err)
	}
	return serial, nil
}

func encodeCert(der []byte) string {
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func encodeKey(key *ecdsa.PrivateKey) (string, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", fmt.Errorf("encoding a private key: %w", err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})), nil
}

// LoadIdentityFiles reads the user's trust anchors, issuer certificate and
// key and validates them at now.
func LoadIdentityFiles(now time.Time, anchorsFile, issuerCertFile, issuerKeyFile string) (*Identity, error) {
	given := 0
	for _, f := range []string{anchorsFile, issuerCertFile, issuerKeyFile} {
		if f != "" {
			given++
		}
	}
	if given != 3 {
		return nil, errors.New("--identity-trust-anchors-file, --identity-issuer-certificate-file and --identity-issuer-key-file must be given together")
	}
	read := func(flag, path string) (string, error) {
		data, err := os.ReadFile(path)
		if err != nil {
			return "", fmt.Errorf("--%s: %w", flag, err)
		}
		return string(data), nil
	}
	var id Identity
	var err error
	if id.TrustAnchorsPEM, err = read("identity-trust-anchors-file", anchorsFile); err != nil {
		return nil, err
	}
	if id.IssuerCertPEM, err = read("identity-issuer-certificate-file", issuerCertFile); err != nil {
		return nil, err
	}
	if id.IssuerKeyPEM, err = read("identity-issuer-key-file", issuerKeyFile); err != nil {
		return nil, err
	}
	if err := id.Validate(now); err != nil {
		return nil, err
	}
	return &id, nil
}

// Validate checks that the issuer is an unexpired ECDSA P-256 CA whose key
// matches it and that chains to one of the unexpired trust anchors.
func (id *Identity) Validate(now time.Time) error {
	anchors, err := pemcert.Parse([]byte(id.TrustAnchorsPEM))
	if err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	roots := x509.NewCertPool()
	for _, a := range anchors {
		if err := checkValidity(a, now); err != nil {
			return fmt.Errorf("trust anchor %q: %w", a.Subject.CommonName, err)
		}
		if !a.IsCA {
			return fmt.Errorf("trust anchor %q is not a CA certificate (basicConstraints CA:TRUE is missing)", a.Subject.CommonName)
		}
		roots.AddCert(a)
	}
	issuer, err := parseCert([]byte(id.IssuerCertPEM))
	if err != nil {
		return fmt.Errorf("issuer certificate: %w", err)
	}
	if err := checkValidity(issuer, now); err != nil {
		return fmt.Errorf("issuer certificate %q: %w", issuer.Subject.CommonName, err)
	}
	if !issuer.IsCA {
		return fmt.Errorf("issuer certificate %q is not a CA certificate: it must be able to sign workload certificates", issuer.Subject.CommonName)
	}
	if _, err := issuer.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("issuer certificate %q is not signed by the trust anchors: %w", issuer.Subject.CommonName, err)
	}
	key, err := parseKey([]byte(id.IssuerKeyPEM))
	if err != nil {
		return fmt.Errorf("issuer key: %w", err)
	}
	ecKey, ok := key.(*ecdsa.PrivateKey)
	if !ok || ecKey.Curve != elliptic.P256() {
		return errors.New("issuer key: must be an ECDSA P-256 key")
	}
	if !ecKey.PublicKey.Equal(issuer.PublicKey) {
		return fmt.Errorf("issuer key does not match the issuer certificate %q", issuer.Subject.CommonName)
	}
	return nil
}

func checkValidity(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("not valid before %s", c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("expired on %s", c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func parseCert(data []byte) (*x509.Certificate, error) {
	certs, err := pemcert.Parse(data)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(bytes.TrimSpace(data))
	if block == nil {
		return nil, errors.New("no PEM block found")
	}
	switch block.Type {
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(block.Bytes)
	case "PRIVATE KEY":
		k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
		if err != nil {
			return nil, err
		}
		s, ok := k.(crypto.Signer)
		if !ok {
			return nil, fmt.Errorf("unsupported private key type %T", k)
		}
		return s, nil
	default:
		return nil, fmt.Errorf("unsupported PEM block %q (want EC PRIVATE KEY or PRIVATE KEY)", block.Type)
	}
}

// identityFromValues is the identity the chart values carry.
func identityFromValues(vals map[string]any) *Identity {
	return &Identity{
		TrustAnchorsPEM: getString(vals, "identityTrustAnchorsPEM"),
		IssuerCertPEM:   getString(vals, "identity", "issuer", "crtPEM"),
		IssuerKeyPEM:    getString(vals, "identity", "issuer", "keyPEM"),
	}
}
