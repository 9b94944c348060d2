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
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	args := os.Args[1:]
	sub := "run"
	if len(args) > 0 && (args[0] == "run" || args[0] == "init") {
		sub, args = args[0], args[1:]
	}
	switch {
	case len(args) > 0 && (args[0] == "version" || args[0] == "--version"):
		fmt.Println(versionString())
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
