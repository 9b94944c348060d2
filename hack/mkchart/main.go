// Command mkchart packages the control plane chart of one Conduit version as
// the release publishes it (goreleaser.yaml's before hook, `make chart`):
// the chart the CLI embeds (manifests/), stamped by install.LoadChart as
// `conduit install` renders it — appVersion v0.3.0 (the binaries' version
// and the images' tag), chart version 0.3.0 — so that
//
//	helm install conduit conduit-control-plane-0.3.0.tgz --set-file ...
//
// runs the v0.3.0 images without a controlPlaneVersion.
//
//	go run ./hack/mkchart -version v0.3.0 -out bin/chart
//
// It prints the path of the archive it wrote,
// <out>/conduit-control-plane-<chart version>.tgz.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"helm.sh/helm/v3/pkg/chartutil"

	"github.com/conduitmesh/conduit/pkg/install"
)

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "mkchart:", err)
		}
		os.Exit(1)
	}
}

func run(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("mkchart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "bin/chart", "directory the chart archive is written to")
	ver := fs.String("version", "", "the Conduit version, e.g. v0.3.0 (SemVer, with or without the v)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q: give only -version and -out", fs.Args())
	}
	if *ver == "" {
		return errors.New("no -version: give the release's version, e.g. -version v0.3.0")
	}
	ch, err := install.LoadChart(*ver)
	if err != nil {
		return err
	}
	if ch.Metadata.Version != strings.TrimPrefix(*ver, "v") {
		return fmt.Errorf("version %q is not SemVer, which a chart version must be: give one such as v0.3.0 or v0.3.1-rc.1", *ver)
	}
	if err := os.MkdirAll(*out, 0o755); err != nil {
		return err
	}
	path, err := chartutil.Save(ch, *out)
	if err != nil {
		return fmt.Errorf("writing the chart: %w", err)
	}
	fmt.Fprintln(stdout, path)
	return nil
}
