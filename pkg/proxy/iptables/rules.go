// Package iptables builds and installs the NAT redirect that puts
// conduit-proxy in the path of a pod's TCP traffic: inbound connections are
// redirected to the proxy's inbound port, outbound connections to its
// outbound port, except the proxy's own traffic and what the user skips.
//
// The rules are made by pure functions (Plan, Render) so they can be compared
// with golden files; Install runs a plan through a Runner.
//
// The layout follows Linkerd's proxy-init. Two chains of our own in the nat
// table are hooked from the built-in ones:
//
//	PREROUTING -p tcp -j CONDUIT_PROXY_INBOUND    (traffic arriving at the pod)
//	OUTPUT     -p tcp -j CONDUIT_PROXY_OUTBOUND   (traffic the pod sends)
//
// CONDUIT_PROXY_OUTBOUND lets the proxy's UID through untouched (that is how
// the proxy reaches the original destination without looping), leaves
// loopback destinations alone, and sends traffic that an application
// addresses to its own pod IP (routed through lo) to CONDUIT_PROXY_INBOUND, so
// it is handled like any other inbound connection.
package iptables

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
)

// Names of the chains this package owns in the nat table.
const (
	InboundChain  = "CONDUIT_PROXY_INBOUND"
	OutboundChain = "CONDUIT_PROXY_OUTBOUND"
)

// Defaults shared with the proxy's listeners and the injector.
const (
	DefaultInboundPort  = 4143
	DefaultOutboundPort = 4140
	DefaultProxyUID     = 2102
)

// maxMultiportEntries is the xt_multiport limit: 15 ports, a range counting
// as two.
const maxMultiportEntries = 15

// Family is the IP family a plan is for: iptables (IPv4) or ip6tables (IPv6).
type Family int

const (
	IPv4 Family = iota
	IPv6
)

func (f Family) String() string {
	if f == IPv6 {
		return "ipv6"
	}
	return "ipv4"
}

// loopback is the family's loopback range, which is never redirected.
func (f Family) loopback() string {
	if f == IPv6 {
		return "::1/128"
	}
	return "127.0.0.0/8"
}

// PortRange is an inclusive range of TCP ports; a single port has First == Last.
type PortRange struct {
	First, Last uint16
}

func (r PortRange) String() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d-%d", r.First, r.Last)
}

// multiport is the range as xt_multiport writes it.
func (r PortRange) multiport() string {
	if r.First == r.Last {
		return strconv.Itoa(int(r.First))
	}
	return fmt.Sprintf("%d:%d", r.First, r.Last)
}

func (r PortRange) entries() int {
	if r.First == r.Last {
		return 1
	}
	return 2
}

// Config describes the redirect for one pod.
type Config struct {
	// InboundPort is where connections arriving at the pod are redirected.
	InboundPort uint16
	// OutboundPort is where connections the pod makes are redirected.
	OutboundPort uint16
	// ProxyUID is the user the proxy runs as; its traffic is never redirected.
	ProxyUID uint32
	// SkipInboundPorts are destination ports of inbound traffic that go
	// straight to the application.
	SkipInboundPorts []PortRange
	// SkipOutboundPorts are destination ports of outbound traffic that bypass
	// the proxy.
	SkipOutboundPorts []PortRange
	// SkipSubnets are destinations of outbound traffic that bypass the proxy.
	// Only the prefixes of the plan's family are used.
	SkipSubnets []netip.Prefix
}

// Validate reports the first problem with c, naming the setting.
func (c Config) Validate() error {
	switch {
	case c.InboundPort == 0:
		return fmt.Errorf("inbound port must be 1-65535")
	case c.OutboundPort == 0:
		return fmt.Errorf("outbound port must be 1-65535")
	case c.InboundPort == c.OutboundPort:
		return fmt.Errorf("inbound and outbound ports are both %d: they must differ", c.InboundPort)
	}
	for _, r := range append(append([]PortRange(nil), c.SkipInboundPorts...), c.SkipOutboundPorts...) {
		if r.First == 0 || r.First > r.Last {
			return fmt.Errorf("port range %s is invalid: use PORT or FIRST-LAST within 1-65535", r)
		}
	}
	return nil
}

// Step is one iptables invocation, without the program name. When OrElse is
// set, it runs only if Args fails: "-N chain" or else "-F chain" makes a chain
// exist and be empty; "-C rule" or else "-A rule" adds a rule once.
type Step struct {
	Args   []string
	OrElse []string
}

