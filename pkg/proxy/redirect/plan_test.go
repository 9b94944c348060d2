package redirect

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

func defaultConfig() Config {
	return Config{InboundPort: DefaultInboundPort, OutboundPort: DefaultOutboundPort, ProxyUID: DefaultProxyUID}
}

func TestPlanGolden(t *testing.T) {
	many := make([]PortRange, 0, 20)
	for p := uint16(9000); p < 9020; p++ {
		many = append(many, PortRange{First: p, Last: p})
	}
	tests := []struct {
		name   string
		family Family
		edit   func(*Config)
	}{
		{name: "defaults", family: IPv4},
		{name: "skips", family: IPv4, edit: func(c *Config) {
			c.SkipInboundPorts = []PortRange{{22, 22}, {4190, 4191}}
			c.SkipOutboundPorts = []PortRange{{443, 443}, {5432, 5432}}
			c.SkipSubnets = []netip.Prefix{netip.MustParsePrefix("10.96.0.1/12"), netip.MustParsePrefix("fd00::/8")}
		}},
		{name: "skips-ipv6", family: IPv6, edit: func(c *Config) {
			c.SkipOutboundPorts = []PortRange{{443, 443}}
			c.SkipSubnets = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12"), netip.MustParsePrefix("fd00::/8")}
		}},
		{name: "custom-ports-and-many-skips", family: IPv4, edit: func(c *Config) {
			c.InboundPort, c.OutboundPort, c.ProxyUID = 15001, 15006, 1337
			c.SkipInboundPorts = append([]PortRange{{1000, 2000}}, many...)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaultConfig()
			if tt.edit != nil {
				tt.edit(&c)
			}
			rs, err := Plan(c, tt.family)
			if err != nil {
				t.Fatalf("Plan: %v", err)
			}
			// One plan, rendered both ways.
			checkGolden(t, filepath.Join("testdata", "iptables", tt.name+".golden"), RenderIptables(tt.family.base(), Steps(rs)))
			checkGolden(t, filepath.Join("testdata", "nft", tt.name+".golden"), RenderNFT([]Ruleset{rs}))
		})
	}
}

// checkGolden compares got with the golden file, or rewrites it with -update.
func checkGolden(t *testing.T, golden, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("rendered plan differs from %s (-want +got):\n%s", golden, diff)
	}
}

func TestMultiportGroupsFitTheLimit(t *testing.T) {
	var ranges []PortRange
	for p := uint16(1); p <= 40; p++ {
		ranges = append(ranges, PortRange{First: p * 10, Last: p*10 + uint16(p%2)})
	}
	groups := multiportGroups(ranges)
	total := 0
	for _, g := range groups {
		n := 0
		for _, item := range strings.Split(g, ",") {
			n++
			if strings.Contains(item, ":") {
				n++
			}
			total++
		}
		if n > maxMultiportEntries {
			t.Errorf("group %q has %d multiport entries, limit %d", g, n, maxMultiportEntries)
		}
	}
	if total != len(ranges) {
		t.Errorf("groups hold %d ranges, want %d", total, len(ranges))
	}
}

func TestPlanRejectsBadConfig(t *testing.T) {
	tests := []struct {
		name string
		edit func(*Config)
		want string
	}{
		{"no inbound port", func(c *Config) { c.InboundPort = 0 }, "inbound port"},
		{"no outbound port", func(c *Config) { c.OutboundPort = 0 }, "outbound port"},
		{"same ports", func(c *Config) { c.OutboundPort = c.InboundPort }, "must differ"},
		{"reversed range", func(c *Config) { c.SkipOutboundPorts = []PortRange{{20, 10}} }, "20-10"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := defaultConfig()
			tt.edit(&c)
			_, err := Plan(c, IPv4)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Plan error = %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestParsePortRanges(t *testing.T) {
	tests := []struct {
		in      string
		want    []PortRange
		wantErr bool
	}{
		{in: "", want: nil},
		{in: "22", want: []PortRange{{22, 22}}},
		{in: " 22, 8000-8010 ,9000:9001", want: []PortRange{{22, 22}, {8000, 8010}, {9000, 9001}}},
		{in: "0", wantErr: true},
		{in: "65536", wantErr: true},
		{in: "10-5", wantErr: true},
		{in: "http", wantErr: true},
		{in: "1-2-3", wantErr: true},
	}
	for _, tt := range tests {
		got, err := ParsePortRanges(tt.in)
		if (err != nil) != tt.wantErr {
			t.Errorf("ParsePortRanges(%q) error = %v, wantErr %v", tt.in, err, tt.wantErr)
			continue
		}
		if diff := cmp.Diff(tt.want, got); diff != "" {
			t.Errorf("ParsePortRanges(%q) (-want +got):\n%s", tt.in, diff)
		}
	}
}

func TestParseSubnets(t *testing.T) {
	got, err := ParseSubnets("10.0.0.0/8, 192.168.1.7,fd00::/8")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"10.0.0.0/8", "192.168.1.7/32", "fd00::/8"}
	var gotS []string
	for _, p := range got {
		gotS = append(gotS, p.String())
	}
	if diff := cmp.Diff(want, gotS); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	for _, bad := range []string{"10.0.0.0/33", "example.com", "10.0.0/8"} {
		if _, err := ParseSubnets(bad); err == nil || !strings.Contains(err.Error(), bad) {
			t.Errorf("ParseSubnets(%q) error = %v, want one naming the input", bad, err)
		}
	}
}
