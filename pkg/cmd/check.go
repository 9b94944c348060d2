package cmd

import "github.com/urfave/cli/v2"

// checkCommand is a placeholder until its issue lands; it fails loudly.
func checkCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "check",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("check") },
	}
}
