// Package cmd holds the conduit CLI: one urfave/cli command per file, each of
// which parses its flags into an options struct and calls a plain run function
// that tests call with buffers.
package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spf13/pflag"
	"github.com/urfave/cli/v2"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/kubernetes"
)

// IOStreams are the streams a command reads and writes. Results go to Out;
// progress, reports and warnings go to ErrOut.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
}

// ExitError carries a specific exit status (e.g. `conduit check` failing)
// without printing anything more: the command has already reported.
type ExitError struct{ Code int }

func (e *ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Globals are the options shared by every command: kubectl's connection flags
// (from k8s.io/cli-runtime), the control plane's namespace and the
// controller address for local mode. globalflags.go declares their flags.
type Globals struct {
	Kube *genericclioptions.ConfigFlags
	// ControlPlaneNS is -L/--conduit-namespace.
	ControlPlaneNS string
	ControllerAddr string
	// ProgName is "conduit" or "kubectl conduit", for help and hints.
	ProgName string
	Streams  IOStreams
	// flags declares the fields above as flags (see globalFlags).
	flags *pflag.FlagSet
	// newCompletionClient, when set (tests), is the cluster that
	// completion lists resources from.
	newCompletionClient func() (kubernetes.Interface, error)
}

// Main runs the CLI with os streams and returns the process exit status.
func Main(args []string) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	streams := IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr}
	err := Run(ctx, streams, args)
	return ExitCode(streams.ErrOut, err)
}

// ExitCode prints err (if it is not an ExitError) and maps it to a status.
func ExitCode(errOut io.Writer, err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	fmt.Fprintf(errOut, "Error: %v\n", err)
	return 1
}

// ProgName derives how the user invoked us: as the kubectl plugin
// (kubectl-conduit) help reads "kubectl conduit".
func ProgName(argv0 string) string {
	base := strings.TrimSuffix(filepath.Base(argv0), ".exe")
	if strings.HasPrefix(base, "kubectl-") {
		return "kubectl " + strings.TrimPrefix(base, "kubectl-")
	}
	return "conduit"
}

// Run builds the app and runs it with args (args[0] is the program name).
func Run(ctx context.Context, streams IOStreams, args []string) error {
	if len(args) == 0 {
		args = []string{"conduit"}
	}
	app := NewApp(streams, ProgName(args[0]))
	return app.RunContext(ctx, interspersed(app, args))
}

// NewApp assembles the command tree.
func NewApp(streams IOStreams, progName string) *cli.App {
	app, _ := newApp(streams, progName)
	return app
}

// newApp is NewApp with the Globals its flags fill.
func newApp(streams IOStreams, progName string) (*cli.App, *Globals) {
	g := newGlobals(streams, progName)
	app := &cli.App{
		Name:                 progName,
		HelpName:             progName,
		Usage:                "the service mesh for Kubernetes that adds under a millisecond",
		Reader:               streams.In,
		Writer:               streams.Out,
		ErrWriter:            streams.ErrOut,
		EnableBashCompletion: true,
		Suggest:              true,
		Flags:                g.globalFlags(),
		Commands:             withGlobalFlags(g, commands(g)),
		ExitErrHandler:       func(*cli.Context, error) {}, // errors are printed once, by Main
		OnUsageError:         usageError,
	}
	return app, g
}

// commands lists every top-level command; each lives in its own file.
func commands(g *Globals) []*cli.Command {
	return []*cli.Command{
		installCommand(g),
		checkCommand(g),
		upgradeCommand(g),
		uninstallCommand(g),
		injectCommand(g),
		uninjectCommand(g),
		statCommand(g),
		topCommand(g),
		tapCommand(g),
		edgesCommand(g),
		authzCommand(g),
		versionCommand(g),
		demoCommand(g),
		completionCommand(g),
		completeCommand(g),
	}
}

// usageError turns a flag parse error into one line pointing at the help,
// instead of urfave's "Incorrect Usage" and the whole help on stdout.
func usageError(c *cli.Context, err error, _ bool) error {
	name := c.App.HelpName
	if c.Command != nil && c.Command.HelpName != "" {
		name = c.Command.HelpName
	}
	return fmt.Errorf("%w (see '%s --help')", err, name)
}

// withGlobalFlags adds the global flags to every command and subcommand,
// so they are accepted both before and after the command name (`conduit -n
// x stat` and `conduit stat -n x`).
func withGlobalFlags(g *Globals, cmds []*cli.Command) []*cli.Command {
	for _, c := range cmds {
		c.Flags = append(c.Flags, g.globalFlags()...)
		if c.OnUsageError == nil {
			c.OnUsageError = usageError
		}
		c.Subcommands = withGlobalFlags(g, c.Subcommands)
	}
	return cmds
}

// Namespace is the namespace from -n, else the kubeconfig's, else "default".
func (g *Globals) Namespace() string {
	if g.Kube.Namespace != nil && *g.Kube.Namespace != "" {
		return *g.Kube.Namespace
	}
	ns, _, err := g.Kube.ToRawKubeConfigLoader().Namespace()
	if err != nil || ns == "" {
		return "default"
	}
	return ns
}
