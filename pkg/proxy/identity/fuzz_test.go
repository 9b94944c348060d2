package identity

import (
	"bytes"
	"context"
	"crypto/x509"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	identityv1 "github.com/conduitmesh/conduit/pkg/api/identity/v1"
	ctlidentity "github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/pki"
)

// unaryFunc answers every call with what it returns.
type unaryFunc func() ([]byte, error)

func (f unaryFunc) Unary(context.Context, string, []byte) ([]byte, error) { return f() }

// FuzzCertifyResponse gives the provider arbitrary Certify responses,
// starting from a real one signed for its key. It checks that the response
// decoder reads what protobuf-go reads (same leaf, same intermediates), and
// that the provider accepts a certificate only for its own key, chaining to
// the trust anchors and naming its SPIFFE ID; anything else is an error,
// never a panic.
func FuzzCertifyResponse(f *testing.F) {
	now := time.Now()
	pki, err := pki.Generate(now, "cluster.local", time.Hour, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	issuer, err := ctlidentity.NewIssuer(pki.IssuerCertPEM, pki.IssuerKeyPEM, pki.AnchorPEM, now)
	if err != nil {
		f.Fatal(err)
	}
	tokenFile := filepath.Join(f.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("t\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	var resp []byte
	p, err := New(Config{Name: webID, TokenFile: tokenFile, TrustAnchors: issuer.Anchors(), Now: func() time.Time { return now },
		Client: unaryFunc(func() ([]byte, error) { return resp, nil })})
	if err != nil {
		f.Fatal(err)
	}
	id, _ := ctlidentity.ParseID(webID)
	leaf, chain, _, err := issuer.Issue(id, &p.key.PublicKey, now, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	other, _ := ctlidentity.ParseID(booksID)
	otherLeaf, _, _, err := issuer.Issue(other, &p.key.PublicKey, now, time.Hour)
	if err != nil {
		f.Fatal(err)
	}
	for _, m := range []*identityv1.CertifyResponse{
		{LeafCertificate: leaf, IntermediateCertificates: chain},
		{LeafCertificate: leaf},
		{LeafCertificate: otherLeaf, IntermediateCertificates: chain},
		{LeafCertificate: chain[0], IntermediateCertificates: [][]byte{leaf}},
		{IntermediateCertificates: chain},
	} {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{0x0a, 0x05, 1, 2})
	f.Add([]byte{0x0b, 0x0c})
	f.Fuzz(func(t *testing.T, in []byte) {
		gotLeaf, gotChain, derr := decodeCertifyResponse(in)
		var pb identityv1.CertifyResponse
		perr := proto.Unmarshal(in, &pb)
		switch {
		case derr == nil && perr == nil:
			if !bytes.Equal(gotLeaf, pb.LeafCertificate) || len(gotChain) != len(pb.IntermediateCertificates) {
				t.Fatalf("decoded leaf %x and %d intermediates, protobuf-go reads %x and %d", gotLeaf, len(gotChain), pb.LeafCertificate, len(pb.IntermediateCertificates))
			}
			for i := range gotChain {
				if !bytes.Equal(gotChain[i], pb.IntermediateCertificates[i]) {
					t.Fatalf("intermediate %d: decoded %x, protobuf-go reads %x", i, gotChain[i], pb.IntermediateCertificates[i])
				}
			}
		case derr == nil:
			// valid_until is not read: only a malformed field 3 may make
			// protobuf-go alone refuse the message.
			if perr := proto.Unmarshal(withoutField(in, 3), &pb); perr != nil {
				t.Fatalf("decoded %q, protobuf-go refuses it even without valid_until: %v", in, perr)
			}
		case perr == nil && len(pb.LeafCertificate) > 0 && !hasGroup(in):
			t.Fatalf("decoding %q failed (%v), protobuf-go reads a leaf", in, derr)
		}

		resp = in
		cert, err := p.certify(context.Background())
		if err != nil {
			return
		}
		if derr != nil {
			t.Fatalf("certify accepted a response its decoder refuses: %v", derr)
		}
		if !p.key.PublicKey.Equal(cert.Leaf.PublicKey) || cert.PrivateKey != p.key {
			t.Fatal("certify accepted a certificate for another key")
		}
		if !bytes.Equal(cert.Certificate[0], gotLeaf) || len(cert.Certificate) != 1+len(gotChain) {
			t.Fatal("the certificate is not the leaf and intermediates of the response")
		}
		if got := PeerID([]*x509.Certificate{cert.Leaf}); got != webID {
			t.Fatalf("certify accepted a certificate for %q, want %s", got, webID)
		}
		if _, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: issuer.Anchors(), Intermediates: pool(t, cert.Certificate[1:]), CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			t.Fatalf("certify accepted a certificate that does not chain to the anchors: %v", err)
		}
	})
}

func pool(t *testing.T, ders [][]byte) *x509.CertPool {
	p := x509.NewCertPool()
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		p.AddCert(c)
	}
	return p
}

// withoutField returns b without its fields number num (b as far as it
// parses).
func withoutField(b []byte, num protowire.Number) []byte {
	var out []byte
	for len(b) > 0 {
		n, _, l := protowire.ConsumeField(b)
		if l < 0 {
			return append(out, b...)
		}
		if n != num {
			out = append(out, b[:l]...)
		}
		b = b[l:]
	}
	return out
}

// hasGroup reports whether b has a top-level group field (which the
// proxy's decoder refuses and protobuf-go skips).
func hasGroup(b []byte) bool {
	for len(b) > 0 {
		_, typ, n := protowire.ConsumeField(b)
		if n < 0 {
			return false
		}
		if typ == protowire.StartGroupType {
			return true
		}
		b = b[n:]
	}
	return false
}

// FuzzParseSPIFFEID checks that a name the proxy accepts as its identity
// is one it can recognise again: spiffe://<td>/ns/<ns>/sa/<sa> with no
// empty part, written exactly as the parsed URL prints it (which is how
// the issued certificate's URI SAN, and so PeerID, will read), and parsed
// the same the second time.
func FuzzParseSPIFFEID(f *testing.F) {
	for _, s := range []string{
		webID, "spiffe://td/ns/a/sa/b", "spiffe://td:80/ns/a/sa/b", "spiffe://TD/ns/a/sa/b",
		"spiffe://td/ns/a%2Fb/sa/c", "spiffe://td/ns//sa/b", "spiffe://td/ns/a/sa/b/", "spiffe://u@td/ns/a/sa/b",
		"spiffe://td/ns/a/sa/b?q", "SPIFFE://td/ns/a/sa/b", "spiffe:///ns/a/sa/b", "spiffe://td/ns/%61/sa/b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		u, err := ParseSPIFFEID(s)
		if err != nil {
			if !strings.Contains(err.Error(), "is not a SPIFFE ID") {
				t.Fatalf("error %q does not say what is wrong", err)
			}
			return
		}
		if u.String() != s {
			t.Fatalf("ParseSPIFFEID accepted %q, which prints as %q: the proxy's certificate would never match its name", s, u.String())
		}
		parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
		if u.Scheme != "spiffe" || u.Host == "" || len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" {
			t.Fatalf("ParseSPIFFEID accepted %q: %+v", s, u)
		}
		again, err := ParseSPIFFEID(u.String())
		if err != nil || *again != *u {
			t.Fatalf("%q parses, its printed form %q does not parse the same: %+v, %v", s, u.String(), again, err)
		}
	})
}
