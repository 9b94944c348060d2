package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/proxy/redirect"
)

// initOptions are the settings of `conduit-proxy init`.
type initOptions struct {
	config redirect.Config
	mode   redirect.Mode
	ipv6   bool
	dryRun bool
}

// initMain installs the pod's redirect; it is the init container's entry
// point.
func initMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseInitFlags(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "conduit-proxy init: %v\n", err)
		return 2
	}
	if err := runInit(ctx, opts, redirect.Backends{NFT: redirect.InstallNFT, Runner: redirect.ExecRunner{}}, stdout); err != nil {
		fmt.Fprintf(stderr, "conduit-proxy init: %v\n", err)
		return 1
	}
	return 0
}

func parseInitFlags(args []string, getenv func(string) string, stderr io.Writer) (*initOptions, error) {
	fs := flag.NewFlagSet("conduit-proxy init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inbound := fs.Uint("inbound-port", redirect.DefaultInboundPort, "port of the proxy's inbound listener; inbound TCP is redirected there")
	outbound := fs.Uint("outbound-port", redirect.DefaultOutboundPort, "port of the proxy's outbound listener; outbound TCP is redirected there")
	uid := fs.Uint("proxy-uid", redirect.DefaultProxyUID, "user ID the proxy runs as; its traffic is never redirected")
	skipIn := fs.String("skip-inbound-ports", "", "comma-separated ports or FIRST-LAST ranges that inbound traffic reaches directly")
	skipOut := fs.String("skip-outbound-ports", "", "comma-separated ports or FIRST-LAST ranges that outbound traffic reaches directly")
	skipNets := fs.String("skip-subnets", "", "comma-separated CIDRs that outbound traffic reaches directly")
	mode := fs.String("redirect-mode", string(redirect.ModeAuto), "how to install the redirect: auto (nftables over netlink; iptables programs\n"+
		"only if the kernel has no nf_tables), nft (nftables only), iptables-nft or iptables-legacy")
	ipv6 := fs.Bool("ipv6", false, "also install the redirect for IPv6")
	dryRun := fs.Bool("dry-run", false, "print the nftables ruleset (nft -f syntax) or the iptables commands instead of installing them")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: conduit-proxy init [flags]\n\n"+
			"Installs the pod's NAT redirect to conduit-proxy: with nftables over netlink (no program\n"+
			"needed), or with iptables programs. Every flag can also be set with an environment\n"+
			"variable %s<FLAG_IN_UPPER_SNAKE>; flags win.\n\n", contract.EnvPrefix)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: init takes only flags (see --help)", fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return nil, err
	}

	opts := &initOptions{ipv6: *ipv6, dryRun: *dryRun}
	var err error
	if opts.mode, err = redirect.ParseMode(*mode); err != nil {
		return nil, fmt.Errorf("--redirect-mode: %w", err)
	}
	for _, p := range []struct {
		name string
		v    uint
		dst  *uint16
	}{{"--inbound-port", *inbound, &opts.config.InboundPort}, {"--outbound-port", *outbound, &opts.config.OutboundPort}} {
		if p.v == 0 || p.v > 65535 {
			return nil, fmt.Errorf("%s %d is not a port: use 1-65535", p.name, p.v)
		}
		*p.dst = uint16(p.v)
	}
	if *uid > 1<<32-1 {
		return nil, fmt.Errorf("--proxy-uid %d is not a user ID", *uid)
	}
	opts.config.ProxyUID = uint32(*uid)
	if opts.config.SkipInboundPorts, err = redirect.ParsePortRanges(*skipIn); err != nil {
		return nil, fmt.Errorf("--skip-inbound-ports: %w", err)
	}
	if opts.config.SkipOutboundPorts, err = redirect.ParsePortRanges(*skipOut); err != nil {
		return nil, fmt.Errorf("--skip-outbound-ports: %w", err)
	}
	if opts.config.SkipSubnets, err = redirect.ParseSubnets(*skipNets); err != nil {
		return nil, fmt.Errorf("--skip-subnets: %w", err)
	}
	if err := opts.config.Validate(); err != nil {
		return nil, err
	}
	return opts, nil
}

// applyEnv sets every flag that was not given on the command line from its
// environment variable (contract.Env), when that is set.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		name := contract.Env(f.Name)
		if v := getenv(name); v != "" {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("environment variable %s=%q is not a valid --%s: %v", name, v, f.Name, setErr)
			}
		}
	})
	return err
}

// runInit plans the rulesets, then prints them (dry run) or installs them
// with b and prints one line naming the back end that did.
func runInit(ctx context.Context, opts *initOptions, b redirect.Backends, stdout io.Writer) error {
	rulesets, err := redirect.PlanAll(opts.config, opts.ipv6)
	if err != nil {
		return err
	}
	if opts.dryRun {
		_, err := io.WriteString(stdout, dryRun(ctx, opts.mode, rulesets, b.Runner))
		return err
	}
	used, err := redirect.Install(ctx, opts.mode, rulesets, b)
	if errors.Is(err, redirect.ErrPermission) {
		return fmt.Errorf("%w: run conduit-proxy init as root with the NET_ADMIN capability (and NET_RAW for iptables-legacy; "+
			"in Kubernetes: securityContext.runAsUser: 0, capabilities.add: [NET_ADMIN, NET_RAW])", err)
	}
	if err != nil {
		return err
	}
	_, err = fmt.Fprintf(stdout, "conduit-proxy init: redirect installed with %s: inbound TCP → %d, outbound TCP → %d, proxy uid %s exempt\n",
		used, opts.config.InboundPort, opts.config.OutboundPort, strconv.FormatUint(uint64(opts.config.ProxyUID), 10))
	return err
}

// dryRun is what --dry-run prints: the nftables ruleset in nft -f syntax, or
// the iptables commands for the programs that mode would run (their usual
// names when they are not installed: a dry run needs no program).
func dryRun(ctx context.Context, mode redirect.Mode, rulesets []redirect.Ruleset, r redirect.Runner) string {
	if mode.UsesNFT() {
		head := "# conduit-proxy init --dry-run: nothing was changed; this nftables ruleset would be loaded over netlink\n" +
			"# in one transaction (the same as nft -f)\n"
		if mode == redirect.ModeAuto {
			head += "# (--redirect-mode auto runs iptables programs instead only if the kernel has no nf_tables)\n"
		}
		return head + redirect.RenderNFT(rulesets)
	}
	var b strings.Builder
	b.WriteString("# conduit-proxy init --dry-run: nothing was changed; these commands would be run\n")
	for _, rs := range rulesets {
		program, err := redirect.Program(ctx, r, mode, rs.Family)
		if err != nil {
			program = rs.Family.DefaultProgram(mode)
		}
		b.WriteString(redirect.RenderIptables(program, redirect.Steps(rs)))
	}
	return b.String()
}
