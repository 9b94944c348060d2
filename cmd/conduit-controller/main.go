// Command conduit-controller is Conduit's control plane: Destination and
// Identity over gRPC, the proxy-injector webhook, and an admin port with
// /metrics, /ready and /live. It keeps no state of its own, so several
// replicas can run side by side.
//
//	conduit-controller --discovery kubernetes --identity-issuer-dir /var/run/conduit/identity
//	conduit-controller --discovery local --registry-file reg.yaml \
//	    --identity-issuer-dir pki --local-tokens-file tokens.yaml --grpc-addr 127.0.0.1:0
//
// Once listening it prints the bound addresses to stdout, one per line:
// grpc-addr=HOST:PORT, admin-addr=HOST:PORT, and when served webhook-addr=HOST:PORT
// and controller-identity=SPIFFE-ID (the identity its gRPC port presents to
// TLS clients; plaintext clients are served on the same port).
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

	"k8s.io/klog/v2"

	"github.com/conduitmesh/conduit/pkg/controller"
	"github.com/conduitmesh/conduit/pkg/version"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := runMain(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// runMain is the whole command: parse, run, map errors to an exit code.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "conduit-controller:", err)
		return 2
	}
	if o.version {
		fmt.Fprintln(stdout, version.Version)
		return 0
	}
	o.Log, err = o.logger(stderr)
	if err == nil {
		// client-go's own logs (leader election, reflectors) in the
		// controller's format, not klog's.
		klog.SetSlogLogger(o.Log.With("component", "client-go"))
		o.Announce = stdout
		err = controller.Run(ctx, o.Config)
	}
	if err != nil {
		fmt.Fprintln(stderr, "conduit-controller:", err)
		return 1
	}
	return 0
}
