package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"math/big"
	"strings"
	"testing"
	"time"
)

func certPEM(t *testing.T, cn string) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now(), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))
}

func TestParse(t *testing.T) {
	a, b := certPEM(t, "a"), certPEM(t, "b")
	key := "-----BEGIN EC PRIVATE KEY-----\nAAAA\n-----END EC PRIVATE KEY-----\n"
	bad := "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"

	certs, err := Parse([]byte(a + key + b))
	if err != nil || len(certs) != 2 || certs[0].Subject.CommonName != "a" || certs[1].Subject.CommonName != "b" {
		t.Fatalf("Parse(a, key, b) = %d certs, %v; want a and b", len(certs), err)
	}
	if _, err := Parse([]byte(key)); !errors.Is(err, ErrNone) {
		t.Errorf("Parse(key only): err = %v, want ErrNone", err)
	}
	if _, err := Parse([]byte("garbage")); !errors.Is(err, ErrNone) {
		t.Errorf("Parse(garbage): err = %v, want ErrNone", err)
	}
	if _, err := Parse([]byte(a + bad)); err == nil || !strings.Contains(err.Error(), "certificate 2") {
		t.Errorf("Parse(a, bad): err = %v, want one naming certificate 2", err)
	}
	if pool, err := Pool([]byte(a)); err != nil || pool == nil {
		t.Errorf("Pool(a) = %v, %v", pool, err)
	}
}
