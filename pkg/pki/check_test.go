package pki_test

import (
	"crypto/x509"
	"strings"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki"
	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
)

func TestGenerateIsAcceptedByCheckIssuer(t *testing.T) {
	now := time.Now()
	p, err := pki.Generate(now, "cluster.local", 10*time.Hour, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	anchors, _ := pki.Parse(p.AnchorPEM)
	chain, _ := pki.Parse(p.IssuerCertPEM)
	key, err := pki.ParseKey(p.IssuerKeyPEM)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.CheckIssuer(chain, key.Public(), anchors, now); err != nil {
		t.Fatal(err)
	}
	if got, want := chain[0].NotAfter.Sub(anchors[0].NotAfter).Round(time.Hour), -9*time.Hour; got != want {
		t.Errorf("issuer expires %v after the anchor, want %v (separate lifetimes)", got, want)
	}
	if err := pki.CheckIssuer(chain, key.Public(), anchors, now.Add(2*time.Hour)); err == nil || !strings.Contains(err.Error(), "expired on") {
		t.Errorf("after the issuer's lifetime: err = %v, want expired", err)
	}
}

func TestCheckIssuer(t *testing.T) {
	anchor := pkitest.Anchor(t, "root")
	good := pkitest.Issuer(t, anchor, "issuer")
	other := pkitest.Anchor(t, "other")
	for _, tc := range []struct {
		name    string
		issuer  *pkitest.Cert
		key     *pkitest.Cert
		anchors []*x509.Certificate
		now     time.Time
		wantErr string
	}{
		{name: "good", issuer: good, anchors: []*x509.Certificate{anchor.Cert}},
		{name: "among several anchors", issuer: good, anchors: []*x509.Certificate{other.Cert, anchor.Cert}},
		{name: "no KeyUsageCertSign", issuer: pkitest.Issuer(t, anchor, "nosign", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature }),
			anchors: []*x509.Certificate{anchor.Cert}, wantErr: "keyCertSign"},
		{name: "not a CA", issuer: pkitest.Leaf(t, anchor, []string{"leaf"}), anchors: []*x509.Certificate{anchor.Cert}, wantErr: "not a CA"},
		{name: "other anchor", issuer: good, anchors: []*x509.Certificate{other.Cert}, wantErr: "does not chain to the trust anchors"},
		{name: "anchor not a CA", issuer: good, anchors: []*x509.Certificate{pkitest.Leaf(t, anchor, []string{"x"}).Cert}, wantErr: "trust anchor \"x\" is not a CA"},
		{name: "key mismatch", issuer: good, key: other, anchors: []*x509.Certificate{anchor.Cert}, wantErr: "does not match"},
		{name: "expired", issuer: good, anchors: []*x509.Certificate{anchor.Cert}, now: time.Now().Add(48 * time.Hour), wantErr: "expired on"},
		{name: "not yet valid", issuer: good, anchors: []*x509.Certificate{anchor.Cert}, now: time.Now().Add(-48 * time.Hour), wantErr: "not valid before"},
		{name: "no anchors", issuer: good, wantErr: "no trust anchor"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			now := tc.now
			if now.IsZero() {
				now = time.Now()
			}
			key := tc.key
			if key == nil {
				key = tc.issuer
			}
			err := pki.CheckIssuer([]*x509.Certificate{tc.issuer.Cert}, key.Key.Public(), tc.anchors, now)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}
