package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/conduitmesh/conduit/pkg/healthcheck"
	"github.com/conduitmesh/conduit/pkg/install"
	"github.com/conduitmesh/conduit/pkg/version"
)

// checkOptions are `conduit check`'s options.
type checkOptions struct {
	pre, proxy bool
	wait       time.Duration
	output     string // basic, short, json, yaml, junit
	controlNS  string
	dataNS     string // --proxy: "" is every namespace
	progName   string
	color      bool
	// controllerAddr, when set (--controller-addr), adds the controller's
	// gRPC health check.
	controllerAddr string
	// newDynamic, when set, adds the policy checks to --proxy.
	newDynamic func() (dynamic.Interface, error)
}

func checkCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:  "check",
		Usage: "check the cluster and the Conduit install, and say how to fix what is wrong",
		Description: `Runs the health checks by category and prints each with ✔ (passed),
‼ (warning) or × (failed), with the exact command that fixes a failure. The
exit status is 0 only when no check failed; warnings do not fail.

   conduit check --pre                  # before installing: cluster and permissions
   conduit check                        # the control plane
   conduit check -L mesh                # one installed with conduit install -L mesh
   conduit check --proxy -n emojivoto   # and the meshed pods of a namespace
   conduit check --wait 5m -o junit     # in CI, waiting for pods to become ready`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "pre", Usage: "check that the cluster is ready for an install (namespace free, permission to create every object)"},
			&cli.BoolFlag{Name: "proxy", Usage: "also check the data plane proxies (in -n NAMESPACE, or in every namespace)"},
			&cli.DurationFlag{Name: "wait", Usage: "retry checks of states that settle by themselves (pods becoming ready) for up to this long, e.g. 5m"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "basic", Usage: "output format: basic, short (failures and warnings only), json, yaml or junit"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("check takes no arguments, got %q", c.Args().Slice())
			}
			opts := checkOptions{
				pre:       c.Bool("pre"),
				proxy:     c.Bool("proxy"),
				wait:      c.Duration("wait"),
				output:    c.String("output"),
				controlNS: c.String("conduit-namespace"),
				dataNS:    stringValue(g.Kube.Namespace),
				progName:  g.ProgName,
				color:     colorOutput(g.Streams.Out),

				controllerAddr: g.ControllerAddr,
				newDynamic:     func() (dynamic.Interface, error) { return dynamicFor(g) },
			}
			if err := checkOutputFormat(opts.output, "basic", "short", "json", "yaml", "junit"); err != nil {
				return err
			}
			switch {
			case opts.pre && opts.proxy:
				return errors.New("--pre and --proxy cannot be combined: --pre checks a cluster before an install, --proxy checks meshed pods after it")
			case opts.dataNS != "" && !opts.proxy:
				// -n is the data plane's namespace; without --proxy
				// check would silently ignore it.
				return fmt.Errorf("-n %s only selects the data plane namespace of --proxy; name the control plane's namespace with -L: `%s check -L %s`", opts.dataNS, opts.progName, opts.dataNS)
			case opts.wait < 0:
				return fmt.Errorf("--wait %s is negative: give a duration such as 5m", opts.wait)
			}
			return runCheck(c.Context, opts, g.Streams.Out, func() (kubernetes.Interface, error) { return clientsetFor(g) })
		},
	}
}

// runCheck runs the checks and prints them; it returns an ExitError with
// status 1 when a check failed.
func runCheck(ctx context.Context, opts checkOptions, out io.Writer, newClient func() (kubernetes.Interface, error)) error {
	var resources []healthcheck.Resource
	if opts.pre {
		var err error
		if resources, err = installResources(opts.controlNS); err != nil {
			return err
		}
	}
	var controllerHealth func(context.Context) error
	if opts.controllerAddr != "" {
		controllerHealth = func(ctx context.Context) error { return controllerServing(ctx, opts.controllerAddr) }
	}
	cats := healthcheck.Categories(healthcheck.Options{
		ControllerHealth:      controllerHealth,
		ControllerAddr:        opts.controllerAddr,
		NewClient:             newClient,
		NewDynamicClient:      opts.newDynamic,
		ControlPlaneNamespace: opts.controlNS,
		DataPlaneNamespace:    opts.dataNS,
		CLIVersion:            version.Version,
		ProgName:              opts.progName,
		Pre:                   opts.pre,
		Proxy:                 opts.proxy,
		Wait:                  opts.wait,
		InstallResources:      resources,
	})
	var rep healthcheck.Report
	switch opts.output {
	case "json", "yaml", "junit":
		rep = healthcheck.Runner{}.Run(ctx, cats, nil)
		write := healthcheck.PrintJSON
		switch opts.output {
		case "yaml":
			write = asYAML(healthcheck.PrintJSON)
		case "junit":
			write = healthcheck.PrintJUnit
		}
		if err := write(out, rep); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
	default:
		p := &healthcheck.BasicPrinter{W: out, Color: opts.color, Short: opts.output == "short"}
		rep = healthcheck.Runner{}.Run(ctx, cats, p)
		p.Summary(rep)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("check interrupted: %w", err)
	}
	if !rep.Success {
		return &ExitError{Code: 1}
	}
	return nil
}

// installResources are the kinds of object an install into ns creates,
// from the embedded chart, for the --pre permission checks.
func installResources(ns string) ([]healthcheck.Resource, error) {
	objs, _, err := install.RenderInstall(install.InstallOptions{
		Values:  install.ValueOptions{Namespace: ns},
		Version: version.Version,
		Now:     time.Now(),
	})
	if err != nil {
		return nil, fmt.Errorf("rendering the control plane to list what it creates: %w", err)
	}
	var out []healthcheck.Resource
	seen := map[schema.GroupResource]bool{}
	for _, o := range objs {
		gvk := o.GroupVersionKind()
		plural, _ := meta.UnsafeGuessKindToResource(gvk)
		gr := plural.GroupResource()
		if seen[gr] {
			continue
		}
		seen[gr] = true
		out = append(out, healthcheck.Resource{Group: gr.Group, Resource: gr.Resource, Kind: gvk.Kind, Namespaced: o.GetNamespace() != ""})
	}
	return out, nil
}

// dynamicFor is a dynamic client of the cluster the global flags name.
func dynamicFor(g *Globals) (dynamic.Interface, error) {
	cfg, err := g.Kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the Kubernetes client configuration (check --kubeconfig, --context or KUBECONFIG): %w", err)
	}
	d, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a Kubernetes client: %w", err)
	}
	return d, nil
}

// controllerServing asks the controller's gRPC health service whether it
// serves.
func controllerServing(ctx context.Context, addr string) error {
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	res, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
	if err != nil {
		return err
	}
	if res.Status != healthpb.HealthCheckResponse_SERVING {
		return fmt.Errorf("health status %s", res.Status)
	}
	return nil
}

// colorOutput reports whether w is a terminal that wants colors (NO_COLOR
// unset, TERM not dumb).
func colorOutput(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || !term.IsTerminal(int(f.Fd())) {
		return false
	}
	return os.Getenv("NO_COLOR") == "" && os.Getenv("TERM") != "dumb"
}

func stringValue(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}
