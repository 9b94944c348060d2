package cmd

import "github.com/urfave/cli/v2"

// completionCommand is a placeholder until its issue lands; it fails loudly.
func completionCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "completion",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("completion") },
	}
}
