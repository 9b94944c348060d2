package main

import (
	"context"
	"fmt"
	"io"
)

// runMain is replaced by the data plane work.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "conduit-proxy run: not built yet")
	return 1
}
