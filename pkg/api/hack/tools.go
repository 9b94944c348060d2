//go:build tools

// Package hack pins the protoc plugins that gen.sh uses to regenerate pkg/api.
// It is its own module so the plugins never enter the product's dependency graph.
package hack

import (
	_ "google.golang.org/grpc/cmd/protoc-gen-go-grpc"
	_ "google.golang.org/protobuf/cmd/protoc-gen-go"
)