// Plan returns the steps that make the nat table of one family redirect as c
// says. Running the plan twice leaves the same rules as running it once: the
// own chains are created or flushed, then refilled, and the jumps into them
// are appended only when a -C check does not find them.
func Plan(c Config, family Family) ([]Step, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	// -w waits for the xtables lock (iptables-legacy) instead of failing.
	nat := func(args ...string) []string { return append([]string{"-w", "5", "-t", "nat"}, args...) }
	var steps []Step
	for _, chain := range []string{InboundChain, OutboundChain} {
		steps = append(steps, Step{Args: nat("-N", chain), OrElse: nat("-F", chain)})
	}
	add := func(chain string, rule ...string) {
		steps = append(steps, Step{Args: nat(append([]string{"-A", chain}, rule...)...)})
	}

	// Inbound: everything but the skipped ports goes to the inbound listener.
	for _, ports := range multiportGroups(c.SkipInboundPorts) {
		add(InboundChain, "-p", "tcp", "-m", "multiport", "--dports", ports,
			"-m", "comment", "--comment", "conduit: skip inbound ports", "-j", "RETURN")
	}
	add(InboundChain, "-p", "tcp", "-m", "comment", "--comment", "conduit: to inbound proxy",
		"-j", "REDIRECT", "--to-ports", strconv.Itoa(int(c.InboundPort)))

	// Outbound.
	uid := strconv.FormatUint(uint64(c.ProxyUID), 10)
	add(OutboundChain, "-m", "owner", "--uid-owner", uid,
		"-m", "comment", "--comment", "conduit: proxy uid", "-j", "RETURN")
	add(OutboundChain, "-d", family.loopback(),
		"-m", "comment", "--comment", "conduit: loopback", "-j", "RETURN")
	add(OutboundChain, "-o", "lo",
		"-m", "comment", "--comment", "conduit: to own pod IP goes inbound", "-j", InboundChain)
	for _, ports := range multiportGroups(c.SkipOutboundPorts) {
		add(OutboundChain, "-p", "tcp", "-m", "multiport", "--dports", ports,
			"-m", "comment", "--comment", "conduit: skip outbound ports", "-j", "RETURN")
	}
	for _, p := range c.SkipSubnets {
		if p.Addr().Is4() != (family == IPv4) {
			continue
		}
		add(OutboundChain, "-d", p.Masked().String(),
			"-m", "comment", "--comment", "conduit: skip subnet", "-j", "RETURN")
	}
	add(OutboundChain, "-p", "tcp", "-m", "comment", "--comment", "conduit: to outbound proxy",
		"-j", "REDIRECT", "--to-ports", strconv.Itoa(int(c.OutboundPort)))

	// Hooks, each added once.
	for _, hook := range [][2]string{{"PREROUTING", InboundChain}, {"OUTPUT", OutboundChain}} {
		rule := []string{hook[0], "-p", "tcp", "-j", hook[1]}
		steps = append(steps, Step{
			Args:   nat(append([]string{"-C"}, rule...)...),
			OrElse: nat(append([]string{"-A"}, rule...)...),
		})
	}
	return steps, nil
}

// multiportGroups splits ranges into --dports values that each fit one
// multiport match.
func multiportGroups(ranges []PortRange) []string {
	var groups []string
	var cur []string
	n := 0
	for _, r := range ranges {
		if n+r.entries() > maxMultiportEntries {
			groups = append(groups, strings.Join(cur, ","))
			cur, n = nil, 0
		}
		cur = append(cur, r.multiport())
		n += r.entries()
	}
	if len(cur) > 0 {
		groups = append(groups, strings.Join(cur, ","))
	}
	return groups
}

// Render writes steps as a shell script for program (e.g. "iptables-nft")
// that does exactly what Install does; it is what --dry-run prints.
func Render(program string, steps []Step) string {
	var b strings.Builder
	for _, s := range steps {
		b.WriteString(commandLine(program, s.Args))
		if s.OrElse != nil {
			b.WriteString(" 2>/dev/null || ")
			b.WriteString(commandLine(program, s.OrElse))
		}
		b.WriteByte('\n')
	}
	return b.String()
}

func commandLine(program string, args []string) string {
	parts := make([]string, 0, len(args)+1)
	parts = append(parts, program)
	for _, a := range args {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:,=", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
