package discovery

import "testing"

// FuzzParseAuthority checks that any authority a proxy sends is either
// rejected or parsed into something that prints back as host:port and
// parses again to the same value.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{"web.demo.svc.cluster.local:80", "10.0.0.1:443", "[fd00::1]:8080", "web", ":80", "[::1", "a:b:c"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := ParseAuthority(s)
		if err != nil {
			return
		}
		b, err := ParseAuthority(a.String())
		if err != nil || b != a {
			t.Fatalf("%q parsed to %v, which parses to %v, %v", s, a, b, err)
		}
		ParseServiceHost(a.Host, "cluster.local", "ns")
	})
}
