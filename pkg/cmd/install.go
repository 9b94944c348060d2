package cmd

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/term"

	"github.com/conduitmesh/conduit/pkg/install"
	"github.com/conduitmesh/conduit/pkg/tui"
	"github.com/conduitmesh/conduit/pkg/version"
)

type installOptions struct {
	values   install.ValueOptions
	identity install.IdentityFiles
	output   string
	wait     *install.WaitOptions // nil: do not wait
	crds     bool
}

func installCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:  "install",
		Usage: "install the Conduit control plane into the current cluster",
		Description: `Renders the control plane chart (the same objects as ` + "`helm template`" + ` of
manifests/) and applies it with server-side apply, creating a trust anchor and
issuer unless you give your own, then waits until the controller is ready.
First it creates the Gateway API CRDs (standard channel, ` + install.GatewayAPIVersion + `) that
are absent; existing ones, another mesh's or newer, are left as they are.
-o yaml|json only prints the chart's objects and touches nothing; with --crds it
prints the Gateway API's standard install instead, the objects install creates where
absent (for GitOps: apply them before the chart's objects where the cluster has none).

   ` + g.ProgName + ` install
   ` + g.ProgName + ` install --ha --set webhook.timeoutSeconds=5
   ` + g.ProgName + ` install -L mesh            # into namespace mesh instead of conduit
   ` + g.ProgName + ` install -o yaml | kubectl apply --dry-run=server -f -
   ` + g.ProgName + ` install --crds -o yaml > gateway-api-crds.yaml`,
		Flags: append(append(valueFlags(), identityFlags("to use instead of generating them")...),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "only print the objects as yaml or json, touching nothing"},
			&cli.BoolFlag{Name: "crds", Usage: "with -o: print the Gateway API CRDs (" + install.GatewayAPIVersion + ", standard channel) instead of the chart's objects"},
			&cli.BoolFlag{Name: "wait", Value: true, Usage: "wait until the control plane is ready and its proxy injector answers (--wait=false to return after applying)"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "how long --wait waits"},
			waitInjectorFlag(),
		),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("install takes no arguments, got %q", c.Args().First())
			}
			ns, given, err := g.lifecycleNamespace()
			if err != nil {
				return err
			}
			if !given {
				ns = "" // the values' namespace, by default conduit
			}
			o := installOptions{
				values:   valueOptions(c, ns),
				identity: identityFiles(c),
				output:   c.String("output"),
				crds:     c.Bool("crds"),
				wait:     waitOptions(c),
			}
			return runInstall(c.Context, g, o)
		},
	}
}

// valueFlags are the chart value flags shared by install and upgrade.
func valueFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringSliceFlag{Name: "values", Aliases: []string{"f"}, Usage: "values YAML file, as with helm (repeatable)"},
		&cli.StringSliceFlag{Name: "set", Usage: "set chart values, as with helm: key1=val1,key2.sub=val2 (repeatable)"},
		&cli.StringSliceFlag{Name: "set-string", Usage: "set chart values as strings (repeatable)"},
		&cli.BoolFlag{Name: "ha", Usage: "high availability: 3 controller replicas, anti-affinity, a PodDisruptionBudget (manifests/values-ha.yaml)"},
		&cli.IntFlag{Name: "controller-replicas", Usage: "controller replicas (overrides --ha)"},
		&cli.StringFlag{Name: "identity-trust-domain", Usage: "trust domain of mesh identities (default cluster.local)"},
		&cli.StringFlag{Name: "controller-image", Usage: "controller image repository"},
		&cli.StringFlag{Name: "proxy-image", Usage: "proxy image repository the injector uses"},
		&cli.StringFlag{Name: "image-version", Usage: "tag of the controller and proxy images (default: the CLI's version)"},
	}
}

// valueOptions are the value flags, for the control plane in namespace ns
// ("" keeps the values' namespace).
func valueOptions(c *cli.Context, ns string) install.ValueOptions {
	return install.ValueOptions{
		HA:              c.Bool("ha"),
		ValuesFiles:     c.StringSlice("values"),
		Set:             c.StringSlice("set"),
		SetString:       c.StringSlice("set-string"),
		Namespace:       ns,
		TrustDomain:     c.String("identity-trust-domain"),
		Replicas:        c.Int("controller-replicas"),
		ControllerImage: c.String("controller-image"),
		ProxyImage:      c.String("proxy-image"),
		ImageVersion:    c.String("image-version"),
	}
}

