package redirect

import (
	"fmt"
	"strconv"
	"strings"
)

// maxMultiportEntries is the xt_multiport limit: 15 ports, a range counting
// as two.
const maxMultiportEntries = 15

// base is the program prefix of a family: iptables or ip6tables.
func (f Family) base() string {
	if f == IPv6 {
		return "ip6tables"
	}
	return "iptables"
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

// Step is one iptables invocation, without the program name. When OrElse is
// set, it runs only if Args fails: "-N chain" or else "-F chain" makes a chain
// exist and be empty; "-C rule" or else "-A rule" adds a rule once.
type Step struct {
	Args   []string
	OrElse []string
}

// Steps renders rs as iptables invocations on the nat table. Running them
// twice leaves the same rules as running them once: our chains are created
// or flushed, then refilled, and the rules of the built-in chains (the jumps
// into ours) are appended only when a -C check does not find them.
func Steps(rs Ruleset) []Step {
	// -w waits for the xtables lock (iptables-legacy) instead of failing.
	nat := func(args ...string) []string { return append([]string{"-w", "5", "-t", "nat"}, args...) }
	var steps []Step
	for _, c := range rs.Chains {
		if c.Hook == "" {
			steps = append(steps, Step{Args: nat("-N", c.Name), OrElse: nat("-F", c.Name)})
		}
	}
	for _, c := range rs.Chains {
		for _, r := range c.Rules {
			for _, spec := range ruleSpecs(r) {
				rule := append([]string{c.Name}, spec...)
				if c.Hook != "" {
					steps = append(steps, Step{Args: nat(append([]string{"-C"}, rule...)...), OrElse: nat(append([]string{"-A"}, rule...)...)})
				} else {
					steps = append(steps, Step{Args: nat(append([]string{"-A"}, rule...)...)})
				}
			}
		}
	}
	return steps
}

// ruleSpecs is r as iptables rule specifications: one, or one per multiport
// group when r matches more ports than a multiport match holds.
func ruleSpecs(r Rule) [][]string {
	var match []string
	if r.TCP {
		match = append(match, "-p", "tcp")
	}
	if r.Dst.IsValid() {
		match = append(match, "-d", r.Dst.String())
	}
	if r.OutInterface != "" {
		match = append(match, "-o", r.OutInterface)
	}
	if r.OwnerUID != nil {
		match = append(match, "-m", "owner", "--uid-owner", strconv.FormatUint(uint64(*r.OwnerUID), 10))
	}
	var target []string
	if r.Comment != "" {
		target = append(target, "-m", "comment", "--comment", r.Comment)
	}
	switch r.Action.Kind {
	case Return:
		target = append(target, "-j", "RETURN")
	case Jump:
		target = append(target, "-j", r.Action.Chain)
	case Redirect:
		target = append(target, "-j", "REDIRECT", "--to-ports", strconv.Itoa(int(r.Action.Port)))
	}
	join := func(parts ...[]string) []string {
		var out []string
		for _, p := range parts {
			out = append(out, p...)
		}
		return out
	}
	if len(r.DstPorts) == 0 {
		return [][]string{join(match, target)}
	}
	var specs [][]string
	for _, ports := range multiportGroups(r.DstPorts) {
		specs = append(specs, join(match, []string{"-m", "multiport", "--dports", ports}, target))
	}
	return specs
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

// RenderIptables writes steps as a shell script for program (e.g. "iptables-nft")
// that does exactly what Install does; it is what --dry-run prints.
func RenderIptables(program string, steps []Step) string {
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
