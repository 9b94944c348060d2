package integration

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestCompletion completes resource kinds, names and namespaces read from
// the real API server: through `conduit __complete`, the bash script, and
// kubectl's plugin completion running kubectl_complete-conduit.
func TestCompletion(t *testing.T) {
	ctx := context.Background()
	kube := testCluster.Client
	cli := buildBinary(t, "./cmd/conduit")
	const ns = "completion-shop"
	if err := testCluster.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"web", "worker"} {
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, userDeployment(ns, name), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-svc", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := kube.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	complete := func(t *testing.T, kubeconfig string, args ...string) []string {
		t.Helper()
		res := runBinary(t, cli, kubeconfig, append([]string{"__complete"}, args...)...)
		if res.Code != 0 || res.Stderr != "" {
			t.Fatalf("__complete %q: exit %d, stderr %q", args, res.Code, res.Stderr)
		}
		return candidates(res.Stdout)
	}

	t.Run("kinds, names and namespaces", func(t *testing.T) {
		for _, tc := range []struct {
			args []string
			want []string
		}{
			{[]string{"stat", ""}, []string{"namespace", "deployment", "pod", "service", "authority"}},
			{[]string{"stat", "-n", ns, "deploy", ""}, []string{"web", "worker"}},
			{[]string{"-n", ns, "tap", "deployment", "wo"}, []string{"worker"}},
			{[]string{"stat", "--namespace=" + ns, "deploy/"}, []string{"deploy/web", "deploy/worker"}},
			{[]string{"top", "-n", ns, "svc", ""}, []string{"web-svc"}},
			{[]string{"stat", "ns", "completion-"}, []string{ns}},
			{[]string{"stat", "-n", "completion-s"}, []string{ns}},
			{[]string{"check", "-L", "completion-"}, []string{ns}},
			{[]string{"edges", "-n", ns, "deploy", ""}, nil}, // edges takes a kind only
		} {
			if got := complete(t, "", tc.args...); !slices.Equal(got, tc.want) {
				t.Errorf("__complete %q = %q, want %q", tc.args, got, tc.want)
			}
		}
		if got := complete(t, "", "check", "-L", ""); !slices.Contains(got, "kube-system") || !slices.Contains(got, ns) {
			t.Errorf("-L completes %q, want every namespace", got)
		}
	})

	t.Run("pods once the controllers made them", func(t *testing.T) {
		var pods []string
		deadline := time.Now().Add(90 * time.Second)
		for len(pods) < 2 && time.Now().Before(deadline) {
			l, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			pods = pods[:0]
			for _, p := range l.Items {
				pods = append(pods, p.Name)
			}
			time.Sleep(500 * time.Millisecond)
		}
		if len(pods) < 2 {
			t.Fatalf("the deployments have pods %q after 90s", pods)
		}
		slices.Sort(pods)
		got := complete(t, "", "stat", "-n", ns, "po", "")
		slices.Sort(got)
		if !slices.Equal(got, pods) {
			t.Errorf("pod names %q, want %q", got, pods)
		}
	})

	t.Run("silent without permission", func(t *testing.T) {
		kc, err := testCluster.UserKubeconfig("completion-nobody")
		if err != nil {
			t.Fatal(err)
		}
		if got := complete(t, kc, "stat", "-n", ns, "deploy", ""); len(got) != 0 {
			t.Errorf("a user who may not list deployments got %q", got)
		}
	})

	t.Run("bash", func(t *testing.T) {
		bash, err := exec.LookPath("bash")
		if err != nil {
			t.Skip("bash is not installed")
		}
		script := runBinary(t, cli, "", "completion", "bash").Stdout
		prog := script + `
COMP_LINE='conduit stat -n ` + ns + ` deploy '
COMP_POINT=${#COMP_LINE}
COMP_WORDS=(conduit stat -n ` + ns + ` deploy '')
COMP_CWORD=5
_conduit_complete
printf '%s\n' "${COMPREPLY[@]}"
`
		out := runWithCLIOnPath(t, filepath.Dir(cli), bash, "-c", prog)
		if got := strings.Fields(out); !slices.Equal(got, []string{"web", "worker"}) {
			t.Errorf("bash completed %q", got)
		}
	})

	t.Run("kubectl conduit", func(t *testing.T) {
		kubectl, dir := kubectlPlugin(t, cli)
		script := runBinary(t, cli, "", "completion", "kubectl").Stdout
		if err := os.WriteFile(filepath.Join(dir, "kubectl_complete-conduit"), []byte(script), 0o755); err != nil {
			t.Fatal(err)
		}
		// What kubectl's shell completion asks kubectl itself.
		out := runWithCLIOnPath(t, dir, kubectl, "__complete", "conduit", "stat", "-n", ns, "deploy", "")
		if got := candidates(out); !slices.Equal(got, []string{"web", "worker"}) {
			t.Errorf("kubectl __complete conduit stat -n %s deploy '' = %q\n%s", ns, got, out)
		}
	})
}

// kubectlPlugin finds kubectl (skipping the test without it) and makes a
// directory holding cli as the kubectl-conduit plugin, to put first on PATH.
func kubectlPlugin(t *testing.T, cli string) (kubectl, dir string) {
	t.Helper()
	kubectl, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("kubectl is not installed")
	}
	dir = t.TempDir()
	if err := os.Symlink(cli, filepath.Join(dir, "kubectl-conduit")); err != nil {
		t.Fatal(err)
	}
	return kubectl, dir
}

// candidates are the names in a cobra-style completion answer, without
// descriptions and the final :directive line.
func candidates(out string) []string {
	var names []string
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		if l == "" || strings.HasPrefix(l, ":") {
			continue
		}
		name, _, _ := strings.Cut(l, "\t")
		names = append(names, name)
	}
	return names
}

// runWithCLIOnPath runs a program with dir first on PATH and the test
// cluster's kubeconfig, and returns its stdout.
func runWithCLIOnPath(t *testing.T, dir, prog string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, prog, args...)
	cmd.Env = append(os.Environ(), "PATH="+dir+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+testCluster.Kubeconfig)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %q: %v\n%s", filepath.Base(prog), args, err, stderr.String())
	}
	return string(out)
}
