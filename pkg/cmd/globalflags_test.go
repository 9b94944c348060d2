package cmd

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
	"github.com/urfave/cli/v2"
	"k8s.io/cli-runtime/pkg/genericclioptions"
)

// fakeAPIServer answers the version command's one request (the
// conduit-config ConfigMap) with serverVersion, and records the bearer
// token it was sent (client-go sends credentials only over TLS).
func fakeAPIServer(t *testing.T, serverVersion string) (url string, tokens *[]string) {
	t.Helper()
	var seen []string
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen = append(seen, strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer "))
		if r.URL.Path != "/api/v1/namespaces/conduit/configmaps/conduit-config" {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"conduit-config","namespace":"conduit"},"data":{"version":%q}}`, serverVersion)
	}))
	t.Cleanup(srv.Close)
	return srv.URL, &seen
}

// writeKubeconfig writes a kubeconfig with one cluster, user and context,
// all named name, and current-context current.
func writeKubeconfig(t *testing.T, dir, name, server, current string) string {
	t.Helper()
	path := filepath.Join(dir, name+".yaml")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: %[1]s
  cluster: {server: %[2]q, insecure-skip-tls-verify: true}
users:
- name: %[1]s
  user: {token: token-%[1]s}
contexts:
- name: %[1]s
  context: {cluster: %[1]s, user: %[1]s}
current-context: %[3]q
`, name, server, current)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestKubeconfigListMerges: KUBECONFIG=a:b merges both files as kubectl
// does (the first file's current-context, every file's contexts), for
// every way of giving the connection flags.
func TestKubeconfigListMerges(t *testing.T) {
	urlA, tokensA := fakeAPIServer(t, "v-a")
	urlB, tokensB := fakeAPIServer(t, "v-b")
	dir := t.TempDir()
	a := writeKubeconfig(t, dir, "a", urlA, "a")
	b := writeKubeconfig(t, dir, "b", urlB, "b")
	t.Setenv("KUBECONFIG", a+string(filepath.ListSeparator)+b)

	for _, tc := range []struct {
		args      []string
		want      string
		tokens    *[]string // of the server that must be asked
		wantToken string
	}{
		{[]string{"version"}, "Server version: v-a\n", tokensA, "token-a"}, // a's current-context
		{[]string{"version", "--context", "b"}, "Server version: v-b\n", tokensB, "token-b"},
		{[]string{"--context", "b", "version"}, "Server version: v-b\n", tokensB, "token-b"},
		// The cluster of one file with the user of the other.
		{[]string{"version", "--context", "a", "--cluster", "b"}, "Server version: v-b\n", tokensB, "token-a"},
		{[]string{"version", "--context", "a", "--user", "b"}, "Server version: v-a\n", tokensA, "token-b"},
	} {
		*tokensA, *tokensB = nil, nil
		out, errOut, err := runCLI(t, tc.args...)
		if err != nil {
			t.Errorf("%v: %v\n%s", tc.args, err, errOut)
			continue
		}
		if !strings.HasSuffix(out, tc.want) {
			t.Errorf("%v: got %q, want it to end with %q", tc.args, out, tc.want)
		}
		if len(*tc.tokens) != 1 || (*tc.tokens)[0] != tc.wantToken {
			t.Errorf("%v: the API server got tokens %q, want %s", tc.args, *tc.tokens, tc.wantToken)
		}
	}

	// kubectl's merge: the first file to set a name wins.
	t.Setenv("KUBECONFIG", b+string(filepath.ListSeparator)+a)
	out, _, err := runCLI(t, "version")
	if err != nil || !strings.HasSuffix(out, "Server version: v-b\n") {
		t.Errorf("KUBECONFIG=b:a: got %q, %v; want b's current-context", out, err)
	}
}

// TestConnectionFlagsWithoutKubeconfig: --server and --token (and the other
// cli-runtime flags) reach a cluster with no kubeconfig at all.
func TestConnectionFlagsWithoutKubeconfig(t *testing.T) {
	url, tokens := fakeAPIServer(t, "v-flags")
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none.yaml"))
	out, errOut, err := runCLI(t, "version", "--server", url, "--token", "secret", "--request-timeout", "5s", "--insecure-skip-tls-verify")
	if err != nil {
		t.Fatalf("%v\n%s", err, errOut)
	}
	if !strings.HasSuffix(out, "Server version: v-flags\n") || len(*tokens) != 1 || (*tokens)[0] != "secret" {
		t.Errorf("got %q; the API server saw tokens %q", out, *tokens)
	}
}

