package healthcheck

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/conduitmesh/conduit/pkg/pki"
)

func (s *state) identity() Category {
	ns := s.opts.ControlPlaneNamespace
	reapply := fmt.Sprintf("`%s --force-conflicts` re-renders it from the trust anchors", s.cmd("upgrade"))
	return Category{ID: Identity, Checkers: []Checker{
		{
			Description: "trust anchors are readable",
			Hint:        s.identityFilesHint(false),
			Required:    true,
			Check: func(ctx context.Context) error {
				cm, err := s.client.CoreV1().ConfigMaps(ns).Get(ctx, TrustRootsConfigMapName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("ConfigMap %s/%s does not exist", ns, TrustRootsConfigMapName)
				}
				if err != nil {
					return err
				}
				anchors, err := pki.Parse([]byte(cm.Data[TrustRootsKey]))
				if err != nil {
					return fmt.Errorf("ConfigMap %s/%s key %s: %w", ns, TrustRootsConfigMapName, TrustRootsKey, err)
				}
				for _, a := range anchors {
					if !a.IsCA {
						return fmt.Errorf("trust anchor %q is not a CA certificate", a.Subject.CommonName)
					}
				}
				s.anchors = anchors
				return nil
			},
		},
		{
			Description: "trust anchors are within their validity period",
			Hint:        s.identityFilesHint(true),
			Check: func(context.Context) error {
				for _, a := range s.anchors {
					if err := validNow(a, s.now(), "trust anchor"); err != nil {
						return err
					}
				}
				return nil
			},
		},
		{
			Description: "trust anchors are valid for at least 60 days",
			Hint:        s.identityFilesHint(true),
			Warning:     true,
			Check: func(context.Context) error {
				for _, a := range s.anchors {
					if err := validFor(a, s.now(), ExpiryWarning, "trust anchor"); err != nil {
						return err
					}
				}
				return nil
			},
		},
		{
			Description: "issuer credentials are readable",
			Hint:        s.identityFilesHint(false),
			Required:    true,
			Check: func(ctx context.Context) error {
				sec, err := s.client.CoreV1().Secrets(ns).Get(ctx, IssuerSecretName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("Secret %s/%s does not exist", ns, IssuerSecretName)
				}
				if err != nil {
					return err
				}
				cert, err := certAndKey(sec.Data["tls.crt"], sec.Data["tls.key"])
				if err != nil {
					return fmt.Errorf("Secret %s/%s: %w", ns, IssuerSecretName, err)
				}
				if pub, ok := cert.PublicKey.(*ecdsa.PublicKey); !ok || pub.Curve != elliptic.P256() {
					return fmt.Errorf("Secret %s/%s: the issuer key is not ECDSA P-256", ns, IssuerSecretName)
				}
				if !cert.IsCA {
					return fmt.Errorf("Secret %s/%s: issuer certificate %q is not a CA certificate", ns, IssuerSecretName, cert.Subject.CommonName)
				}
				s.issuer = cert
				return nil
			},
		},
		{
			Description: "issuer certificate is within its validity period",
			Hint:        s.identityFilesHint(true),
			Check: func(context.Context) error {
				return validNow(s.issuer, s.now(), "issuer certificate")
			},
		},
		{
			Description: "issuer certificate is valid for at least 60 days",
			Hint:        s.identityFilesHint(true),
			Warning:     true,
			Check: func(context.Context) error {
				return validFor(s.issuer, s.now(), ExpiryWarning, "issuer certificate")
			},
		},
		{
			Description: "issuer certificate is signed by the trust anchors",
			Hint:        s.identityFilesHint(true),
			Check: func(context.Context) error {
				// The validity checks above report an expired certificate.
				err := pki.CheckIssuer([]*x509.Certificate{s.issuer}, nil, s.anchors, s.now())
				if err != nil && !errors.Is(err, pki.ErrNotValidNow) {
					return fmt.Errorf("%w (trust anchors from ConfigMap %s/%s)", err, ns, TrustRootsConfigMapName)
				}
				return nil
			},
		},
		{
			Description: "issuer Secret's ca.crt matches the trust anchors",
			Hint:        reapply,
			Check: func(ctx context.Context) error {
				sec, err := s.client.CoreV1().Secrets(ns).Get(ctx, IssuerSecretName, metav1.GetOptions{})
				if err != nil {
					return err
				}
				cas, err := pki.Parse(sec.Data["ca.crt"])
				if err != nil {
					return fmt.Errorf("Secret %s/%s key ca.crt: %w", ns, IssuerSecretName, err)
				}
				for _, ca := range cas {
					if !containsCert(s.anchors, ca) {
						return fmt.Errorf("Secret %s/%s ca.crt holds %q, which is not in ConfigMap %s/%s", ns, IssuerSecretName, ca.Subject.CommonName, ns, TrustRootsConfigMapName)
					}
				}
				return nil
			},
		},
	}}
}

// identityFilesHint tells how to replace the identity certificates. rotate
// says the current ones exist but must be replaced.
func (s *state) identityFilesHint(rotate bool) string {
	ns := s.opts.ControlPlaneNamespace
	cn := "identity.conduit.cluster.local"
	if s.issuer != nil {
		cn = s.issuer.Subject.CommonName
	}
	what := "restore the identity from your copies of the trust anchors and issuer"
	if rotate {
		what = "make a new issuer signed by your trust anchor and install it (if the install generated the anchor, its key was not kept: make a new anchor as well and restart the meshed workloads afterwards)"
	}
	return fmt.Sprintf(`%s:
  kubectl -n %s get configmap %s -o jsonpath='{.data.ca-bundle\.crt}' > ca.crt
  step certificate create %s issuer.crt issuer.key --profile intermediate-ca --not-after 8760h --no-password --insecure --ca ca.crt --ca-key ca.key
  %s --identity-trust-anchors-file ca.crt --identity-issuer-certificate-file issuer.crt --identity-issuer-key-file issuer.key`,
		what, ns, TrustRootsConfigMapName, cn, s.cmd("upgrade"))
}

func validNow(c *x509.Certificate, now time.Time, what string) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("%s %q is not valid before %s", what, c.Subject.CommonName, c.NotBefore.UTC().Format(time.RFC3339))
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("%s %q expired on %s", what, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339))
	}
	return nil
}

func validFor(c *x509.Certificate, now time.Time, d time.Duration, what string) error {
	if now.Add(d).After(c.NotAfter) {
		return fmt.Errorf("%s %q expires on %s, in less than %d days", what, c.Subject.CommonName, c.NotAfter.UTC().Format(time.RFC3339), int(d.Hours()/24))
	}
	return nil
}

// certAndKey parses a PEM certificate and its private key and checks that
// they belong together.
func certAndKey(certPEM, keyPEM []byte) (*x509.Certificate, error) {
	certs, err := pki.Parse(certPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.crt: %w", err)
	}
	key, err := pki.ParseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("tls.key: %w", err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(certs[0].PublicKey) {
		return nil, errors.New("tls.key does not match the certificate in tls.crt")
	}
	return certs[0], nil
}

func containsCert(set []*x509.Certificate, c *x509.Certificate) bool {
	for _, s := range set {
		if s.Equal(c) {
			return true
		}
	}
	return false
}

// signedByAny reports whether cert is signed by a certificate in caPEM.
func signedByAny(cert *x509.Certificate, caPEM []byte) bool {
	cas, err := pki.Parse(caPEM)
	if err != nil {
		return false
	}
	for _, ca := range cas {
		if cert.CheckSignatureFrom(ca) == nil {
			return true
		}
	}
	return false
}
