// Command hello prints pkg/version.Version; testenv's tests build it.
package main

import (
	"fmt"

	"github.com/conduitmesh/conduit/pkg/version"
)

func main() { fmt.Println(version.Version) }
