package cmd

import "github.com/urfave/cli/v2"

// statCommand is a placeholder until its issue lands; it fails loudly.
func statCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "stat",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("stat") },
	}
}
