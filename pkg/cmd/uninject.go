package cmd

import "github.com/urfave/cli/v2"

// uninjectCommand is a placeholder until its issue lands; it fails loudly.
func uninjectCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "uninject",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("uninject") },
	}
}
