package cmd

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
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
		check string // the program that checks the syntax
		// structure the script must have, checked even when the shell is
		// not installed.
		want []string
	}{
		{"bash", "bash", []string{"_conduit_complete() {", `"${words[0]}" __complete "${words[@]:1}"`, "complete -o default -F _conduit_complete conduit\n"}},
		{"zsh", "zsh", []string{"#compdef conduit\n", "_conduit() {", "__complete", "compdef _conduit conduit\n"}},
		{"fish", "fish", []string{"function _conduit_prepare", "__complete", "complete -c conduit -n _conduit_prepare -f -a '$_conduit_results'\n"}},
		{"kubectl", "sh", []string{"#!/bin/sh\n", "# kubectl_complete-conduit:", `exec kubectl-conduit __complete "$@"`}},
	}
	for _, tt := range tests {
		t.Run(tt.shell, func(t *testing.T) {
			script := completionScript(t, "conduit", tt.shell)
			for _, w := range tt.want {
				if !strings.Contains(script, w) {
					t.Errorf("script lacks %q:\n%s", w, script)
				}
			}
			sh, err := exec.LookPath(tt.check)
			if err != nil {
				t.Skipf("%s is not installed: checked the script's structure only", tt.check)
			}
			path := filepath.Join(t.TempDir(), "completion."+tt.shell)
			if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command(sh, "-n", path).CombinedOutput(); err != nil {
				t.Errorf("%s -n rejects the script: %v\n%s", tt.check, err, out)
			}
		})
	}
}

func TestCompletionForThePlugin(t *testing.T) {
	script := completionScript(t, "/usr/local/bin/kubectl-conduit", "bash")
	if !strings.Contains(script, "complete -o default -F _kubectl_conduit_complete kubectl-conduit\n") {
		t.Errorf("the plugin's script does not complete kubectl-conduit:\n%s", script)
	}
	// The same kubectl script whichever name printed it.
	for _, argv0 := range []string{"/usr/local/bin/kubectl-conduit", "conduit"} {
		if s := completionScript(t, argv0, "kubectl"); !strings.Contains(s, "# kubectl_complete-conduit:") || !strings.Contains(s, `exec "$dir/kubectl-conduit" __complete "$@"`) {
			t.Errorf("%s completion kubectl is not kubectl_complete-conduit:\n%s", argv0, s)
		}
	}
}

// completionCluster is a fake cluster with a namespace shop holding
// deployments web and worker, a pod and a service.
func completionCluster() kubernetes.Interface {
	meta := func(ns, name string) metav1.ObjectMeta { return metav1.ObjectMeta{Namespace: ns, Name: name} }
	return fake.NewClientset(
		&corev1.Namespace{ObjectMeta: meta("", "shop")},
		&corev1.Namespace{ObjectMeta: meta("", "conduit")},
		&corev1.Namespace{ObjectMeta: meta("", "default")},
		&appsv1.Deployment{ObjectMeta: meta("shop", "web")},
		&appsv1.Deployment{ObjectMeta: meta("shop", "worker")},
		&appsv1.Deployment{ObjectMeta: meta("default", "other")},
		&corev1.Pod{ObjectMeta: meta("shop", "web-6d4b-x7k")},
		&corev1.Service{ObjectMeta: meta("shop", "web-svc")},
	)
}

