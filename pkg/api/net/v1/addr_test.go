package netv1

import (
	"net/netip"
	"testing"
)

func TestAddrPortRoundTrip(t *testing.T) {
	for _, s := range []string{"10.1.2.3:8080", "[fd00::1]:443", "127.0.0.1:1"} {
		ap := netip.MustParseAddrPort(s)
		got, err := FromAddrPort(ap).AddrPort()
		if err != nil {
			t.Fatalf("%s: %v", s, err)
		}
		if got != ap {
			t.Errorf("round trip of %s gave %s", s, got)
		}
	}
	mapped := netip.MustParseAddrPort("[::ffff:10.0.0.1]:80")
	if got := FromAddrPort(mapped); len(got.Ip) != 4 {
		t.Errorf("IPv4-mapped address sent as %d bytes, want 4", len(got.Ip))
	}
}

func TestAddrPortRejectsGarbage(t *testing.T) {
	for name, a := range map[string]*TcpAddress{
		"nil":        nil,
		"empty ip":   {Port: 80},
		"5-byte ip":  {Ip: []byte{1, 2, 3, 4, 5}, Port: 80},
		"port 0":     {Ip: []byte{1, 2, 3, 4}},
		"port 70000": {Ip: []byte{1, 2, 3, 4}, Port: 70000},
	} {
		if _, err := a.AddrPort(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
