package redirect

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// Init is what `conduit-proxy init` does: install the redirect Config with
// Mode, for IPv4 and, with IPv6, for IPv6 too; with DryRun print it instead.
type Init struct {
	Config       Config
	Mode         Mode
	IPv6, DryRun bool
}

// InitFlags are the `conduit-proxy init` flags as given; Init checks them.
type InitFlags struct {
	inbound, outbound, uid          uint
	skipIn, skipOut, skipNets, mode string
	ipv6, dryRun                    bool
}

// AddFlags defines the `conduit-proxy init` flags on fs.
func (f *InitFlags) AddFlags(fs *flag.FlagSet) {
	fs.UintVar(&f.inbound, "inbound-port", DefaultInboundPort, "port of the proxy's inbound listener; inbound TCP is redirected there")
	fs.UintVar(&f.outbound, "outbound-port", DefaultOutboundPort, "port of the proxy's outbound listener; outbound TCP is redirected there")
	fs.UintVar(&f.uid, "proxy-uid", DefaultProxyUID, "user ID the proxy runs as; its traffic is never redirected")
	fs.StringVar(&f.skipIn, "skip-inbound-ports", "", "comma-separated ports or FIRST-LAST ranges that inbound traffic reaches directly")
	fs.StringVar(&f.skipOut, "skip-outbound-ports", "", "comma-separated ports or FIRST-LAST ranges that outbound traffic reaches directly")
	fs.StringVar(&f.skipNets, "skip-subnets", "", "comma-separated CIDRs that outbound traffic reaches directly")
	fs.StringVar(&f.mode, "redirect-mode", string(ModeAuto), "how to install the redirect: auto (nftables over netlink; iptables programs\n"+
		"only if the kernel has no nf_tables), nft (nftables only), iptables-nft or iptables-legacy")
	fs.BoolVar(&f.ipv6, "ipv6", false, "also install the redirect for IPv6")
	fs.BoolVar(&f.dryRun, "dry-run", false, "print the nftables ruleset (nft -f syntax) or the iptables commands instead of installing them")
}

// Init checks the flags; its messages name them.
func (f *InitFlags) Init() (*Init, error) {
	opts := &Init{IPv6: f.ipv6, DryRun: f.dryRun}
	var err error
	if opts.Mode, err = ParseMode(f.mode); err != nil {
		return nil, fmt.Errorf("--redirect-mode: %w", err)
	}
	for _, p := range []struct {
		name string
		v    uint
		dst  *uint16
	}{{"--inbound-port", f.inbound, &opts.Config.InboundPort}, {"--outbound-port", f.outbound, &opts.Config.OutboundPort}} {
		if p.v == 0 || p.v > 65535 {
			return nil, fmt.Errorf("%s %d is not a port: use 1-65535", p.name, p.v)
		}
		*p.dst = uint16(p.v)
	}
	if f.uid > 1<<32-1 {
		return nil, fmt.Errorf("--proxy-uid %d is not a user ID", f.uid)
	}
	opts.Config.ProxyUID = uint32(f.uid)
	if opts.Config.SkipInboundPorts, err = ParsePortRanges(f.skipIn); err != nil {
		return nil, fmt.Errorf("--skip-inbound-ports: %w", err)
	}
	if opts.Config.SkipOutboundPorts, err = ParsePortRanges(f.skipOut); err != nil {
		return nil, fmt.Errorf("--skip-outbound-ports: %w", err)
	}
	if opts.Config.SkipSubnets, err = ParseSubnets(f.skipNets); err != nil {
		return nil, fmt.Errorf("--skip-subnets: %w", err)
	}
	if err := opts.Config.Validate(); err != nil {
		return nil, err
	}
	return opts, nil
}

// Run plans the rulesets, then prints them (dry run) or installs them with
// b and prints one line naming the back end that did.
func (opts *Init) Run(ctx context.Context, b Backends, stdout io.Writer) error {
	rulesets, err := PlanAll(opts.Config, opts.IPv6)
	if err != nil {
		return err
	}
	if opts.DryRun {
		_, err := io.WriteString(stdout, dryRun(ctx, opts.Mode, rulesets, b.Runner))
		return err
	}
	used, err := Install(ctx, opts.Mode, rulesets, b)
	if errors.Is(err, ErrPermission) {
		return fmt.Errorf("%w: run conduit-proxy init as root with the NET_ADMIN capability (and NET_RAW for iptables-legacy; "+
			"in Kubernetes: securityContext.runAsUser: 0, capabilities.add: [NET_ADMIN, NET_RAW])", err)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "conduit-proxy init: redirect installed with %s: inbound TCP → %d, outbound TCP → %d, proxy uid %s exempt\n",
		used, opts.Config.InboundPort, opts.Config.OutboundPort, strconv.FormatUint(uint64(opts.Config.ProxyUID), 10))
	return err
}

// dryRun is what --dry-run prints: the nftables ruleset in nft -f syntax, or
// the iptables commands for the programs that mode would run (their usual
// names when they are not installed: a dry run needs no program).
func dryRun(ctx context.Context, mode Mode, rulesets []Ruleset, r Runner) string {
	if mode.UsesNFT() {
		head := "# conduit-proxy init --dry-run: nothing was changed; this nftables ruleset would be loaded over netlink\n" +
			"# in one transaction (the same as nft -f)\n"
		if mode == ModeAuto {
			head += "# (--redirect-mode auto runs iptables programs instead only if the kernel has no nf_tables)\n"
		}
		return head + RenderNFT(rulesets)
	}
	var b strings.Builder
	b.WriteString("# conduit-proxy init --dry-run: nothing was changed; these commands would be run\n")
	for _, rs := range rulesets {
		program, err := Program(ctx, r, mode, rs.Family)
		if err != nil {
			program = rs.Family.DefaultProgram(mode)
		}
		b.WriteString(RenderIptables(program, Steps(rs)))
	}
	return b.String()
}
