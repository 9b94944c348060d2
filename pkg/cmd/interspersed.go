package cmd

import (
	"strings"

	"github.com/urfave/cli/v2"
)

// interspersed lets flags follow positional arguments, as kubectl users
// write them (`conduit inject app.yaml --manual`, `conduit tap deploy/web -n
// demo`): urfave/cli v2 stops parsing flags at the first positional argument,
// so the command's flags (and their values) are moved in front of its
// positional arguments before parsing. Everything after "--" stays as is.
func interspersed(app *cli.App, args []string) []string {
	if len(args) < 2 {
		return args
	}
	out := []string{args[0]}
	rest := args[1:]
	// The app's own flags, then the command path (subcommands included).
	flags := app.Flags
	cmds := app.Commands
	var cmd *cli.Command
	for len(rest) > 0 {
		a := rest[0]
		if a == "--" {
			return append(out, rest...)
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			n := flagArgs(flags, rest)
			out, rest = append(out, rest[:n]...), rest[n:]
			continue
		}
		next := findCommand(cmds, a)
		if next == nil {
			break
		}
		cmd, flags, cmds = next, next.Flags, next.Subcommands
		out, rest = append(out, a), rest[1:]
	}
	if cmd == nil || cmd.SkipFlagParsing {
		return args
	}
	var opts, pos []string
	for len(rest) > 0 {
		a := rest[0]
		if a == "--" {
			pos = append(pos, rest...)
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			n := flagArgs(flags, rest)
			opts, rest = append(opts, rest[:n]...), rest[n:]
			continue
		}
		pos, rest = append(pos, a), rest[1:]
	}
	return append(append(out, opts...), pos...)
}

// flagArgs is how many of args (starting with a flag) belong to that flag:
// 2 when it takes a separate value, else 1. Unknown flags count 1 and are
// left for the parser to reject.
func flagArgs(flags []cli.Flag, args []string) int {
	name, _, hasValue := strings.Cut(strings.TrimLeft(args[0], "-"), "=")
	if hasValue || len(args) < 2 {
		return 1
	}
	for _, f := range flags {
		for _, n := range f.Names() {
			if n != name {
				continue
			}
			if dv, ok := f.(cli.DocGenerationFlag); ok && !dv.TakesValue() {
				return 1
			}
			return 2
		}
	}
	return 1
}

func findCommand(cmds []*cli.Command, name string) *cli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
