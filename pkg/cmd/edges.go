package cmd

import "github.com/urfave/cli/v2"

// edgesCommand is a placeholder until its issue lands; it fails loudly.
func edgesCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "edges",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("edges") },
	}
}
