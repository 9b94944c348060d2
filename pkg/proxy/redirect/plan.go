// Package redirect builds and installs the NAT redirect that puts
// conduit-proxy in the path of a pod's TCP traffic: inbound connections are
// redirected to the proxy's inbound port, outbound connections to its
// outbound port, except the proxy's own traffic and what the user skips.
//
// Plan makes one Ruleset per IP family, a description that does not depend on
// the tool that installs it. It is rendered two ways:
//
//   - nftables (nft.go): a table of our own, "ip conduit" / "ip6 conduit",
//     installed from Go over netlink (no program needed, so it works in the
//     release image, which holds only the binary) and printed in `nft -f`
//     syntax for --dry-run;
//   - iptables (iptables.go): commands for iptables-nft or iptables-legacy,
//     kept for kernels without nf_tables.
//
// The layout follows Linkerd's proxy-init. Two chains of our own are hooked
// from the nat hooks:
//
//	PREROUTING -p tcp -j CONDUIT_PROXY_INBOUND    (traffic arriving at the pod)
//	OUTPUT     -p tcp -j CONDUIT_PROXY_OUTBOUND   (traffic the pod sends)
//
// CONDUIT_PROXY_OUTBOUND lets the proxy's UID through untouched (that is how
// the proxy reaches the original destination without looping), leaves
// loopback destinations alone, and sends traffic that an application
// addresses to its own pod IP (routed through lo) to CONDUIT_PROXY_INBOUND, so
// it is handled like any other inbound connection.
//
// Both renderings redirect with conntrack NAT (REDIRECT / nft redirect), so
// the proxy reads the original destination with SO_ORIGINAL_DST either way.
package redirect

import (
	"fmt"
	"net/netip"
	"strconv"
)

// Names of the chains this package owns.
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

// Family is the IP family a plan is for: iptables/"ip" (IPv4) or
// ip6tables/"ip6" (IPv6).
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
func (f Family) loopback() netip.Prefix {
	if f == IPv6 {
		return netip.MustParsePrefix("::1/128")
	}
	return netip.MustParsePrefix("127.0.0.0/8")
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

// Ruleset is the redirect of one family. Chains lists our own chains first,
// then the hooked ones, each with its rules in order.
type Ruleset struct {
	Family Family
	Chains []Chain
}

// Hook names the nat hook a chain is attached to: iptables' built-in chain
// of that name, or an nftables base chain at that hook.
type Hook string

const (
	HookPrerouting Hook = "PREROUTING"
	HookOutput     Hook = "OUTPUT"
)

// Chain is a list of rules. A chain with a Hook is where packets enter (in
// iptables it is the built-in chain, so its Name is the hook's); the others
// are reached only by jumps.
type Chain struct {
	Name  string
	Hook  Hook
	Rules []Rule
}

// Rule matches packets on every condition that is set and then applies its
// Action. The first rule whose conditions hold decides.
type Rule struct {
	// TCP restricts the rule to TCP.
	TCP bool
	// OwnerUID, when set, matches packets of sockets owned by that user.
	OwnerUID *uint32
	// Dst, when valid, matches destinations in the prefix.
	Dst netip.Prefix
	// OutInterface, when set, matches packets leaving through that interface.
	OutInterface string
	// DstPorts, when set, matches TCP destination ports in any of the ranges.
	DstPorts []PortRange
	// Comment says why the rule is there; the tools show it.
	Comment string
	Action  Action
}

// ActionKind is what a rule does with the packets it matches.
type ActionKind int

const (
	// Return leaves the chain: the packet goes on in the chain that jumped
	// here, or is accepted untouched at the end of a hooked chain.
	Return ActionKind = iota
	// Jump continues in another of our chains.
	Jump
	// Redirect sends the connection to a local port (conntrack NAT).
	Redirect
)

// Action is a rule's verdict.
type Action struct {
	Kind  ActionKind
	Chain string // Jump's target
	Port  uint16 // Redirect's port
}

// Plan returns the redirect of one family as c says.
func Plan(c Config, family Family) (Ruleset, error) {
	if err := c.Validate(); err != nil {
		return Ruleset{}, err
	}
	ret := Action{Kind: Return}
	var inbound []Rule
	// Inbound: everything but the skipped ports goes to the inbound listener.
	if len(c.SkipInboundPorts) > 0 {
		inbound = append(inbound, Rule{TCP: true, DstPorts: c.SkipInboundPorts, Comment: "conduit: skip inbound ports", Action: ret})
	}
	inbound = append(inbound, Rule{TCP: true, Comment: "conduit: to inbound proxy", Action: Action{Kind: Redirect, Port: c.InboundPort}})

	// Outbound.
	uid := c.ProxyUID
	outbound := []Rule{
		{OwnerUID: &uid, Comment: "conduit: proxy uid", Action: ret},
		{Dst: family.loopback(), Comment: "conduit: loopback", Action: ret},
		{OutInterface: "lo", Comment: "conduit: to own pod IP goes inbound", Action: Action{Kind: Jump, Chain: InboundChain}},
	}
	if len(c.SkipOutboundPorts) > 0 {
		outbound = append(outbound, Rule{TCP: true, DstPorts: c.SkipOutboundPorts, Comment: "conduit: skip outbound ports", Action: ret})
	}
	for _, p := range c.SkipSubnets {
		if p.Addr().Is4() != (family == IPv4) {
			continue
		}
		outbound = append(outbound, Rule{Dst: p.Masked(), Comment: "conduit: skip subnet", Action: ret})
	}
	outbound = append(outbound, Rule{TCP: true, Comment: "conduit: to outbound proxy", Action: Action{Kind: Redirect, Port: c.OutboundPort}})

	hook := func(h Hook, to string) Chain {
		return Chain{Name: string(h), Hook: h, Rules: []Rule{{TCP: true, Action: Action{Kind: Jump, Chain: to}}}}
	}
	return Ruleset{Family: family, Chains: []Chain{
		{Name: InboundChain, Rules: inbound},
		{Name: OutboundChain, Rules: outbound},
		hook(HookPrerouting, InboundChain),
		hook(HookOutput, OutboundChain),
	}}, nil
}

// PlanAll returns the rulesets of IPv4 and, when ipv6 is set, IPv6.
func PlanAll(c Config, ipv6 bool) ([]Ruleset, error) {
	families := []Family{IPv4}
	if ipv6 {
		families = append(families, IPv6)
	}
	var out []Ruleset
	for _, f := range families {
		rs, err := Plan(c, f)
		if err != nil {
			return nil, err
		}
		out = append(out, rs)
	}
	return out, nil
}
