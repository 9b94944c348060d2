package cmd

import "github.com/urfave/cli/v2"

// tapCommand is a placeholder until its issue lands; it fails loudly.
func tapCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "tap",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("tap") },
	}
}
