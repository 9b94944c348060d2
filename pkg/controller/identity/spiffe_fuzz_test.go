package identity

import (
	"strings"
	"testing"

	proxyidentity "github.com/conduitmesh/conduit/pkg/proxy/identity"
)

// FuzzParseID checks the controller's SPIFFE ID parser: an accepted ID
// prints back as the input and its URL form is the same string (what goes
// into the certificate), its parts hold no '/', and the proxy's own parser
// (pkg/proxy/identity) accepts it with the same parts, so a proxy never
// refuses an identity the controller certifies. The reverse also holds: a
// name the proxy would request is one the controller accepts.
func FuzzParseID(f *testing.F) {
	for _, s := range []string{
		"spiffe://cluster.local/ns/demo/sa/web", "spiffe://td:80/ns/a/sa/b", "SPIFFE://td/ns/a/sa/b",
		"spiffe://td/ns/a%2Fb/sa/c", "spiffe://td/ns//sa/b", "spiffe://td/ns/a/sa/b/", "spiffe://u@td/ns/a/sa/b",
		"spiffe://td/ns/a/sa/b#f", "spiffe://[::1]/ns/a/sa/b", "spiffe://td/ns/%61/sa/b", "spiffe://td/./ns/a/sa/b",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseID(s)
		u, perr := proxyidentity.ParseSPIFFEID(s)
		if err != nil {
			if !strings.Contains(err.Error(), "is not spiffe://") {
				t.Fatalf("error %q does not say what is wrong", err)
			}
			if perr == nil {
				t.Fatalf("the proxy accepts %q as its identity, the controller refuses to certify it: %v", s, err)
			}
			return
		}
		if id.String() != s || id.URL().String() != s {
			t.Fatalf("ParseID(%q) = %+v, which prints as %q and %q", s, id, id.String(), id.URL())
		}
		if id.TrustDomain == "" || id.Namespace == "" || id.ServiceAccount == "" || strings.Contains(id.Namespace+id.ServiceAccount, "/") {
			t.Fatalf("ParseID(%q) = %+v", s, id)
		}
		if again, err := ParseID(id.String()); err != nil || again != id {
			t.Fatalf("%q parses as %+v, its printed form as %+v, %v", s, id, again, err)
		}
		if perr != nil {
			t.Fatalf("the controller certifies %q, the proxy refuses it: %v", s, perr)
		}
		if u.Host != id.TrustDomain || u.Path != "/ns/"+id.Namespace+"/sa/"+id.ServiceAccount {
			t.Fatalf("%q: the proxy reads %s %s, the controller %+v", s, u.Host, u.Path, id)
		}
	})
}
