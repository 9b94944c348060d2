package redirect

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// NFTTable is the name of our nftables table, one per family ("ip conduit",
// "ip6 conduit"). Nothing else is touched: the tables of iptables-nft,
// kube-proxy or any other tool in the namespace stay as they are.
//
// Sharing the hooks is fine. A pod's network namespace is new, so kube-proxy
// (iptables or nftables mode, both in the node's namespace) is not in it.
// When another tool's nat chains are in the namespace too (iptables-nft,
// iptables-legacy, another nft table), the kernel runs every nat chain of a
// hook in priority order for a connection's first packet, and the first one
// that sets up a NAT mapping decides; empty chains accept and change
// nothing. An init container that used iptables before us would have
// redirected to the same ports.
const NFTTable = "conduit"

// ErrNFTablesUnavailable means the kernel cannot run our nftables ruleset:
// no nf_tables, or no nat chain type or redirect expression for it.
var ErrNFTablesUnavailable = errors.New("nf_tables is not available")

// nftFamily is the family's nftables keyword: ip or ip6.
func (f Family) nftFamily() string {
	if f == IPv6 {
		return "ip6"
	}
	return "ip"
}

// nftHook is how a hooked chain is declared: a nat base chain at the hook,
// at the priority of iptables' nat table (NF_IP_PRI_NAT_DST, -100), which
// nft calls dstnat at prerouting. REDIRECT rewrites the destination, so
// both hooks are destination NAT.
func nftHook(h Hook) string {
	switch h {
	case HookPrerouting:
		return "type nat hook prerouting priority dstnat; policy accept;"
	case HookOutput:
		return "type nat hook output priority -100; policy accept;"
	}
	return ""
}

// nftRules splits r into rules that each match at most one port range: nft
// matches a range natively, and one rule per range keeps the first-match
// semantics of a multiport list.
func nftRules(r Rule) []Rule {
	if len(r.DstPorts) <= 1 {
		return []Rule{r}
	}
	out := make([]Rule, len(r.DstPorts))
	for i, p := range r.DstPorts {
		out[i] = r
		out[i].DstPorts = []PortRange{p}
	}
	return out
}

// nftRuleText is one rule (with at most one port range) in nft syntax. The
// statements come in the order the netlink encoder (nftExprs) emits them.
func nftRuleText(f Family, r Rule) string {
	var parts []string
	if r.TCP {
		parts = append(parts, "meta l4proto tcp")
	}
	if r.OwnerUID != nil {
		parts = append(parts, "meta skuid "+strconv.FormatUint(uint64(*r.OwnerUID), 10))
	}
	if r.Dst.IsValid() {
		parts = append(parts, f.nftFamily()+" daddr "+r.Dst.String())
	}
	if r.OutInterface != "" {
		parts = append(parts, "oifname "+strconv.Quote(r.OutInterface))
	}
	if len(r.DstPorts) == 1 {
		parts = append(parts, "tcp dport "+r.DstPorts[0].String())
	}
	switch r.Action.Kind {
	case Return:
		parts = append(parts, "return")
	case Jump:
		parts = append(parts, "jump "+r.Action.Chain)
	case Redirect:
		parts = append(parts, "redirect to :"+strconv.Itoa(int(r.Action.Port)))
	}
	if r.Comment != "" {
		parts = append(parts, "comment "+strconv.Quote(r.Comment))
	}
	return strings.Join(parts, " ")
}

// RenderNFT writes rulesets as an `nft -f` script that does exactly what
// InstallNFT does in one transaction: each table is created if missing,
// deleted (with everything in it) and made anew, so running it twice leaves
// one copy of the rules.
func RenderNFT(rulesets []Ruleset) string {
	var b strings.Builder
	for _, rs := range rulesets {
		table := "table " + rs.Family.nftFamily() + " " + NFTTable
		fmt.Fprintf(&b, "%s\ndelete %s\n%s {\n", table, table, table)
		for _, c := range rs.Chains {
			fmt.Fprintf(&b, "\tchain %s {\n", c.Name)
			if c.Hook != "" {
				fmt.Fprintf(&b, "\t\t%s\n", nftHook(c.Hook))
			}
			for _, r := range c.Rules {
				for _, one := range nftRules(r) {
					fmt.Fprintf(&b, "\t\t%s\n", nftRuleText(rs.Family, one))
				}
			}
			b.WriteString("\t}\n")
		}
		b.WriteString("}\n")
	}
	return b.String()
}
