package cmd

import (
	"fmt"
	"io"
	"regexp"
	"strings"
	"text/template"

	"github.com/urfave/cli/v2"
)

func completionCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:      "completion",
		Usage:     "print a shell completion script for bash, zsh or fish",
		ArgsUsage: "bash|zsh|fish",
		Description: `Prints a script that completes commands and flags. Load it:

   bash:  source <(conduit completion bash)      # in ~/.bashrc
   zsh:   source <(conduit completion zsh)       # in ~/.zshrc, after compinit
          # or: conduit completion zsh > "${fpath[1]}/_conduit"
   fish:  conduit completion fish > ~/.config/fish/completions/conduit.fish

As the kubectl plugin the script completes the kubectl-conduit executable.`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("completion needs one shell: bash, zsh or fish (e.g. `%s completion bash`)", g.ProgName)
			}
			return writeCompletion(g.Streams.Out, c.App, c.Args().First(), executableName(g.ProgName))
		},
	}
}

// executableName is the program the shell completes: "conduit", or for the
// kubectl plugin "kubectl-conduit".
func executableName(progName string) string {
	return strings.ReplaceAll(progName, " ", "-")
}

var nonIdentChars = regexp.MustCompile(`[^A-Za-z0-9_]`)

// writeCompletion writes the script for shell. bash and zsh ask the binary
// itself for candidates (urfave/cli's --generate-bash-completion), so they
// always match the installed version; fish gets urfave/cli's static script.
func writeCompletion(out io.Writer, app *cli.App, shell, exe string) error {
	data := struct{ Exe, Func string }{exe, "_" + nonIdentChars.ReplaceAllString(exe, "_")}
	var script string
	switch shell {
	case "bash":
		script = bashCompletion
	case "zsh":
		script = zshCompletion
	case "fish":
		fishApp := *app //nolint:govet // a shallow copy to rename; the copy is only read
		fishApp.Name = exe
		s, err := fishApp.ToFishCompletion()
		if err != nil {
			return fmt.Errorf("generating the fish completion: %w", err)
		}
		_, err = io.WriteString(out, "# fish completion for "+exe+"\n# Save it as ~/.config/fish/completions/"+exe+".fish\n"+dedupeLines(s))
		return err
	default:
		return fmt.Errorf("completion for shell %q is not supported: use bash, zsh or fish", shell)
	}
	var b strings.Builder
	if err := template.Must(template.New(shell).Parse(script)).Execute(&b, data); err != nil {
		return fmt.Errorf("generating the %s completion: %w", shell, err)
	}
	_, err := io.WriteString(out, b.String())
	return err
}

const bashCompletion = `# bash completion for {{.Exe}}
# Load it with: source <({{.Exe}} completion bash)
{{.Func}}_complete() {
  local cur="${COMP_WORDS[COMP_CWORD]}"
  local -a request=("${COMP_WORDS[@]:0:COMP_CWORD}")
  if [[ "$cur" == -* ]]; then
    request+=("$cur")
  fi
  local IFS=$'\n'
  COMPREPLY=($(compgen -W "$("${request[@]}" --generate-bash-completion 2>/dev/null)" -- "$cur"))
}
complete -o bashdefault -o default -F {{.Func}}_complete {{.Exe}}
`

const zshCompletion = `#compdef {{.Exe}}
# zsh completion for {{.Exe}}
# Load it with: source <({{.Exe}} completion zsh)   (after compinit)
# or save it as _{{.Exe}} in a directory of $fpath.
{{.Func}}() {
  local cur=${words[CURRENT]}
  local -a request opts
  request=(${words[1,CURRENT-1]})
  if [[ $cur == -* ]]; then
    request+=($cur)
  fi
  opts=("${(@f)$(${request[@]} --generate-bash-completion 2>/dev/null)}")
  if [[ -n ${opts[1]} ]]; then
    compadd -- ${opts[@]}
  else
    _files
  fi
}
if [[ ${funcstack[1]} == {{.Func}} ]]; then
  {{.Func}} "$@"
else
  compdef {{.Func}} {{.Exe}}
fi
`

// dedupeLines drops repeated `complete` lines (urfave/cli lists the help
// flag twice).
func dedupeLines(s string) string {
	seen := map[string]bool{}
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "complete ") {
			if seen[l] {
				continue
			}
			seen[l] = true
		}
		out = append(out, l)
	}
	return strings.Join(out, "\n")
}
