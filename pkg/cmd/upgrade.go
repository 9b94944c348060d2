package cmd

import "github.com/urfave/cli/v2"

// upgradeCommand is a placeholder until its issue lands; it fails loudly.
func upgradeCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "upgrade",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("upgrade") },
	}
}
