package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/conduitmesh/conduit/pkg/api/identity/v1"
	"github.com/conduitmesh/conduit/pkg/pki"
	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
)

// mapTokens validates tokens from a map of token → "ns/sa"; "broken" fails as
// if the API server were down.
type mapTokens map[string]ID

func (m mapTokens) Validate(_ context.Context, token []byte) (string, string, error) {
	if string(token) == "broken" {
		return "", "", errors.New("connection refused")
	}
	id, ok := m[string(token)]
	if !ok {
		return "", "", fmt.Errorf("%w: unknown", ErrInvalidToken)
	}
	return id.Namespace, id.ServiceAccount, nil
}

func newCSR(t *testing.T, key any, uris ...string) []byte {
	t.Helper()
	tmpl := &x509.CertificateRequest{}
	for _, u := range uris {
		pu, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.URIs = append(tmpl.URIs, pu)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func newIssuer(t *testing.T, now time.Time) (*Issuer, *pki.PKI) {
	t.Helper()
	pki, err := pki.Generate(now, "cluster.local", 365*24*time.Hour, 365*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := pki.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	is, err := LoadIssuer(dir, "", now)
	if err != nil {
		t.Fatal(err)
	}
	return is, pki
}

func TestCertify(t *testing.T) {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	is, _ := newIssuer(t, now)
	web := ID{"cluster.local", "demo", "web"}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	srv, err := NewServer(Config{
		TrustDomain: "cluster.local",
		Issuer:      is,
		Tokens:      mapTokens{"web-token": web, "db-token": {"cluster.local", "demo", "db"}},
		Lifetime:    time.Hour,
		Now:         func() time.Time { return now },
	})
	if err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		identity string
		token    string
		csr      []byte
		want     codes.Code
	}{
		{"ok", web.String(), "web-token", newCSR(t, key, web.String()), codes.OK},
		{"bad token", web.String(), "nope", newCSR(t, key, web.String()), codes.Unauthenticated},
		{"missing token", web.String(), "", newCSR(t, key, web.String()), codes.Unauthenticated},
		{"token of another identity", web.String(), "db-token", newCSR(t, key, web.String()), codes.PermissionDenied},
		{"csr for another identity", web.String(), "web-token", newCSR(t, key, "spiffe://cluster.local/ns/demo/sa/db"), codes.PermissionDenied},
		{"csr with two identities", web.String(), "web-token", newCSR(t, key, web.String(), "spiffe://cluster.local/ns/demo/sa/db"), codes.PermissionDenied},
		{"csr without identity", web.String(), "web-token", newCSR(t, key), codes.PermissionDenied},
		{"garbage csr", web.String(), "web-token", []byte("not a csr"), codes.InvalidArgument},
		{"rsa key", web.String(), "web-token", newCSR(t, rsaKey, web.String()), codes.InvalidArgument},
		{"not a spiffe id", "web.demo", "web-token", newCSR(t, key, web.String()), codes.InvalidArgument},
		{"other trust domain", "spiffe://example.org/ns/demo/sa/web", "web-token", newCSR(t, key, "spiffe://example.org/ns/demo/sa/web"), codes.InvalidArgument},
		{"validator down", web.String(), "broken", newCSR(t, key, web.String()), codes.Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := srv.Certify(context.Background(), &identityv1.CertifyRequest{
				Identity: tt.identity, Token: []byte(tt.token), CertificateSigningRequest: tt.csr,
			})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("got %v (%v), want %v", got, err, tt.want)
			}
			if err != nil {
				return
			}
			leaf, err := x509.ParseCertificate(resp.LeafCertificate)
			if err != nil {
				t.Fatal(err)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != web.String() {
				t.Errorf("leaf URIs = %v, want [%s]", leaf.URIs, web)
			}
			if !leaf.NotAfter.Equal(now.Add(time.Hour)) || !resp.ValidUntil.AsTime().Equal(leaf.NotAfter) {
				t.Errorf("leaf NotAfter %v, valid_until %v, want %v", leaf.NotAfter, resp.ValidUntil.AsTime(), now.Add(time.Hour))
			}
			if _, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || !leaf.PublicKey.(*ecdsa.PublicKey).Equal(&key.PublicKey) {
				t.Error("leaf does not carry the CSR's key")
			}
			inters := x509.NewCertPool()
			for _, der := range resp.IntermediateCertificates {
				c, err := x509.ParseCertificate(der)
				if err != nil {
					t.Fatal(err)
				}
				inters.AddCert(c)
			}
			opts := x509.VerifyOptions{Roots: is.Anchors(), Intermediates: inters, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
			if _, err := leaf.Verify(opts); err != nil {
				t.Errorf("leaf does not verify against the trust anchors: %v", err)
			}
			other, _ := newIssuer(t, now)
			opts.Roots = other.Anchors()
			if _, err := leaf.Verify(opts); err == nil {
				t.Error("leaf verifies against another trust anchor")
			}
		})
	}
}

func TestLeafNeverOutlivesIssuer(t *testing.T) {
	now := time.Now()
	pki, err := pki.Generate(now, "cluster.local", 2*time.Hour, 2*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	is, err := NewIssuer(pki.IssuerCertPEM, pki.IssuerKeyPEM, pki.AnchorPEM, now)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, _, notAfter, err := is.Issue(ID{"cluster.local", "a", "b"}, &key.PublicKey, now, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if !notAfter.Equal(is.NotAfter()) {
		t.Errorf("leaf expires %v, want the issuer's expiry %v", notAfter, is.NotAfter())
	}
	if _, _, _, err := is.Issue(ID{"cluster.local", "a", "b"}, &key.PublicKey, now.Add(3*time.Hour), time.Hour); err == nil {
		t.Error("an expired issuer issued a certificate")
	}
}

func TestLoadIssuerRejects(t *testing.T) {
	now := time.Now()
	a, _ := pki.Generate(now, "cluster.local", time.Hour, time.Hour)
	b, _ := pki.Generate(now, "cluster.local", time.Hour, time.Hour)
	tests := []struct {
		name               string
		cert, key, anchors []byte
	}{
		{"issuer from another anchor", a.IssuerCertPEM, a.IssuerKeyPEM, b.AnchorPEM},
		{"key of another issuer", a.IssuerCertPEM, b.IssuerKeyPEM, a.AnchorPEM},
		{"no anchors", a.IssuerCertPEM, a.IssuerKeyPEM, []byte("nothing")},
		{"anchor is not an issuer", a.AnchorPEM, a.IssuerKeyPEM, a.AnchorPEM},
	}
	for _, tt := range tests {
		if _, err := NewIssuer(tt.cert, tt.key, tt.anchors, now); err == nil {
			t.Errorf("%s: no error", tt.name)
		}
	}
	if _, err := LoadIssuer(filepath.Join(t.TempDir(), "missing"), "", now); err == nil {
		t.Error("missing directory: no error")
	}
}

func TestParseID(t *testing.T) {
	good := "spiffe://cluster.local/ns/demo/sa/web"
	id, err := ParseID(good)
	if err != nil || id != (ID{"cluster.local", "demo", "web"}) || id.String() != good {
		t.Errorf("ParseID(%q) = %v, %v", good, id, err)
	}
	for _, bad := range []string{"", "web", "https://cluster.local/ns/a/sa/b", "spiffe:///ns/a/sa/b", "spiffe://td/ns/a", "spiffe://td/ns//sa/b", "spiffe://td/ns/a/sa/b/c", "spiffe://td/ns/a/sa/b?x=1", "spiffe://td:8/ns/a/sa/b", "spiffe://td/ns/a/sa/b%2F"} {
		if _, err := ParseID(bad); err == nil {
			t.Errorf("ParseID(%q): no error", bad)
		}
	}
}

func TestNewIssuerRefusesIssuerThatCannotSign(t *testing.T) {
	anchor := pkitest.Anchor(t, "root")
	noSign := pkitest.Issuer(t, anchor, "nosign", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })
	_, err := NewIssuer(noSign.PEM(), noSign.KeyPEM(t), anchor.PEM(), time.Now())
	if err == nil || !strings.Contains(err.Error(), "keyCertSign") {
		t.Fatalf("err = %v, want the issuer refused for lacking keyCertSign", err)
	}
}
