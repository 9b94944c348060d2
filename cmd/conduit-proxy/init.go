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

	"github.com/conduitmesh/conduit/pkg/proxy/iptables"
)

// envPrefix prefixes the environment variable of every flag:
// --skip-outbound-ports ⇔ CONDUIT_PROXY_SKIP_OUTBOUND_PORTS.
const envPrefix = "CONDUIT_PROXY_"

// initOptions are the settings of `conduit-proxy init`.
type initOptions struct {
	config iptables.Config
	mode   iptables.Mode
	ipv6   bool
	dryRun bool
}

// initMain installs the pod's iptables redirect; it is the init container's
// entry point.
func initMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseInitFlags(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "conduit-proxy init: %v\n", err)
		return 2
	}
	if err := runInit(ctx, opts, iptables.ExecRunner{}, stdout); err != nil {
		fmt.Fprintf(stderr, "conduit-proxy init: %v\n", err)
		return 1
	}
	return 0
}

func parseInitFlags(args []string, getenv func(string) string, stderr io.Writer) (*initOptions, error) {
	fs := flag.NewFlagSet("conduit-proxy init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	inbound := fs.Uint("inbound-port", iptables.DefaultInboundPort, "port of the proxy's inbound listener; inbound TCP is redirected there")
	outbound := fs.Uint("outbound-port", iptables.DefaultOutboundPort, "port of the proxy's outbound listener; outbound TCP is redirected there")
	uid := fs.Uint("proxy-uid", iptables.DefaultProxyUID, "user ID the proxy runs as; its traffic is never redirected")
	skipIn := fs.String("skip-inbound-ports", "", "comma-separated ports or FIRST-LAST ranges that inbound traffic reaches directly")
	skipOut := fs.String("skip-outbound-ports", "", "comma-separated ports or FIRST-LAST ranges that outbound traffic reaches directly")
	skipNets := fs.String("skip-subnets", "", "comma-separated CIDRs that outbound traffic reaches directly")
	mode := fs.String("iptables-mode", string(iptables.ModeAuto), "iptables back end: auto, legacy or nft")
	ipv6 := fs.Bool("ipv6", false, "also install the redirect for IPv6 with ip6tables")
	dryRun := fs.Bool("dry-run", false, "print the iptables commands instead of running them")
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: conduit-proxy init [flags]\n\n"+
			"Installs the pod's iptables NAT redirect to conduit-proxy. Every flag can also be set\n"+
			"with an environment variable %s<FLAG_IN_UPPER_SNAKE>; flags win.\n\n", envPrefix)
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
	if opts.mode, err = iptables.ParseMode(*mode); err != nil {
		return nil, fmt.Errorf("--iptables-mode: %w", err)
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
	if opts.config.SkipInboundPorts, err = iptables.ParsePortRanges(*skipIn); err != nil {
		return nil, fmt.Errorf("--skip-inbound-ports: %w", err)
	}
	if opts.config.SkipOutboundPorts, err = iptables.ParsePortRanges(*skipOut); err != nil {
		return nil, fmt.Errorf("--skip-outbound-ports: %w", err)
	}
	if opts.config.SkipSubnets, err = iptables.ParseSubnets(*skipNets); err != nil {
		return nil, fmt.Errorf("--skip-subnets: %w", err)
	}
	if err := opts.config.Validate(); err != nil {
		return nil, err
	}
	return opts, nil
}

// applyEnv sets every flag that was not given on the command line from its
// CONDUIT_PROXY_* environment variable, when that is set.
func applyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		name := envName(f.Name)
		if v := getenv(name); v != "" {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("environment variable %s=%q is not a valid --%s: %v", name, v, f.Name, setErr)
			}
		}
	})
	return err
}

// envName is the environment variable of a flag: skip-subnets → CONDUIT_PROXY_SKIP_SUBNETS.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// runInit plans the rules for each family, then prints them (dry run) or
// installs them with r.
func runInit(ctx context.Context, opts *initOptions, r iptables.Runner, stdout io.Writer) error {
	families := []iptables.Family{iptables.IPv4}
	if opts.ipv6 {
		families = append(families, iptables.IPv6)
	}
	var script strings.Builder
	type job struct {
		program string
		steps   []iptables.Step
	}
	var jobs []job
	for _, family := range families {
		steps, err := iptables.Plan(opts.config, family)
		if err != nil {
			return err
		}
		program, err := iptables.Program(ctx, r, opts.mode, family)
		if err != nil {
			if !opts.dryRun {
				return err
			}
			// A dry run needs no iptables: print for the usual program name.
			program = family.DefaultProgram(opts.mode)
		}
		jobs = append(jobs, job{program, steps})
		script.WriteString(iptables.Render(program, jobs[len(jobs)-1].steps))
	}
	if opts.dryRun {
		_, err := io.WriteString(stdout, "# conduit-proxy init --dry-run: nothing was changed; these commands would be run\n"+script.String())
		return err
	}
	for _, j := range jobs {
		if err := iptables.Install(ctx, r, j.program, j.steps); err != nil {
			if errors.Is(err, iptables.ErrPermission) {
				return fmt.Errorf("%w: run conduit-proxy init as root or with the NET_ADMIN and NET_RAW capabilities "+
					"(in Kubernetes: securityContext.capabilities.add: [NET_ADMIN, NET_RAW])", err)
			}
			return err
		}
	}
	programs := make([]string, len(jobs))
	for i, j := range jobs {
		programs[i] = j.program
	}
	_, err := fmt.Fprintf(stdout, "conduit-proxy init: redirect installed with %s (inbound TCP → %d, outbound TCP → %d, proxy uid %s exempt)\n",
		strings.Join(programs, " and "), opts.config.InboundPort, opts.config.OutboundPort, strconv.FormatUint(uint64(opts.config.ProxyUID), 10))
	return err
}
