package main

import (
	"context"
	"fmt"
	"io"
)

// initMain is replaced by the interception work.
func initMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "conduit-proxy init: not built yet")
	return 1
}
