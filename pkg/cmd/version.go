package cmd

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/conduitmesh/conduit/pkg/healthcheck"
	"github.com/conduitmesh/conduit/pkg/version"
)

// versionOptions are `conduit version`'s options.
type versionOptions struct {
	clientOnly bool
	short      bool
	output     string // "", "json" or "yaml"
	controlNS  string
	progName   string
}

// versionInfo is what `conduit version -o json|yaml` prints.
type versionInfo struct {
	ClientVersion string `json:"clientVersion"`
	// ServerVersion is empty when the control plane is not installed.
	ServerVersion string `json:"serverVersion,omitempty"`
	// ServerError says why there is no server version.
	ServerError string `json:"serverError,omitempty"`
}

func versionCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:  "version",
		Usage: "print the CLI's version and the installed control plane's",
		Description: `The server version is the one recorded by the install in the ConfigMap
conduit-config of the control plane namespace.

   conduit version
   conduit version --client --short
   conduit version -o json`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "client", Usage: "print the client version only, without contacting the cluster"},
			&cli.BoolFlag{Name: "short", Usage: "print the version numbers only"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output format: json or yaml (default: text)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("version takes no arguments, got %q", c.Args().Slice())
			}
			opts := versionOptions{
				clientOnly: c.Bool("client"),
				short:      c.Bool("short"),
				output:     c.String("output"),
				controlNS:  c.String("conduit-namespace"),
				progName:   g.ProgName,
			}
			if opts.output != "" {
				if err := checkOutputFormat(opts.output, "json", "yaml"); err != nil {
					return fmt.Errorf("%w, or leave it out for text", err)
				}
			}
			if ns := stringValue(g.Kube.Namespace); ns != "" {
				return fmt.Errorf("version does not take -n: name the control plane's namespace with -L: `%s version -L %s`", g.ProgName, ns)
			}
			return runVersion(c.Context, opts, g.Streams, func() (kubernetes.Interface, error) { return clientsetFor(g) })
		},
	}
}

// clientsetFor makes a Kubernetes client from the connection flags.
func clientsetFor(g *Globals) (kubernetes.Interface, error) {
	cfg, err := g.Kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("loading the Kubernetes client configuration (check --kubeconfig, --context or KUBECONFIG): %w", err)
	}
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating a Kubernetes client: %w", err)
	}
	return cs, nil
}

// runVersion prints the versions. Everything is gathered before anything is
// printed, so stdout gets the whole result or nothing.
func runVersion(ctx context.Context, opts versionOptions, streams IOStreams, client func() (kubernetes.Interface, error)) error {
	out := streams.Out
	info := versionInfo{ClientVersion: version.Version}
	if !opts.clientOnly {
		kube, err := client()
		if err != nil {
			return err
		}
		cm, err := kube.CoreV1().ConfigMaps(opts.controlNS).Get(ctx, healthcheck.ConfigMapName, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			info.ServerError = fmt.Sprintf("Conduit is not installed in namespace %q (no ConfigMap %s): install it with `%s install`, or point --conduit-namespace at the control plane",
				opts.controlNS, healthcheck.ConfigMapName, opts.progName)
		case err != nil:
			return fmt.Errorf("reading the server version from ConfigMap %s/%s: %w (use --client for the client version alone)", opts.controlNS, healthcheck.ConfigMapName, err)
		case cm.Data["version"] == "":
			info.ServerError = fmt.Sprintf("ConfigMap %s/%s records no version: reinstall or upgrade with `%s upgrade`", opts.controlNS, healthcheck.ConfigMapName, opts.progName)
		default:
			info.ServerVersion = cm.Data["version"]
		}
	}
	if structured(opts.output) {
		return writeStructured(out, opts.output, info)
	}
	server := info.ServerVersion
	if server == "" {
		server = "unavailable"
	}
	switch {
	case opts.short && opts.clientOnly:
		fmt.Fprintln(out, info.ClientVersion)
	case opts.short:
		fmt.Fprintf(out, "%s\n%s\n", info.ClientVersion, server)
	case opts.clientOnly:
		fmt.Fprintf(out, "Client version: %s\n", info.ClientVersion)
	default:
		fmt.Fprintf(out, "Client version: %s\nServer version: %s\n", info.ClientVersion, server)
	}
	if info.ServerError != "" {
		fmt.Fprintln(streams.ErrOut, info.ServerError)
	}
	return nil
}
