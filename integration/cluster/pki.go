package cluster

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"

	meshpki "github.com/conduitmesh/conduit/pkg/pki"
)

// pki is the cluster's certificate authority and the keys the components
// need. The CA signs the API server's serving certificate and client
// certificates for users (UserKubeconfig); the service-account key signs
// ServiceAccount tokens (TokenRequest, projected volumes, TokenReview).
type pki struct {
	dir    string
	caCert *x509.Certificate
	caPEM  []byte
	caKey  *ecdsa.PrivateKey
}

// Paths of the files newPKI writes, relative to pki.dir.
const (
	caCertFile        = "ca.crt"
	caKeyFile         = "ca.key"
	apiserverCertFile = "apiserver.crt"
	apiserverKeyFile  = "apiserver.key"
	saKeyFile         = "sa.key"
	saPubFile         = "sa.pub"
	tokensFile        = "tokens.csv"
)

func (p *pki) path(name string) string { return filepath.Join(p.dir, name) }

// newPKI creates a fresh CA, an API server certificate for ips and the
// in-cluster names, and a service-account signing key, all ECDSA P-256.
func newPKI(dir string, ips []net.IP) (*pki, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating pki dir: %w", err)
	}
	p := &pki{dir: dir}
	now := time.Now()
	caKey, caCert, err := meshpki.NewCA("conduit-test-cluster-ca", now, 10*365*24*time.Hour, 0, nil, nil)
	if err != nil {
		return nil, fmt.Errorf("creating CA certificate: %w", err)
	}
	p.caCert, p.caKey, p.caPEM = caCert, caKey, meshpki.EncodeCert(caCert.Raw)
	if err := os.WriteFile(p.path(caCertFile), p.caPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeKey(p.path(caKeyFile), caKey); err != nil {
		return nil, err
	}

	serving := &x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: "kube-apiserver"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames: []string{"localhost", "kubernetes", "kubernetes.default",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local"},
		IPAddresses: ips,
	}
	certPEM, keyPEM, err := p.sign(serving)
	if err != nil {
		return nil, fmt.Errorf("creating API server certificate: %w", err)
	}
	if err := os.WriteFile(p.path(apiserverCertFile), certPEM, 0o600); err != nil {
		return nil, err
	}
	if err := os.WriteFile(p.path(apiserverKeyFile), keyPEM, 0o600); err != nil {
		return nil, err
	}

	saKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating service-account key: %w", err)
	}
	if err := writeKey(p.path(saKeyFile), saKey); err != nil {
		return nil, err
	}
	pubDER, err := x509.MarshalPKIXPublicKey(&saKey.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("encoding service-account public key: %w", err)
	}
	if err := os.WriteFile(p.path(saPubFile), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pubDER}), 0o600); err != nil {
		return nil, err
	}
	return p, nil
}

// sign issues tmpl, with a fresh key, signed by the CA. It returns PEM.
func (p *pki) sign(tmpl *x509.Certificate) (certPEM, keyPEM []byte, err error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), nil
}

// clientCert issues a client certificate for user in groups: the API server
// maps the CommonName to the user name and each Organization to a group.
func (p *pki) clientCert(user string, groups []string) (certPEM, keyPEM []byte, err error) {
	now := time.Now()
	return p.sign(&x509.Certificate{
		SerialNumber: serial(),
		Subject:      pkix.Name{CommonName: user, Organization: groups},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(365 * 24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
}

func writeKey(path string, key *ecdsa.PrivateKey) error {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding key %s: %w", path, err)
	}
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o600)
}

func serial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 126))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // never happens on Linux
	}
	return n
}