// TestEveryConnectionFlagOnEveryCommand: each of cli-runtime's
// ConfigFlags flags (and -L, --controller-addr) is accepted by every
// command, before and after the command name, and lands in Globals.
func TestEveryConnectionFlagOnEveryCommand(t *testing.T) {
	ref := pflag.NewFlagSet("kubectl", pflag.ContinueOnError)
	genericclioptions.NewConfigFlags(true).AddFlags(ref)
	var names []string
	ref.VisitAll(func(f *pflag.Flag) { names = append(names, f.Name) })
	if len(names) < 20 {
		t.Fatalf("cli-runtime declares only %d flags: %v", len(names), names)
	}
	names = append(names, "conduit-namespace", "controller-addr")

	app, _ := newApp(IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}, "conduit")
	for _, path := range commandPaths(app.Commands, nil) {
		for _, name := range names {
			for _, before := range []bool{false, true} {
				value := "v-" + name
				arg := []string{"--" + name, value}
				if f := ref.Lookup(name); f != nil && f.NoOptDefVal == "true" {
					value, arg = "true", []string{"--" + name}
				}
				args := append(append([]string{"conduit"}, path...), arg...)
				if before {
					args = append(append([]string{"conduit"}, arg...), path...)
				}
				app, g := newApp(IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}, "conduit")
				ran := false
				replaceActions(app.Commands, func(*cli.Context) error { ran = true; return nil })
				if err := app.RunContext(context.Background(), args); err != nil || !ran {
					t.Errorf("%q: err %v, ran %v", args, err, ran)
					continue
				}
				f := g.flags.Lookup(name)
				if got := f.Value.String(); !f.Changed || (got != value && got != "["+value+"]") {
					t.Errorf("%q: %s = %q (changed %v), want %q", args, name, got, f.Changed, value)
				}
			}
		}
	}
}

// TestConnectionFlagsReachTheClientConfig: the flags configure the client
// exactly as cli-runtime does for kubectl.
func TestConnectionFlagsReachTheClientConfig(t *testing.T) {
	dir := t.TempDir()
	kc := writeKubeconfig(t, dir, "a", "https://127.0.0.1:1", "a")
	t.Setenv("KUBECONFIG", kc)
	ca := filepath.Join(dir, "ca.crt")
	if err := os.WriteFile(ca, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, g := newApp(IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}, "conduit")
	args := []string{"--server", "https://127.0.0.1:2", "--token", "t0k", "--as", "jane", "--as-group", "g1", "--as-group", "g2",
		"--as-uid", "u1", "--certificate-authority", ca, "--tls-server-name", "api.example", "--request-timeout", "7s",
		"--proxy-url", "http://127.0.0.1:3128", "--disable-compression", "-n", "shop"}
	fs := g.flags
	for i := 0; i < len(args); i++ {
		name := strings.TrimLeft(args[i], "-")
		f := fs.Lookup(name)
		if f == nil {
			f = fs.ShorthandLookup(name)
		}
		v := "true"
		if f.NoOptDefVal == "" {
			i++
			v = args[i]
		}
		if err := (flagValue{f}).Set(v); err != nil {
			t.Fatal(err)
		}
	}
	cfg, err := g.Kube.ToRESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %s %s %v %s %v %s %s %v", cfg.Host, cfg.BearerToken, cfg.Impersonate.UserName, cfg.Impersonate.Groups,
		cfg.Impersonate.UID, cfg.CAFile == ca, cfg.ServerName, cfg.Timeout, cfg.DisableCompression)
	if want := "https://127.0.0.1:2 t0k jane [g1 g2] u1 true api.example 7s true"; got != want {
		t.Errorf("rest config:\n got %s\nwant %s", got, want)
	}
	if cfg.Proxy == nil {
		t.Error("--proxy-url set no proxy")
	}
	if ns := g.Namespace(); ns != "shop" {
		t.Errorf("namespace %q", ns)
	}
}

