// Command conduit-proxy is Conduit's sidecar proxy.
//
//	conduit-proxy [run] [flags]   run the proxy (the default)
//	conduit-proxy init [flags]    install the pod's NAT redirect, nftables or iptables (init container)
//
// It must stay lean: never import client-go, apimachinery, charmbracelet,
// Helm, grpc-go, client_golang or google/nftables (deps_test.go enforces it).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/proxy/redirect"
	"github.com/conduitmesh/conduit/pkg/proxy/sidecar"
	"github.com/conduitmesh/conduit/pkg/version"
)

func main() {
	args := os.Args[1:]
	sub := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "init") {
		sub, args = args[0], args[1:]
	}
	switch {
	case len(args) > 0 && (args[0] == "version" || args[0] == "--version"):
		fmt.Println("conduit-proxy " + version.Version)
		os.Exit(0)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The first signal starts the drain; a second one exits at once.
	go func() {
		<-ctx.Done()
		again := make(chan os.Signal, 1)
		signal.Notify(again, os.Interrupt, syscall.SIGTERM)
		<-again
		fmt.Fprintln(os.Stderr, "conduit-proxy: second signal, exiting without finishing the drain")
		os.Exit(1)
	}()
	var code int
	if sub == "init" {
		code = initMain(ctx, args, os.Stdout, os.Stderr)
	} else {
		code = runMain(ctx, args, os.Stdout, os.Stderr)
	}
	stop()
	os.Exit(code)
}

// exitCode runs a subcommand whose flags parsed with parseErr: 0 for --help
// or success, 2 for bad flags, 1 when run fails; errors go to stderr.
func exitCode(name string, stderr io.Writer, parseErr error, run func() error) int {
	err, code := parseErr, 2
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err == nil {
		err, code = run(), 1
	}
	if err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return code
	}
	return 0
}

// runMain is `conduit-proxy run`.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseRunOptions(args, os.Getenv, stderr)
	return exitCode("conduit-proxy run", stderr, err, func() error { return sidecar.Run(ctx, *opts) })
}

func newRunFlags(stderr io.Writer) (*flag.FlagSet, *sidecar.Config) {
	o := &sidecar.Config{LogOutput: stderr}
	fs := flag.NewFlagSet("conduit-proxy run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o.AddFlags(fs)
	return fs, o
}

// parseRunOptions reads flags, then the environment for every flag not given
// on the command line (contract.ApplyEnv, as init does).
func parseRunOptions(args []string, getenv func(string) string, stderr io.Writer) (*sidecar.Config, error) {
	fs, o := newRunFlags(stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: conduit-proxy run takes only flags", fs.Arg(0))
	}
	if err := contract.ApplyEnv(fs, getenv); err != nil {
		return nil, err
	}
	return o, o.Validate()
}

// initMain installs the pod's redirect; it is the init container's entry
// point.
func initMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseInitFlags(args, os.Getenv, stderr)
	return exitCode("conduit-proxy init", stderr, err, func() error {
		return opts.Run(ctx, redirect.Backends{NFT: redirect.InstallNFT, Runner: redirect.ExecRunner{}}, stdout)
	})
}

func parseInitFlags(args []string, getenv func(string) string, stderr io.Writer) (*redirect.Init, error) {
	fs := flag.NewFlagSet("conduit-proxy init", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var f redirect.InitFlags
	f.AddFlags(fs)
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
	if err := contract.ApplyEnv(fs, getenv); err != nil {
		return nil, err
	}
	return f.Init()
}
