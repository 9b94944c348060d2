package identity

import (
	"testing"
	"time"
)

func TestOwnCertificateRenews(t *testing.T) {
	now := time.Now()
	is, _ := newIssuer(t, now)
	clock := now
	srv, err := NewServer(Config{TrustDomain: "cluster.local", Issuer: is, Tokens: mapTokens{}, Lifetime: time.Hour, Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	id := ID{"cluster.local", "conduit", "conduit-controller"}
	first, err := srv.Certificate(id)
	if err != nil {
		t.Fatal(err)
	}
	if got := first.Leaf.URIs[0].String(); got != id.String() {
		t.Errorf("URI SAN %s, want %s", got, id)
	}
	clock = now.Add(30 * time.Minute)
	if again, _ := srv.Certificate(id); again != first {
		t.Error("renewed before 70% of the lifetime")
	}
	clock = now.Add(43 * time.Minute)
	renewed, err := srv.Certificate(id)
	if err != nil {
		t.Fatal(err)
	}
	if renewed == first || !renewed.Leaf.NotAfter.After(first.Leaf.NotAfter) {
		t.Error("not renewed after 70% of the lifetime")
	}
	other, _ := newIssuer(t, now)
	srv.SetIssuer(other)
	if rotated, _ := srv.Certificate(id); rotated == renewed {
		t.Error("not reissued after the issuer changed")
	}
}
