package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"net/url"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	identityv1 "github.com/conduitmesh/conduit/pkg/api/identity/v1"
	"github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/pki"
)

// saToken creates a service account and a projected token for it.
func saToken(t *testing.T, ns, sa string, audiences ...string) []byte {
	t.Helper()
	ctx := context.Background()
	client := testCluster.Client
	if _, err := client.CoreV1().ServiceAccounts(ns).Get(ctx, sa, metav1.GetOptions{}); err != nil {
		if _, err := client.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	tr, err := client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authnv1.TokenRequest{
		Spec: authnv1.TokenRequestSpec{Audiences: audiences, ExpirationSeconds: ptr.To[int64](600)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("requesting a token for %s/%s: %v", ns, sa, err)
	}
	return []byte(tr.Status.Token)
}

func csrFor(t *testing.T, id string) ([]byte, *ecdsa.PrivateKey) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	u, err := url.Parse(id)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der, key
}

// verifyLeaf checks resp's chain against anchorsPEM and returns the leaf.
func verifyLeaf(resp *identityv1.CertifyResponse, anchorsPEM []byte) (*x509.Certificate, error) {
	leaf, err := x509.ParseCertificate(resp.LeafCertificate)
	if err != nil {
		return nil, err
	}
	roots, inters := x509.NewCertPool(), x509.NewCertPool()
	roots.AppendCertsFromPEM(anchorsPEM)
	for _, der := range resp.IntermediateCertificates {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		inters.AddCert(c)
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inters, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}})
	return leaf, err
}

// TestIdentityWithTokenReview certifies proxies with real projected
// service-account tokens, validated by the API server's TokenReview.
func TestIdentityWithTokenReview(t *testing.T) {
	p := startController(t, "--identity-lifetime", "2m")
	ns := createNamespace(t, "identity")
	client := identityv1.NewIdentityClient(p.conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	webID := "spiffe://cluster.local/ns/" + ns + "/sa/web"
	dbID := "spiffe://cluster.local/ns/" + ns + "/sa/db"
	webToken := saToken(t, ns, "web", identity.Audience)
	apiToken := saToken(t, ns, "web") // the API server's default audience
	webCSR, _ := csrFor(t, webID)
	dbCSR, _ := csrFor(t, dbID)

	tests := []struct {
		name     string
		identity string
		token    []byte
		csr      []byte
		want     codes.Code
	}{
		{"projected token", webID, webToken, webCSR, codes.OK},
		{"garbage token", webID, []byte("not-a-token"), webCSR, codes.Unauthenticated},
		{"token for another audience", webID, apiToken, webCSR, codes.Unauthenticated},
		{"token of another service account", dbID, webToken, dbCSR, codes.PermissionDenied},
		{"csr for another identity", webID, webToken, dbCSR, codes.PermissionDenied},
		{"garbage csr", webID, webToken, []byte{0x30, 0x03, 0x02, 0x01, 0x00}, codes.InvalidArgument},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := client.Certify(ctx, &identityv1.CertifyRequest{Identity: tt.identity, Token: tt.token, CertificateSigningRequest: tt.csr})
			if got := status.Code(err); got != tt.want {
				t.Fatalf("got %v (%v), want %v", got, err, tt.want)
			}
			if err != nil {
				return
			}
			leaf, err := verifyLeaf(resp, p.pki.AnchorPEM)
			if err != nil {
				t.Fatalf("certificate does not verify against the trust anchor: %v", err)
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != webID {
				t.Errorf("URI SANs %v, want [%s]", leaf.URIs, webID)
			}
			if life := time.Until(leaf.NotAfter); life > 2*time.Minute || life < time.Minute {
				t.Errorf("certificate valid for %s, want about 2m", life)
			}
			other, err := pki.Generate(time.Now(), "cluster.local", time.Hour, time.Hour)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := verifyLeaf(resp, other.AnchorPEM); err == nil {
				t.Error("certificate verifies against another trust anchor")
			}
		})
	}
}

// TestIdentityRotation renews a short-lived certificate, then rotates the
// issuer files under the running controller: later certificates chain to
// the new trust anchor only.
func TestIdentityRotation(t *testing.T) {
	p := startController(t, "--identity-lifetime", "1m", "--identity-reload-interval", "100ms")
	ns := createNamespace(t, "identity-rot")
	client := identityv1.NewIdentityClient(p.conn)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id := "spiffe://cluster.local/ns/" + ns + "/sa/web"
	token := saToken(t, ns, "web", identity.Audience)

	certify := func() *identityv1.CertifyResponse {
		t.Helper()
		csr, _ := csrFor(t, id)
		resp, err := client.Certify(ctx, &identityv1.CertifyRequest{Identity: id, Token: token, CertificateSigningRequest: csr})
		if err != nil {
			t.Fatalf("Certify: %v", err)
		}
		return resp
	}
	first := certify()
	time.Sleep(1100 * time.Millisecond) // certificates have second resolution
	second := certify()
	if !second.ValidUntil.AsTime().After(first.ValidUntil.AsTime()) {
		t.Errorf("renewed certificate expires %v, not after the first's %v", second.ValidUntil.AsTime(), first.ValidUntil.AsTime())
	}
	if first.ValidUntil.AsTime().Sub(time.Now()) > time.Minute {
		t.Errorf("certificate valid until %v, beyond the 1m lifetime", first.ValidUntil.AsTime())
	}

	rotated, err := pki.Generate(time.Now(), "cluster.local", time.Hour, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := rotated.WriteDir(p.issuerDir); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp := certify()
		if _, err := verifyLeaf(resp, rotated.AnchorPEM); err == nil {
			if _, err := verifyLeaf(resp, p.pki.AnchorPEM); err == nil {
				t.Error("a certificate from the rotated issuer verifies against the old anchor")
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the controller did not pick up the rotated issuer within 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}
