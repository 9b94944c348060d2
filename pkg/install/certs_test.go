package install

import (
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
)

func TestGeneratedCertificatesChain(t *testing.T) {
	id, err := GenerateIdentity(testNow, "example.org")
	if err != nil {
		t.Fatal(err)
	}
	if err := id.Validate(testNow); err != nil {
		t.Fatalf("generated identity is invalid: %v", err)
	}
	issuer, _ := parseCert([]byte(id.IssuerCertPEM))
	anchor, _ := parseCert([]byte(id.TrustAnchorsPEM))
	if got := issuer.NotAfter.Sub(testNow); got != IssuerLifetime {
		t.Errorf("issuer lifetime %s, want %s", got, IssuerLifetime)
	}
	if got := anchor.NotAfter.Sub(testNow); got != TrustAnchorLifetime {
		t.Errorf("anchor lifetime %s, want %s", got, TrustAnchorLifetime)
	}
	if !issuer.IsCA || !issuer.MaxPathLenZero {
		t.Error("issuer must be a CA that signs only leaves")
	}

	wh, err := GenerateWebhookCerts(testNow, "mesh")
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := parseCert([]byte(wh.CAPEM))
	leaf, _ := parseCert([]byte(wh.CertPEM))
	roots := x509.NewCertPool()
	roots.AddCert(ca)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "conduit-controller.mesh.svc", Roots: roots, CurrentTime: testNow}); err != nil {
		t.Errorf("webhook certificate does not verify for the Service: %v", err)
	}
}

func TestLoadIdentityFiles(t *testing.T) {
	good, err := GenerateIdentity(testNow, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	other, err := GenerateIdentity(testNow, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	write := func(name, data string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(data), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	kuAnchor := pkitest.Anchor(t, "root")
	noSign := pkitest.Issuer(t, kuAnchor, "nosign", func(c *x509.Certificate) { c.KeyUsage = x509.KeyUsageDigitalSignature })
	anchors := write("anchors.pem", good.TrustAnchorsPEM)
	crt := write("issuer.crt", good.IssuerCertPEM)
	key := write("issuer.key", good.IssuerKeyPEM)
	for _, tc := range []struct {
		name              string
		anchors, crt, key string
		now               time.Time
		wantErr           string
	}{
		{name: "valid", anchors: anchors, crt: crt, key: key, now: testNow},
		{name: "partial", anchors: anchors, now: testNow, wantErr: "must be given together"},
		{name: "missing file", anchors: anchors, crt: filepath.Join(dir, "nope"), key: key, now: testNow, wantErr: "--identity-issuer-certificate-file"},
		{name: "other anchor", anchors: write("other.pem", other.TrustAnchorsPEM), crt: crt, key: key, now: testNow, wantErr: "does not chain to the trust anchors"},
		{name: "key mismatch", anchors: anchors, crt: crt, key: write("other.key", other.IssuerKeyPEM), now: testNow, wantErr: "does not match"},
		{name: "expired", anchors: anchors, crt: crt, key: key, now: testNow.Add(IssuerLifetime + time.Hour), wantErr: "expired on"},
		{name: "not yet valid", anchors: anchors, crt: crt, key: key, now: testNow.Add(-time.Hour), wantErr: "not valid before"},
		{name: "garbage", anchors: write("garbage.pem", "hello"), crt: crt, key: key, now: testNow, wantErr: "no PEM certificate"},
		{name: "issuer without KeyUsageCertSign", anchors: write("ku-anchor.pem", string(kuAnchor.PEM())), crt: write("ku.crt", string(noSign.PEM())), key: write("ku.key", string(noSign.KeyPEM(t))), now: time.Now(),
			wantErr: "--identity-issuer-certificate-file " + filepath.Join(dir, "ku.crt") + `: issuer certificate "nosign" is not a CA that may sign certificates`},
		{name: "cert as key", anchors: anchors, crt: crt, key: crt, now: testNow, wantErr: "unsupported PEM block"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadIdentityFiles(tc.now, tc.anchors, tc.crt, tc.key)
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

func TestRenderInstallWithOwnIdentity(t *testing.T) {
	id, err := GenerateIdentity(testNow, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := IdentityFiles{
		TrustAnchors: filepath.Join(dir, "a"), IssuerCert: filepath.Join(dir, "c"), IssuerKey: filepath.Join(dir, "k"),
	}
	for p, d := range map[string]string{files.TrustAnchors: id.TrustAnchorsPEM, files.IssuerCert: id.IssuerCertPEM, files.IssuerKey: id.IssuerKeyPEM} {
		if err := os.WriteFile(p, []byte(d), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, vals, err := RenderInstall(InstallOptions{Identity: files, Version: "v1", Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	if getString(vals, "identity", "issuer", "crtPEM") != id.IssuerCertPEM || getString(vals, "identityTrustAnchorsPEM") != id.TrustAnchorsPEM {
		t.Error("the given identity was not used")
	}
}
