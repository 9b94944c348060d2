package cmd

import "github.com/urfave/cli/v2"

// installCommand is a placeholder until its issue lands; it fails loudly.
func installCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "install",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("install") },
	}
}
