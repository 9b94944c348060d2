package discovery

import (
	"errors"
	"net/netip"
	"testing"
)

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		in, want string
		ip       bool
	}{
		{"web.demo.svc.cluster.local:80", "web.demo.svc.cluster.local:80", false},
		{"Web.Demo:8080", "web.demo:8080", false},
		{"web.demo.svc.cluster.local.:80", "web.demo.svc.cluster.local:80", false},
		{"web.demo", "web.demo:80", false},
		{"10.0.0.1:443", "10.0.0.1:443", true},
		{"[fd00::1]:443", "[fd00::1]:443", true},
		{"[fd00::1]", "[fd00::1]:80", true},
		{"fd00::1", "[fd00::1]:80", true},
		{"[::ffff:10.0.0.1]:80", "[::ffff:10.0.0.1]:80", true},
	}
	for _, tt := range tests {
		a, err := ParseAuthority(tt.in)
		if err != nil {
			t.Errorf("%q: %v", tt.in, err)
			continue
		}
		if a.String() != tt.want || a.IP.IsValid() != tt.ip {
			t.Errorf("%q: got %s (ip %v), want %s (ip %v)", tt.in, a, a.IP, tt.want, tt.ip)
		}
	}
	if a, _ := ParseAuthority("[::ffff:10.0.0.1]:80"); a.IP != netip.MustParseAddr("10.0.0.1") {
		t.Errorf("IPv4-mapped address not unmapped: %v", a.IP)
	}
	for _, bad := range []string{"", ":80", "web:http", "web:0", "web:65536", "fd00::zz", "user@web:80", "a b:80", "a/b:80", "[fe80::1%eth0]:80", "::%]0"} {
		if _, err := ParseAuthority(bad); !errors.Is(err, ErrInvalidAuthority) {
			t.Errorf("%q: got %v, want ErrInvalidAuthority", bad, err)
		}
	}
}

func TestParseServiceHost(t *testing.T) {
	tests := []struct {
		host, ns string
		want     ServiceName
		ok       bool
	}{
		{"web.demo.svc.cluster.local", "", ServiceName{Namespace: "demo", Name: "web"}, true},
		{"web.demo.svc", "", ServiceName{Namespace: "demo", Name: "web"}, true},
		{"web.demo", "", ServiceName{Namespace: "demo", Name: "web"}, true},
		{"web", "demo", ServiceName{Namespace: "demo", Name: "web"}, true},
		{"web", "", ServiceName{}, false},
		{"db-0.db.demo.svc.cluster.local", "", ServiceName{Namespace: "demo", Name: "db", Hostname: "db-0"}, true},
		{"web.demo.svc.other.domain", "", ServiceName{}, false},
		{"api.example.com", "", ServiceName{}, false},
		{"web_1.demo", "", ServiceName{}, false},
		{"-web.demo", "", ServiceName{}, false},
	}
	for _, tt := range tests {
		got, ok := ParseServiceHost(tt.host, "cluster.local", tt.ns)
		if ok != tt.ok || (ok && got != tt.want) {
			t.Errorf("%q (ns %q): got %+v %v, want %+v %v", tt.host, tt.ns, got, ok, tt.want, tt.ok)
		}
	}
}

func TestHubSharesAndForgets(t *testing.T) {
	var h Hub[string]
	computed := 0
	snap := Snapshot{Exists: true}
	compute := func() Snapshot { computed++; return snap }
	var got1, got2 []Snapshot
	c1 := h.Subscribe("a", compute, ListenerFunc(func(s Snapshot) { got1 = append(got1, s) }))
	c2 := h.Subscribe("a", compute, ListenerFunc(func(s Snapshot) { got2 = append(got2, s) }))
	if computed != 1 || len(got1) != 1 || len(got2) != 1 {
		t.Fatalf("computed %d times, delivered %d and %d; want 1, 1, 1", computed, len(got1), len(got2))
	}
	next := Snapshot{Reason: "gone"}
	if n := h.Refresh(func(string) bool { return true }, func(string) Snapshot { return next }); n != 1 {
		t.Errorf("Refresh changed %d keys, want 1", n)
	}
	if n := h.Refresh(func(string) bool { return true }, func(string) Snapshot { return next }); n != 0 {
		t.Errorf("Refresh with no change changed %d keys, want 0", n)
	}
	if len(got1) != 2 || len(got2) != 2 || got1[1].Reason != "gone" {
		t.Errorf("after a change: %v / %v", got1, got2)
	}
	c1()
	c1() // idempotent
	if h.Watched() != 1 {
		t.Errorf("watched %d keys, want 1", h.Watched())
	}
	c2()
	if h.Watched() != 0 {
		t.Errorf("watched %d keys after every cancel, want 0", h.Watched())
	}
}
