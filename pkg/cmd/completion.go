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
		Usage:     "print a shell completion script for bash, zsh or fish, or kubectl's for the plugin",
		ArgsUsage: "bash|zsh|fish|kubectl",
		Description: `Prints a script that completes commands, flags and their values, and resource
kinds, names and namespaces read from the cluster (` + "`conduit stat deploy <TAB>`" + `). Load it:

   bash:  source <(conduit completion bash)      # in ~/.bashrc
   zsh:   source <(conduit completion zsh)       # in ~/.zshrc, after compinit
          # or: conduit completion zsh > "${fpath[1]}/_conduit"
   fish:  conduit completion fish > ~/.config/fish/completions/conduit.fish

For ` + "`kubectl conduit <TAB>`" + ` (kubectl 1.26 or later), put the kubectl_complete-conduit
script on PATH next to kubectl-conduit; kubectl's own completion then runs it:

   conduit completion kubectl > ~/bin/kubectl_complete-conduit && chmod +x ~/bin/kubectl_complete-conduit

As the kubectl plugin the bash, zsh and fish scripts complete the
kubectl-conduit executable. Completion asks the cluster for at most 3 seconds
and prints nothing when it cannot reach it.`,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("completion needs one shell: bash, zsh or fish, or kubectl (e.g. `%s completion bash`)", g.ProgName)
			}
			return writeCompletion(g.Streams.Out, c.Args().First(), executableName(g.ProgName))
		},
	}
}

// executableName is the program the shell completes: "conduit", or for the
// kubectl plugin "kubectl-conduit".
func executableName(progName string) string {
	return strings.ReplaceAll(progName, " ", "-")
}

var nonIdentChars = regexp.MustCompile(`[^A-Za-z0-9_]`)

// writeCompletion writes the script for shell. Every script asks the
// binary itself for candidates (the hidden __complete command), so they
// always match the installed version and can read the cluster.
func writeCompletion(out io.Writer, shell, exe string) error {
	data := struct{ Exe, Func, Complete, Plugin string }{exe, "_" + nonIdentChars.ReplaceAllString(exe, "_"), completeCmdName, strings.TrimPrefix(exe, "kubectl-")}
	scripts := map[string]string{"bash": bashCompletion, "zsh": zshCompletion, "fish": fishCompletion, "kubectl": kubectlCompletion}
	script, ok := scripts[shell]
	if !ok {
		return fmt.Errorf("completion for shell %q is not supported: use bash, zsh or fish, or kubectl", shell)
	}
	var b strings.Builder
	if err := template.Must(template.New(shell).Parse(script)).Execute(&b, data); err != nil {
		return fmt.Errorf("generating the %s completion: %w", shell, err)
	}
	_, err := io.WriteString(out, b.String())
	return err
}

// The scripts below send the words before the cursor and the word being
// completed to `EXE __complete`, and read back candidates (a tab may
// separate a description) and a last line `:N`, where N & 4 forbids file
// names and N & 2 forbids the space after the candidate (cobra's
// directives, which kubectl's plugin completion reads too).

const bashCompletion = `# bash completion for {{.Exe}}
# Load it with: source <({{.Exe}} completion bash)
{{.Func}}_complete() {
  local line=${COMP_LINE:0:COMP_POINT}
  local -a words
  read -ra words <<< "$line"
  [[ $line == *[[:space:]] ]] && words+=("")
  local cur=${words[${#words[@]}-1]}
  local IFS=$'
'
  local -a out
  out=($("${words[0]}" {{.Complete}} "${words[@]:1}" 2>/dev/null)) || return 0
  (( ${#out[@]} )) || return 0
  local directive=0 last=${out[${#out[@]}-1]}
  if [[ $last == :* ]]; then
    directive=${last#:}
    unset 'out[${#out[@]}-1]'
  fi
  # bash replaces only the part of the word after its last = or :
  local rlword=$cur
  while [[ $rlword == *[=:]* ]]; do rlword=${rlword#*[=:]}; done
  local strip=${cur%"$rlword"}
  COMPREPLY=()
  local c
  for c in "${out[@]}"; do
    c=${c%%$'	'*}
    COMPREPLY+=("${c#"$strip"}")
  done
  if (( directive & 2 )); then compopt -o nospace 2>/dev/null; fi
  if (( directive & 4 )); then compopt +o default 2>/dev/null; fi
  return 0
}
complete -o default -F {{.Func}}_complete {{.Exe}}
`

const zshCompletion = `#compdef {{.Exe}}
# zsh completion for {{.Exe}}
# Load it with: source <({{.Exe}} completion zsh)   (after compinit)
# or save it as _{{.Exe}} in a directory of $fpath.
{{.Func}}() {
  local -a out cands
  local directive=0 line
  out=("${(@f)$(${words[1]} {{.Complete}} "${(@)words[2,CURRENT-1]}" "${words[CURRENT]}" 2>/dev/null)}")
  if [[ ${out[-1]} == :* ]]; then
    directive=${out[-1]#:}
    out=("${(@)out[1,-2]}")
  fi
  for line in "${out[@]}"; do
    [[ -z $line ]] && continue
    local name=${line%%$'	'*} desc=
    [[ $line == *$'	'* ]] && desc=${line#*$'	'}
    name=${name//:/\:}
    cands+=("${name}${desc:+:$desc}")
  done
  if (( ${#cands} )); then
    if (( directive & 2 )); then
      _describe -t values 'values' cands -S ''
    else
      _describe -t values 'values' cands
    fi
  elif (( ! (directive & 4) )); then
    _files
  fi
}
if [[ ${funcstack[1]} == {{.Func}} ]]; then
  {{.Func}} "$@"
else
  compdef {{.Func}} {{.Exe}}
fi
`

const fishCompletion = `# fish completion for {{.Exe}}
# Save it as ~/.config/fish/completions/{{.Exe}}.fish
function {{.Func}}_prepare
    set -l args (commandline -opc)
    set -l out ($args[1] {{.Complete}} $args[2..-1] (commandline -ct) 2>/dev/null)
    set -l directive 0
    if test (count $out) -gt 0; and string match -qr '^:[0-9]+$' -- $out[-1]
        set directive (string sub -s 2 -- $out[-1])
        set -e out[-1]
    end
    set -g {{.Func}}_results $out
    # true: offer only these; false: fish completes file names too
    test (count $out) -gt 0; or test $directive -ge 4
end
complete -c {{.Exe}} -n {{.Func}}_prepare -f -a '${{.Func}}_results'
`

const kubectlCompletion = `#!/bin/sh
# kubectl_complete-{{.Plugin}}: kubectl (1.26 or later) runs this to complete
# ` + "`kubectl {{.Plugin}} …`" + `. Install it on PATH, executable, next to kubectl-{{.Plugin}}:
#   {{.Exe}} completion kubectl > "$(dirname "$(command -v kubectl-{{.Plugin}})")/kubectl_complete-{{.Plugin}}"
dir=$(dirname "$0")
if [ -x "$dir/kubectl-{{.Plugin}}" ]; then
  exec "$dir/kubectl-{{.Plugin}}" {{.Complete}} "$@"
fi
exec kubectl-{{.Plugin}} {{.Complete}} "$@"
`
