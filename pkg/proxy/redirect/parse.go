package redirect

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// ParsePortRanges parses a comma-separated list of ports and inclusive ranges
// ("22,8000-8010"; "8000:8010" is accepted too). Empty input is no ports.
func ParsePortRanges(s string) ([]PortRange, error) {
	var out []PortRange
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		first, last, isRange := strings.Cut(item, "-")
		if !isRange {
			first, last, isRange = strings.Cut(item, ":")
		}
		if !isRange {
			last = first
		}
		a, errA := parsePort(first)
		b, errB := parsePort(last)
		if errA != nil || errB != nil || a > b {
			return nil, fmt.Errorf("%q is not a port or port range: use PORT or FIRST-LAST within 1-65535", item)
		}
		out = append(out, PortRange{First: a, Last: b})
	}
	return out, nil
}

func parsePort(s string) (uint16, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || n == 0 {
		return 0, fmt.Errorf("bad port %q", s)
	}
	return uint16(n), nil
}

// ParseSubnets parses a comma-separated list of CIDRs ("10.0.0.0/8,fd00::/8");
// a bare address means that one host. Empty input is no subnets.
func ParseSubnets(s string) ([]netip.Prefix, error) {
	var out []netip.Prefix
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		if !strings.Contains(item, "/") {
			addr, err := netip.ParseAddr(item)
			if err != nil {
				return nil, fmt.Errorf("%q is not a CIDR: use ADDRESS/BITS, e.g. 10.0.0.0/8", item)
			}
			out = append(out, netip.PrefixFrom(addr, addr.BitLen()))
			continue
		}
		p, err := netip.ParsePrefix(item)
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR: use ADDRESS/BITS, e.g. 10.0.0.0/8", item)
		}
		out = append(out, p)
	}
	return out, nil
}
