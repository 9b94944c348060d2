package proxy

import (
	"net"
	"strings"
	"testing"
)

// canonicalAuthorityRef is canonicalAuthority as it was before its fast
// paths: SplitHostPort decides.
func canonicalAuthorityRef(host, defaultPort string) string {
	if host == "" {
		return ""
	}
	host = strings.ToLower(host)
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		return host + ":" + defaultPort
	}
	return net.JoinHostPort(host, defaultPort)
}

// TestCanonicalAuthority: the fast paths answer as SplitHostPort's rules
// do, and the usual forms allocate at most the concatenation.
func TestCanonicalAuthority(t *testing.T) {
	for _, in := range []string{"", "books", "Books", "books:8080", "BOOKS.shop.svc:80", "books:", ":80", ":",
		"[::1]", "[::1]:443", "::1", "[::1", "::1]", "a:b:c", "[a]b:80", "a[b]:80", "10.0.0.1", "10.0.0.1:9090",
		"[fe80::1%eth0]:80", "fe80::1%eth0", "x]:80", "[x:80"} {
		if got, want := canonicalAuthority(in, "80"), canonicalAuthorityRef(in, "80"); got != want {
			t.Errorf("canonicalAuthority(%q) = %q, want %q", in, got, want)
		}
	}
	if n := testing.AllocsPerRun(100, func() { canonicalAuthority("books.shop.svc.cluster.local:8080", "80") }); n != 0 {
		t.Errorf("name:port: %v allocations, want 0", n)
	}
	if n := testing.AllocsPerRun(100, func() { canonicalAuthority("books", "80") }); n > 1 {
		t.Errorf("a name without port: %v allocations, want 1", n)
	}
}

func FuzzCanonicalAuthority(f *testing.F) {
	for _, s := range []string{"books", "books:80", "[::1]:80", "::1", "a:b"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		if got, want := canonicalAuthority(in, "80"), canonicalAuthorityRef(in, "80"); got != want {
			t.Errorf("canonicalAuthority(%q) = %q, want %q", in, got, want)
		}
	})
}

// TestFastConnAuthority: a connection's requests for one host cost no
// allocation; a new host is canonicalized afresh.
func TestFastConnAuthority(t *testing.T) {
	var fc fastConn
	for _, tc := range []struct{ host, want string }{
		{"Books:8080", "books:8080"}, {"Books:8080", "books:8080"}, {"authors", "authors:80"}, {"", ""}, {"Books:8080", "books:8080"},
	} {
		fc.req.host = []byte(tc.host)
		if got := fc.authorityOf(); got != tc.want {
			t.Errorf("Host %q: authority %q, want %q", tc.host, got, tc.want)
		}
	}
	fc.req.host = []byte("books.shop.svc.cluster.local")
	fc.authorityOf()
	if n := testing.AllocsPerRun(100, func() { fc.authorityOf() }); n != 0 {
		t.Errorf("the same Host again: %v allocations, want 0", n)
	}
}