// TestControlPlaneNamespaceFlag: -L names the control plane's namespace on
// every command; install, upgrade and uninstall still take the -n they took
// before, with a note.
func TestControlPlaneNamespaceFlag(t *testing.T) {
	t.Setenv("KUBECONFIG", "/nonexistent")
	for _, tc := range []struct {
		args     []string
		wantNS   string
		wantNote bool
		wantErr  string
	}{
		{args: []string{"install", "-o", "yaml"}, wantNS: "conduit"},
		{args: []string{"install", "-L", "mesh", "-o", "yaml"}, wantNS: "mesh"},
		{args: []string{"-L", "mesh", "install", "-o", "yaml"}, wantNS: "mesh"},
		{args: []string{"install", "--conduit-namespace", "mesh", "-o", "yaml"}, wantNS: "mesh"},
		{args: []string{"install", "-n", "mesh", "-o", "yaml"}, wantNS: "mesh", wantNote: true},
		{args: []string{"install", "-n", "mesh", "-L", "mesh", "-o", "yaml"}, wantNS: "mesh"},
		{args: []string{"install", "-n", "mesh", "-L", "other", "-o", "yaml"}, wantErr: "-n mesh and -L other name two control plane namespaces: name it with -L alone"},
	} {
		out, errOut, err := runCLI(t, tc.args...)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr || out != "" {
				t.Errorf("%v: err %v, stdout %d bytes; want %q and no output", tc.args, err, len(out), tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", tc.args, err)
			continue
		}
		if !strings.HasPrefix(out, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n") || !strings.Contains(out, "\n  name: "+tc.wantNS+"\n") {
			t.Errorf("%v: the objects are not for namespace %s:\n%.300s", tc.args, tc.wantNS, out)
		}
		if note := strings.Contains(errOut, "-n for the control plane's namespace is deprecated; use -L "+tc.wantNS); note != tc.wantNote {
			t.Errorf("%v: deprecation note %v, want %v; stderr %q", tc.args, note, tc.wantNote, errOut)
		}
	}
}

// TestControlPlaneNamespaceReachesTheCommand: -L, wherever it is given,
// is the namespace a cluster command reads the control plane from.
func TestControlPlaneNamespaceReachesTheCommand(t *testing.T) {
	url, _ := fakeAPIServer(t, "v-x") // serves namespace conduit only
	t.Setenv("KUBECONFIG", filepath.Join(t.TempDir(), "none.yaml"))
	conn := []string{"--server", url, "--insecure-skip-tls-verify"}
	for _, args := range [][]string{{"version", "-L", "mesh"}, {"-L", "mesh", "version"}, {"version", "--conduit-namespace=mesh"}} {
		out, errOut, err := runCLI(t, append(args, conn...)...)
		if err != nil || !strings.HasSuffix(out, "Server version: unavailable\n") || !strings.Contains(errOut, `Conduit is not installed in namespace "mesh"`) {
			t.Errorf("%v: err %v, stdout %q, stderr %q", args, err, out, errOut)
		}
	}
	if out, _, err := runCLI(t, append([]string{"version"}, conn...)...); err != nil || !strings.HasSuffix(out, "Server version: v-x\n") {
		t.Errorf("without -L: %q, %v", out, err)
	}
}

// commandPaths lists the path of every command and subcommand.
func commandPaths(cmds []*cli.Command, prefix []string) [][]string {
	var out [][]string
	for _, c := range cmds {
		if c.SkipFlagParsing {
			continue
		}
		p := append(append([]string{}, prefix...), c.Name)
		out = append(out, p)
		out = append(out, commandPaths(c.Subcommands, p)...)
	}
	return out
}

// replaceActions makes every command run action instead, with no
// required flags.
func replaceActions(cmds []*cli.Command, action cli.ActionFunc) {
	for _, c := range cmds {
		c.Action, c.Before = action, nil
		for _, f := range c.Flags {
			if sf, ok := f.(*cli.StringFlag); ok {
				sf.Required = false
			}
		}
		replaceActions(c.Subcommands, action)
	}
}

// TestClientRate: the CLI's clients are not held to client-go's default of 5
// requests per second (an install makes about a hundred).
func TestClientRate(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KUBECONFIG", writeKubeconfig(t, dir, "a", "https://127.0.0.1:1", "a"))
	g := newGlobals(IOStreams{Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}}, "conduit")
	cfg, err := g.Kube.ToRESTConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.QPS != clientQPS || cfg.Burst != clientBurst {
		t.Errorf("QPS %v, burst %d; want %v, %d", cfg.QPS, cfg.Burst, float32(clientQPS), clientBurst)
	}
}
