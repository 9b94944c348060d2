package cmd

import "github.com/urfave/cli/v2"

// versionCommand is a placeholder until its issue lands; it fails loudly.
func versionCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "version",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("version") },
	}
}
