package pki

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"
)

// ErrNotValidNow is wrapped by CheckIssuer's errors about a certificate
// that has expired or is not yet valid.
var ErrNotValidNow = errors.New("not within its validity period")

// CheckIssuer reports why chain[0], with key, may not sign workload
// certificates at now, or nil. In order: the trust anchors must be CA
// certificates; the issuer must be a CA with KeyUsageCertSign and match
// key (a nil key is not checked); anchors and issuer must be valid at now
// (errors.Is ErrNotValidNow); the issuer must chain to the anchors, through
// chain[1:] if any. The controller refuses to start, `conduit install`
// rejects and `conduit check` reports by this one rule.
func CheckIssuer(chain []*x509.Certificate, key crypto.PublicKey, anchors []*x509.Certificate, now time.Time) error {
	if len(chain) == 0 {
		return errors.New("no issuer certificate")
	}
	if len(anchors) == 0 {
		return errors.New("no trust anchor")
	}
	for _, a := range anchors {
		if !a.IsCA {
			return fmt.Errorf("trust anchor %q is not a CA certificate (basicConstraints CA:TRUE is missing)", a.Subject.CommonName)
		}
	}
	issuer := chain[0]
	if !issuer.IsCA || issuer.KeyUsage&x509.KeyUsageCertSign == 0 {
		return fmt.Errorf("issuer certificate %q is not a CA that may sign certificates (it needs basicConstraints CA:TRUE and keyUsage keyCertSign)", issuer.Subject.CommonName)
	}
	if key != nil {
		pub, ok := key.(interface{ Equal(crypto.PublicKey) bool })
		if !ok || !pub.Equal(issuer.PublicKey) {
			return fmt.Errorf("issuer key does not match the issuer certificate %q", issuer.Subject.CommonName)
		}
	}
	roots := x509.NewCertPool()
	for _, a := range anchors {
		if err := checkValidity(a, now); err != nil {
			return fmt.Errorf("trust anchor %q %w", a.Subject.CommonName, err)
		}
		roots.AddCert(a)
	}
	if err := checkValidity(issuer, now); err != nil {
		return fmt.Errorf("issuer certificate %q %w", issuer.Subject.CommonName, err)
	}
	inters := x509.NewCertPool()
	for _, c := range chain[1:] {
		inters.AddCert(c)
	}
	if _, err := issuer.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("issuer certificate %q does not chain to the trust anchors: %w", issuer.Subject.CommonName, err)
	}
	return nil
}

func checkValidity(c *x509.Certificate, now time.Time) error {
	if now.Before(c.NotBefore) {
		return fmt.Errorf("is not valid before %s: %w", c.NotBefore.UTC().Format(time.RFC3339), ErrNotValidNow)
	}
	if now.After(c.NotAfter) {
		return fmt.Errorf("expired on %s: %w", c.NotAfter.UTC().Format(time.RFC3339), ErrNotValidNow)
	}
	return nil
}
