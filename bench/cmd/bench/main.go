// Command bench compares conduit-proxy with direct connections, HAProxy and
// minimal Go proxies under fortio's fixed-rate load, and writes RESULTS.md.
// See ../../../shared/BENCHMARKS.md for the method; `bench -h` for the knobs.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
