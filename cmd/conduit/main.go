// Command conduit is Conduit's CLI. Installed as kubectl-conduit it is also the
// kubectl plugin ("kubectl conduit …").
package main

import (
	"os"

	"github.com/conduitmesh/conduit/pkg/cmd"
)

func main() {
	os.Exit(cmd.Main(os.Args))
}
