package cmd

import "github.com/urfave/cli/v2"

// demoCommand is a placeholder until its issue lands; it fails loudly.
func demoCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "demo",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("demo") },
	}
}
