package cmd

import "fmt"

// notBuilt is returned by commands whose implementation has not landed.
func notBuilt(name string) error {
	return fmt.Errorf("%q is not available in this build yet", name)
}
