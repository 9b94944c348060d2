package cmd

import "github.com/urfave/cli/v2"

// topCommand is a placeholder until its issue lands; it fails loudly.
func topCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "top",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("top") },
	}
}