func runInstall(ctx context.Context, g *Globals, o installOptions) error {
	if o.output != "" {
		if err := checkOutputFormat(o.output, "yaml", "json"); err != nil {
			return err
		}
	}
	if o.crds {
		if o.output == "" {
			return fmt.Errorf("--crds only prints the Gateway API CRDs: add -o yaml or -o json (a plain install creates the absent ones itself)")
		}
		crds, err := install.GatewayAPIObjects()
		if err != nil {
			return err
		}
		if o.output == "json" {
			return install.WriteJSON(g.Streams.Out, crds)
		}
		return install.WriteYAML(g.Streams.Out, crds)
	}
	objs, _, err := install.RenderInstall(install.InstallOptions{
		Values: o.values, Identity: o.identity, Version: version.Version, Now: time.Now(),
	})
	if err != nil {
		return err
	}
	switch o.output {
	case "yaml":
		return install.WriteYAML(g.Streams.Out, objs)
	case "json":
		return install.WriteJSON(g.Streams.Out, objs)
	}
	client, err := lifecycleClient(g)
	if err != nil {
		return err
	}
	ns := install.Namespace(objs)
	exists, err := client.NamespaceExists(ctx, ns)
	if err != nil {
		return err
	}
	if exists {
		// (When Conduit is already there, the install step refuses instead.)
		if _, installed, err := client.InstalledVersion(ctx, ns); err == nil && !installed {
			fmt.Fprintf(g.Streams.ErrOut, "Namespace %s already exists: Conduit installs into it without changing it, and `%s uninstall` will keep it and everything that is not Conduit's.\n", ns, g.ProgName)
		}
	}
	err = runSteps(ctx, g, fmt.Sprintf("Installing Conduit %s into namespace %s", version.Version, ns), func(ctx context.Context, report install.Reporter) error {
		return client.Install(ctx, objs, o.wait, report)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(g.Streams.Out, "Conduit %s is installed in namespace %s. Run `%s check` to verify it.\n", version.Version, ns, g.ProgName)
	return nil
}

// waitInjectorFlag lets install and upgrade --wait skip the injector probe.
func waitInjectorFlag() cli.Flag {
	return &cli.BoolFlag{Name: "wait-injector", Value: true, Usage: "with --wait, also wait until the proxy injector adds its proxy to a pod the API server admits in a dry run, so that workloads applied next are meshed (false: wait for the Deployments only)"}
}

// waitOptions are the --wait, --timeout and --wait-injector flags; nil
// without --wait.
func waitOptions(c *cli.Context) *install.WaitOptions {
	if !c.Bool("wait") {
		return nil
	}
	return &install.WaitOptions{Timeout: c.Duration("timeout"), SkipInjector: !c.Bool("wait-injector")}
}

func lifecycleClient(g *Globals) (*install.Client, error) {
	cfg, err := g.Kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("reading kubeconfig: %w", err)
	}
	return install.NewClient(cfg)
}

// interactive reports whether w is a terminal and we are not in CI: only
// then do commands show a live view or ask questions.
func interactive(w any) bool {
	f, ok := w.(*os.File)
	return ok && os.Getenv("CI") == "" && term.IsTerminal(int(f.Fd()))
}

// runSteps runs work reporting its steps on ErrOut: a live step list on a
// terminal, plain lines otherwise.
func runSteps(ctx context.Context, g *Globals, title string, work func(context.Context, install.Reporter) error) error {
	if !interactive(g.Streams.ErrOut) {
		fmt.Fprintln(g.Streams.ErrOut, title)
		return work(ctx, install.PlainReporter(g.Streams.ErrOut))
	}
	return tui.RunProgress(ctx, g.Streams.ErrOut, title, func(ctx context.Context, send func(tui.ProgressMsg)) error {
		return work(ctx, func(e install.Event) {
			send(tui.ProgressMsg{Step: e.Step, State: tui.StepState(e.State), Detail: e.Detail})
		})
	})
}

// confirm asks question on out and reads y/yes from in.
func confirm(in io.Reader, out io.Writer, question string) bool {
	fmt.Fprintf(out, "%s [y/N] ", question)
	line, _ := bufio.NewReader(in).ReadString('\n')
	answer := strings.ToLower(strings.TrimSpace(line))
	return answer == "y" || answer == "yes"
}

// identityFlags name the user's own trust anchors and issuer (install) or
// their replacements (upgrade, e.g. to rotate an expiring issuer).
func identityFlags(purpose string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "identity-trust-anchors-file", Usage: "PEM trust anchors " + purpose},
		&cli.StringFlag{Name: "identity-issuer-certificate-file", Usage: "PEM issuer certificate signed by the trust anchors, " + purpose},
		&cli.StringFlag{Name: "identity-issuer-key-file", Usage: "PEM ECDSA P-256 private key of the issuer, " + purpose},
	}
}

func identityFiles(c *cli.Context) install.IdentityFiles {
	return install.IdentityFiles{
		TrustAnchors: c.String("identity-trust-anchors-file"),
		IssuerCert:   c.String("identity-issuer-certificate-file"),
		IssuerKey:    c.String("identity-issuer-key-file"),
	}
}
