package cmd

import (
	"flag"
	"fmt"
	"os"

	"github.com/spf13/pflag"
	"github.com/urfave/cli/v2"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"

	"github.com/conduitmesh/conduit/pkg/install"
)

// The global flags are declared once, as a pflag.FlagSet: every flag of
// cli-runtime's ConfigFlags (exactly as kubectl declares them, so
// --kubeconfig, KUBECONFIG lists, --context, --token, --server, … behave as
// in kubectl), the control plane's namespace and the controller address.
// globalFlags offers each of them to urfave/cli, on the app and on every
// command, parsing straight into that one storage.

// newGlobals makes the Globals of one app with its flag set.
func newGlobals(streams IOStreams, progName string) *Globals {
	kube := genericclioptions.NewConfigFlags(true).
		WithDiscoveryBurst(300).WithDiscoveryQPS(50). // as kubectl
		WithWrapConfigFn(clientRate)
	g := &Globals{Kube: kube, ProgName: progName, Streams: streams}
	fs := pflag.NewFlagSet(progName, pflag.ContinueOnError)
	g.Kube.AddFlags(fs)
	fs.StringVarP(&g.ControlPlaneNS, "conduit-namespace", "L", install.DefaultNamespace, "namespace of the Conduit control plane")
	fs.StringVar(&g.ControllerAddr, "controller-addr", "", "reach the controller directly at HOST:PORT instead of through a port-forward (local mode)")
	g.flags = fs
	return g
}

// The CLI's API request rate (unless the config has one already). client-go's
// default (5 per second, bursts of 10) made an install wait about ten
// seconds on itself: it checks permissions and applies one request per
// object. The API server's priority and fairness protect it from a client.
const (
	clientQPS   = 50
	clientBurst = 100
)

func clientRate(cfg *rest.Config) *rest.Config {
	if cfg.QPS == 0 && cfg.Burst == 0 && cfg.RateLimiter == nil {
		cfg.QPS, cfg.Burst = clientQPS, clientBurst
	}
	return cfg
}

// flagEnv are the environment variables that set a global flag when it is
// not given. (KUBECONFIG is not one: cli-runtime's loading rules read it as
// kubectl does, a list of files to merge.)
var flagEnv = map[string][]string{"controller-addr": {"CONDUIT_CONTROLLER_ADDR"}}

// globalFlags are the global flags as urfave/cli flags: a new set for each
// command, all parsing into g.
func (g *Globals) globalFlags() []cli.Flag {
	var out []cli.Flag
	g.flags.VisitAll(func(f *pflag.Flag) {
		out = append(out, &pflagFlag{f: f, env: flagEnv[f.Name]})
	})
	return out
}

// lifecycleNamespace is the control plane's namespace for install, upgrade
// and uninstall, and whether the command line named it: -L, like every
// command. These three took it as -n before -L was the same everywhere;
// there -n still names it when -L is not given, with a note, so existing
// scripts keep working.
func (g *Globals) lifecycleNamespace() (ns string, given bool, err error) {
	if !g.flags.Changed("namespace") {
		return g.ControlPlaneNS, g.flags.Changed("conduit-namespace"), nil
	}
	n := *g.Kube.Namespace
	if g.flags.Changed("conduit-namespace") {
		if n != g.ControlPlaneNS {
			return "", false, fmt.Errorf("-n %s and -L %s name two control plane namespaces: name it with -L alone", n, g.ControlPlaneNS)
		}
		return n, true, nil
	}
	fmt.Fprintf(g.Streams.ErrOut, "Note: -n for the control plane's namespace is deprecated; use -L %s (--conduit-namespace), as every command does.\n", n)
	return n, true, nil
}

// pflagFlag offers one pflag.Flag to urfave/cli. Every command gets its own
// pflagFlag, all sharing the pflag.Flag, so a flag given before or after
// the command name lands in the same place (the later one wins).
type pflagFlag struct {
	f   *pflag.Flag
	env []string
}

var (
	_ cli.DocGenerationFlag = (*pflagFlag)(nil)
	_ cli.CategorizableFlag = (*pflagFlag)(nil)
)

// Apply registers the flag's names on set; an environment variable sets
// the value when the flag was not given on the command line.
func (p *pflagFlag) Apply(set *flag.FlagSet) error {
	if !p.f.Changed {
		for _, name := range p.env {
			if v, ok := os.LookupEnv(name); ok && v != "" {
				if err := p.f.Value.Set(v); err != nil {
					return fmt.Errorf("%s=%q: %w", name, v, err)
				}
				break
			}
		}
	}
	for _, name := range p.Names() {
		set.Var(flagValue{p.f}, name, p.f.Usage)
	}
	return nil
}

func (p *pflagFlag) Names() []string {
	if p.f.Shorthand == "" {
		return []string{p.f.Name}
	}
	return []string{p.f.Name, p.f.Shorthand}
}

func (p *pflagFlag) IsSet() bool      { return p.f.Changed }
func (p *pflagFlag) String() string   { return cli.FlagStringer(p) }
func (p *pflagFlag) TakesValue() bool { return p.f.NoOptDefVal == "" }
func (p *pflagFlag) GetUsage() string { return p.f.Usage }
func (p *pflagFlag) GetValue() string { return p.f.Value.String() }
func (p *pflagFlag) IsVisible() bool  { return !p.f.Hidden }

// GetCategory groups the global flags after each command's own in help.
func (p *pflagFlag) GetCategory() string { return "CLUSTER (also before the command name)" }

// GetDefaultText is the default worth showing: none for empty strings,
// lists and false.
func (p *pflagFlag) GetDefaultText() string {
	switch d := p.f.DefValue; d {
	case "", "[]", "false":
		return ""
	default:
		return d
	}
}

func (p *pflagFlag) GetEnvVars() []string { return p.env }

// flagValue is what the standard flag package (urfave/cli's parser) sets:
// the pflag value, marked as given.
type flagValue struct{ f *pflag.Flag }

func (v flagValue) String() string {
	if v.f == nil {
		return ""
	}
	return v.f.Value.String()
}

func (v flagValue) Set(s string) error {
	if err := v.f.Value.Set(s); err != nil {
		return err
	}
	v.f.Changed = true
	return nil
}

// IsBoolFlag lets boolean flags stand without a value, as in pflag.
func (v flagValue) IsBoolFlag() bool { return v.f.NoOptDefVal == "true" }
