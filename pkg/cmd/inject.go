package cmd

import "github.com/urfave/cli/v2"

// injectCommand is a placeholder until its issue lands; it fails loudly.
func injectCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "inject",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("inject") },
	}
}
