package cmd

import "github.com/urfave/cli/v2"

// uninstallCommand is a placeholder until its issue lands; it fails loudly.
func uninstallCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "uninstall",
		Usage:  "(not built yet)",
		Action: func(*cli.Context) error { return notBuilt("uninstall") },
	}
}
