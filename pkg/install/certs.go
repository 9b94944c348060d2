package install

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki"
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
	p, err := pki.Generate(now, trustDomain, TrustAnchorLifetime, IssuerLifetime)
	if err != nil {
		return nil, err
	}
	return &Identity{
		TrustAnchorsPEM: string(p.AnchorPEM),
		IssuerCertPEM:   string(p.IssuerCertPEM),
		IssuerKeyPEM:    string(p.IssuerKeyPEM),
	}, nil
}

// GenerateWebhookCerts makes a CA and a serving certificate for the
// injector's Service in namespace ns.
func GenerateWebhookCerts(now time.Time, ns string) (*WebhookCerts, error) {
	caKey, ca, err := pki.NewCA("webhook.conduit."+ns, now, WebhookCALifetime, 0, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the webhook key: %w", err)
	}
	serial, err := pki.NewSerial()
	if err != nil {
		return nil, err
	}
	svc := "conduit-controller." + ns
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: svc + ".svc"},
		DNSNames:     []string{svc + ".svc", svc + ".svc.cluster.local", svc},
		NotBefore:    now.Add(-pki.ClockSkew),
		NotAfter:     now.Add(WebhookLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("signing the webhook certificate: %w", err)
	}
	keyPEM, err := pki.EncodeKey(key)
	if err != nil {
		return nil, err
	}
	return &WebhookCerts{CAPEM: string(pki.EncodeCert(ca.Raw)), CertPEM: string(pki.EncodeCert(der)), KeyPEM: string(keyPEM)}, nil
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
		return nil, fmt.Errorf("--identity-issuer-certificate-file %s: %w", issuerCertFile, err)
	}
	return &id, nil
}

// Validate checks with pki.CheckIssuer that the issuer may sign workload
// certificates at now, as the controller will check it, and that its key
// is ECDSA P-256.
func (id *Identity) Validate(now time.Time) error {
	anchors, err := pki.Parse([]byte(id.TrustAnchorsPEM))
	if err != nil {
		return fmt.Errorf("trust anchors: %w", err)
	}
	chain, err := pki.Parse([]byte(id.IssuerCertPEM))
	if err != nil {
		return fmt.Errorf("issuer certificate: %w", err)
	}
	key, err := pki.ParseKey([]byte(id.IssuerKeyPEM))
	if err != nil {
		return fmt.Errorf("issuer key: %w", err)
	}
	if err := pki.CheckIssuer(chain, key.Public(), anchors, now); err != nil {
		return err
	}
	if ecKey, ok := key.(*ecdsa.PrivateKey); !ok || ecKey.Curve != elliptic.P256() {
		return errors.New("issuer key: must be an ECDSA P-256 key")
	}
	return nil
}

func parseCert(data []byte) (*x509.Certificate, error) {
	certs, err := pki.Parse(data)
	if err != nil {
		return nil, err
	}
	return certs[0], nil
}

// identityFromValues is the identity the chart values carry.
func identityFromValues(vals map[string]any) *Identity {
	return &Identity{
		TrustAnchorsPEM: getString(vals, "identityTrustAnchorsPEM"),
		IssuerCertPEM:   getString(vals, "identity", "issuer", "crtPEM"),
		IssuerKeyPEM:    getString(vals, "identity", "issuer", "keyPEM"),
	}
}
