package main

// Added to conduit-proxy by the bench (go build -overlay) for the system
// conduit-grpcgo; never part of the product. It links grpc-go and uses it
// the way the proxy would for its Destination stream: one client connection
// to a loopback gRPC server (fortio's, at $BENCH_GRPC_TARGET), one unary
// call (a health check) before the proxy starts, and a server stream (a
// health watch) kept open for the proxy's lifetime.

import (
	"context"
	"fmt"
	"os"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

func init() {
	target := os.Getenv("BENCH_GRPC_TARGET")
	if target == "" {
		fmt.Fprintln(os.Stderr, "bench grpc-go variant: BENCH_GRPC_TARGET is not set")
		os.Exit(2)
	}
	conn, err := grpc.NewClient(target, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench grpc-go variant: dialing %s: %v\n", target, err)
		os.Exit(2)
	}
	client := healthpb.NewHealthClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := client.Check(ctx, &healthpb.HealthCheckRequest{}); err != nil {
		fmt.Fprintf(os.Stderr, "bench grpc-go variant: health check of %s: %v\n", target, err)
		os.Exit(2)
	}
	stream, err := client.Watch(context.Background(), &healthpb.HealthCheckRequest{})
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench grpc-go variant: health watch of %s: %v\n", target, err)
		os.Exit(2)
	}
	go func() {
		for {
			if _, err := stream.Recv(); err != nil {
				fmt.Fprintf(os.Stderr, "bench grpc-go variant: health watch ended: %v\n", err)
				return
			}
		}
	}()
}