// completeWith runs `conduit __complete args...` against the fake cluster.
func completeWith(t *testing.T, client kubernetes.Interface, args ...string) ([]string, string) {
	t.Helper()
	var out bytes.Buffer
	app, g := newApp(IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &bytes.Buffer{}}, "conduit")
	g.newCompletionClient = func() (kubernetes.Interface, error) { return client, nil }
	if err := app.RunContext(context.Background(), append([]string{"conduit", completeCmdName}, args...)); err != nil {
		t.Fatalf("__complete %q: %v", args, err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	var names []string
	for _, l := range lines[:len(lines)-1] {
		name, _, _ := strings.Cut(l, "\t")
		names = append(names, name)
	}
	return names, lines[len(lines)-1]
}

func TestCompleteCandidates(t *testing.T) {
	t.Setenv("KUBECONFIG", writeKubeconfig(t, t.TempDir(), "prod", "https://127.0.0.1:1", "prod"))
	client := completionCluster()
	tests := []struct {
		args      []string
		want      []string
		directive string
	}{
		{[]string{"st"}, []string{"stat"}, ":4"},
		{[]string{"stat", ""}, []string{"namespace", "deployment", "pod", "service", "authority"}, ":4"},
		{[]string{"tap", "d"}, []string{"deployment"}, ":4"},
		{[]string{"edges", ""}, []string{"namespace", "deployment", "pod", "service"}, ":4"},
		// Names from the cluster, in the -n namespace, before or after.
		{[]string{"stat", "deploy", "-n", "shop", ""}, []string{"web", "worker"}, ":4"},
		{[]string{"-n", "shop", "stat", "deploy", "w"}, []string{"web", "worker"}, ":4"},
		{[]string{"stat", "deployment", "--namespace=shop", "wo"}, []string{"worker"}, ":4"},
		{[]string{"stat", "-n", "shop", "deploy/"}, []string{"deploy/web", "deploy/worker"}, ":4"},
		{[]string{"top", "-n", "shop", "po/"}, []string{"po/web-6d4b-x7k"}, ":4"},
		{[]string{"tap", "-n", "shop", "svc", ""}, []string{"web-svc"}, ":4"},
		{[]string{"stat", "ns", ""}, []string{"conduit", "default", "shop"}, ":4"},
		{[]string{"stat", "deploy", ""}, []string{"other"}, ":4"}, // the kubeconfig's namespace: default
		{[]string{"stat", "-n", "shop", "deploy/web", "--to", "deploy/w"}, []string{"deploy/web", "deploy/worker"}, ":4"},
		{[]string{"stat", "au/"}, nil, ":4"},
		// Namespaces for -n, -L and --from-namespace.
		{[]string{"stat", "-n", "s"}, []string{"shop"}, ":4"},
		{[]string{"check", "-L", ""}, []string{"conduit", "default", "shop"}, ":4"},
		{[]string{"install", "--conduit-namespace=c"}, []string{"--conduit-namespace=conduit"}, ":4"},
		{[]string{"stat", "--from-namespace", "d"}, []string{"default"}, ":4"},
		// Contexts, clusters and users from the kubeconfig.
		{[]string{"version", "--context", ""}, []string{"prod"}, ":4"},
		{[]string{"--cluster", "p"}, []string{"prod"}, ":4"},
		// Flags, and the values of -o.
		{[]string{"version", "--sh"}, []string{"--short"}, ":4"},
		{[]string{"stat", "-o", ""}, []string{"table", "wide", "json", "yaml"}, ":4"},
		{[]string{"upgrade", "-o", ""}, []string{"json", "yaml"}, ":4"},
		{[]string{"check", "--output="}, []string{"--output=basic", "--output=short", "--output=json", "--output=yaml", "--output=junit"}, ":4"},
		// Files where files go.
		{[]string{"inject", ""}, nil, ":0"},
		{[]string{"install", "-f", ""}, nil, ":0"},
		{[]string{"version", "--kubeconfig", ""}, nil, ":0"},
		{[]string{"completion", ""}, []string{"bash", "zsh", "fish", "kubectl"}, ":4"},
		{[]string{"version", ""}, nil, ":4"},
	}
	for _, tt := range tests {
		got, directive := completeWith(t, client, tt.args...)
		if diff := cmp.Diff(tt.want, got); diff != "" || directive != tt.directive {
			t.Errorf("__complete %q: directive %s (want %s), candidates (-want +got):\n%s", tt.args, directive, tt.directive, diff)
		}
	}
}

// TestCompleteOutputFormatsAreAccepted: every -o value completion offers is
// one its command takes.
func TestCompleteOutputFormatsAreAccepted(t *testing.T) {
	t.Setenv("KUBECONFIG", "/nonexistent")
	app, _ := newApp(IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}, "conduit")
	for _, c := range app.Commands {
		if findFlag(c.Flags, "output") == nil {
			continue
		}
		formats, _ := completeWith(t, nil, c.Name, "-o", "")
		if len(formats) == 0 {
			t.Errorf("%s: -o completes nothing", c.Name)
		}
		for _, f := range formats {
			args := []string{c.Name, "-o", f, "--controller-addr", "127.0.0.1:1", "--request-timeout", "1s"}
			if slices.Contains([]string{"stat", "edges", "top", "tap"}, c.Name) {
				args = append(args, "deploy/web")
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, _, err := runObsCLI(ctx, t, args...)
			cancel()
			if err != nil && strings.Contains(err.Error(), "is not an output format") {
				t.Errorf("%s completes -o %s but rejects it: %v", c.Name, f, err)
			}
		}
	}
}

// TestCompleteIsSilentAndBounded: an API server that does not answer costs
// the shell at most the completion timeout, and prints no error.
func TestCompleteIsSilentAndBounded(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	t.Setenv("KUBECONFIG", writeKubeconfig(t, t.TempDir(), "slow", srv.URL, "slow"))
	var out, errOut bytes.Buffer
	start := time.Now()
	err := Run(context.Background(), IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, []string{"conduit", completeCmdName, "stat", "deploy", ""})
	if took := time.Since(start); took > compTimeout+2*time.Second {
		t.Errorf("completion took %s against a silent API server", took)
	}
	if err != nil || out.String() != ":4\n" || errOut.Len() != 0 {
		t.Errorf("err %v, stdout %q, stderr %q; want no candidates and nothing else", err, out.String(), errOut.String())
	}
}

// selfCLI is the test binary, which runs as conduit through
// TestCompletionHelperProcess.
func selfCLI(t *testing.T) string {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	return self
}

// TestShellsComplete sources the bash and fish scripts and asks them for
// candidates, with the test binary standing in for conduit.
func TestShellsComplete(t *testing.T) {
	self := selfCLI(t)
	t.Setenv("KUBECONFIG", writeKubeconfig(t, t.TempDir(), "prod", "https://127.0.0.1:1", "prod"))
	tests := []struct {
		line string // the command line up to the cursor
		want []string
	}{
		{"conduit ins", []string{"install"}},
		{"conduit check --out", []string{"--output"}},
		{"conduit stat ", []string{"namespace", "deployment", "pod", "service", "authority"}},
		{"conduit stat -o y", []string{"yaml"}},
		{"conduit version --context ", []string{"prod"}},
		{"conduit completion f", []string{"fish"}},
	}
	// conduit, in bash and zsh: the test binary.
	standIn := `conduit() { CONDUIT_TEST_CLI=1 "` + self + `" -test.run='^TestCompletionHelperProcess$' -- conduit "${@}"; }` + "\n"
	t.Run("bash", func(t *testing.T) {
		bash, script := shellScript(t, "bash")
		for _, tt := range tests {
			prog := standIn + script + `
COMP_LINE='` + tt.line + `'
COMP_POINT=${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"
[[ $COMP_LINE == *' ' ]] && COMP_WORDS+=("")
COMP_CWORD=$(( ${#COMP_WORDS[@]} - 1 ))
_conduit_complete
printf '%s\n' "${COMPREPLY[@]}"
`
			out := runShell(t, exec.Command(bash, "-c", prog))
			if diff := cmp.Diff(tt.want, strings.Fields(out)); diff != "" {
				t.Errorf("completing %q (-want +got):\n%s", tt.line, diff)
			}
		}
	})
	t.Run("zsh", func(t *testing.T) {
		zsh, script := shellScript(t, "zsh")
		for _, tt := range tests {
			// zsh's completion system needs a terminal: stand in for the
			// two functions the script calls, and call it as compsys would.
			words := strings.Split(tt.line, " ")
			prog := standIn + `compdef() { :; }
_describe() { printf '%s\n' "${(@P)4}"; }
_files() { print FILES; }
` + script + `
words=(` + strings.Join(quoteAll(words), " ") + `)
CURRENT=${#words}
_conduit
`
			out := runShell(t, exec.Command(zsh, "-f", "-c", prog))
			if diff := cmp.Diff(tt.want, candidateNames(out, ":")); diff != "" {
				t.Errorf("completing %q (-want +got):\n%s", tt.line, diff)
			}
		}
	})
	t.Run("fish", func(t *testing.T) {
		fish, fishScript := shellScript(t, "fish")
		script := filepath.Join(t.TempDir(), "conduit.fish")
		if err := os.WriteFile(script, []byte(fishScript), 0o644); err != nil {
			t.Fatal(err)
		}
		for _, tt := range tests {
			prog := `function conduit; env CONDUIT_TEST_CLI=1 '` + self + `' -test.run='^TestCompletionHelperProcess$' -- conduit $argv; end
source '` + script + `'
complete -C '` + tt.line + `'
`
			cmd := exec.Command(fish, "--no-config", "-c", prog)
			cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
			out := runShell(t, cmd)
			want := slices.Sorted(slices.Values(tt.want)) // fish sorts them
			if diff := cmp.Diff(want, candidateNames(out, "\t")); diff != "" {
				t.Errorf("completing %q (-want +got):\n%s", tt.line, diff)
			}
		}
	})
}

// quoteAll quotes words for a shell.
func quoteAll(words []string) []string {
	out := make([]string, len(words))
	for i, w := range words {
		out[i] = "'" + w + "'"
	}
	return out
}

// shellScript finds shell (skipping the test without it) and returns it
// with conduit's completion script for it.
func shellScript(t *testing.T, shell string) (path, script string) {
	t.Helper()
	path, err := exec.LookPath(shell)
	if err != nil {
		t.Skipf("%s is not installed", shell)
	}
	return path, completionScript(t, "conduit", shell)
}

// runShell runs a shell program and returns its output.
func runShell(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s: %v\n%s", filepath.Base(cmd.Path), err, out)
	}
	return string(out)
}

// candidateNames are the lines of out up to sep (before a description).
func candidateNames(out, sep string) []string {
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" {
			continue
		}
		name, _, _ := strings.Cut(l, sep)
		names = append(names, name)
	}
	return names
}

func TestCompletionRejectsUnknownShell(t *testing.T) {
	var out, errOut bytes.Buffer
	err := Run(context.Background(), IOStreams{Out: &out, ErrOut: &errOut}, []string{"conduit", "completion", "powershell"})
	if err == nil || err.Error() != `completion for shell "powershell" is not supported: use bash, zsh or fish, or kubectl` {
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
