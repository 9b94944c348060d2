//go:build !linux

package redirect

import (
	"context"
	"fmt"
)

// InstallNFT needs Linux: nftables exists nowhere else.
func InstallNFT(context.Context, []Ruleset) error {
	return fmt.Errorf("%w: nftables exists only on Linux", ErrNFTablesUnavailable)
}
