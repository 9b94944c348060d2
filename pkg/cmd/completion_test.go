package cmd

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestCompletionHelperProcess is not a test: the completion tests run the
// test binary as the conduit CLI through it.
func TestCompletionHelperProcess(t *testing.T) {
	if os.Getenv("CONDUIT_TEST_CLI") != "1" {
		return
	}
	args := os.Args
	for i, a := range args {
		if a == "--" {
			args = args[i+1:]
			break
		}
	}
	os.Exit(Main(args))
}

func completionScript(t *testing.T, progArgv0, shell string) string {
	t.Helper()
	var out, errOut bytes.Buffer
	if err := Run(context.Background(), IOStreams{Out: &out, ErrOut: &errOut}, []string{progArgv0, "completion", shell}); err != nil {
		t.Fatalf("completion %s: %v", shell, err)
	}
	return out.String()
}

func TestCompletionScriptsAreValid(t *testing.T) {
	tests := []struct {
		shell string
		// structure the script must have, checked even when the shell is
		// not installed.
		want []string
	}{
		{"bash", []string{"_conduit_complete() {", "--generate-bash-completion", "complete -o bashdefault -o default -F _conduit_complete conduit\n"}},
		{"zsh", []string{"#compdef conduit\n", "_conduit() {", "--generate-bash-completion", "compdef _conduit conduit\n"}},
		{"fish", []string{"complete -c conduit -n '__fish_conduit_no_subcommand' -f -l kubeconfig", "-a 'check'", "__fish_seen_subcommand_from check' -f -l output -s o"}},
	}
	for _, tt := range tests {
		t.Run(tt.shell, func(t *testing.T) {
			script := completionScript(t, "conduit", tt.shell)
			for _, w := range tt.want {
				if !strings.Contains(script, w) {
					t.Errorf("script lacks %q:\n%s", w, script)
				}
			}
			sh, err := exec.LookPath(tt.shell)
			if err != nil {
				t.Skipf("%s is not installed: checked the script's structure only", tt.shell)
			}
			path := filepath.Join(t.TempDir(), "completion."+tt.shell)
			if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(sh, "-n", path).CombinedOutput(); err != nil {
				t.Errorf("%s -n rejects the script: %v\n%s", tt.shell, err, out)
			}
		})
	}
}

func TestCompletionForThePlugin(t *testing.T) {
	script := completionScript(t, "/usr/local/bin/kubectl-conduit", "bash")
	if !strings.Contains(script, "complete -o bashdefault -o default -F _kubectl_conduit_complete kubectl-conduit\n") {
		t.Errorf("the plugin's script does not complete kubectl-conduit:\n%s", script)
	}
}

// TestBashCompletionCompletes sources the bash script and asks it for
// candidates, with the test binary standing in for conduit.
func TestBashCompletionCompletes(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("bash is not installed")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	script := completionScript(t, "conduit", "bash")
	tests := []struct {
		words string // COMP_WORDS, the last one being completed
		want  string
	}{
		{"conduit ins", "install"},
		{"conduit ch", "check"},
		{"conduit check --out", "--output"},
		{"conduit ver", "version"},
	}
	for _, tt := range tests {
		t.Run(tt.words, func(t *testing.T) {
			words := strings.Fields(tt.words)
			prog := `conduit() { CONDUIT_TEST_CLI=1 "` + self + `" -test.run='^TestCompletionHelperProcess$' -- conduit "${@}"; }
` + script + `
COMP_WORDS=(` + tt.words + `)
COMP_CWORD=` + string(rune('0'+len(words)-1)) + `
_conduit_complete
printf '%s\n' "${COMPREPLY[@]}"
`
			out, err := exec.Command(bash, "-c", prog).CombinedOutput()
			if err != nil {
				t.Fatalf("bash: %v\n%s", err, out)
			}
			got := strings.TrimSpace(string(out))
			if got != tt.want {
				t.Errorf("completing %q: got %q, want %q", tt.words, got, tt.want)
			}
		})
	}
}

func TestCompletionRejectsUnknownShell(t *testing.T) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), IOStreams{Out: &out, ErrOut: &errOut}, []string{"conduit", "completion", "powershell"})
	if err == nil || err.Error() != `completion for shell "powershell" is not supported: use bash, zsh or fish` {
		t.Errorf("got %v", err)
	}
	if out.Len() != 0 {
		t.Errorf("stdout must stay empty, got %q", out.String())
	}
	err = Run(context.Background(), IOStreams{Out: &out, ErrOut: &errOut}, []string{"conduit", "completion"})
	if err == nil || !strings.Contains(err.Error(), "completion needs one shell: bash, zsh or fish") {
		t.Errorf("got %v", err)
	}
}
