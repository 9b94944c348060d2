package cmd

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/conduitmesh/conduit/pkg/inject"
)

const injectDeploy = `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels:
      app: web
  template:
    metadata:
      labels:
        app: web
    spec:
      containers:
      - name: web
        image: nginx:1.27
`

const injectService = `apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  ports:
  - port: 80
`

// runInjectCLI runs conduit with args and stdin and returns stdout, stderr and
// the exit status Main would return.
func runInjectCLI(t *testing.T, stdin string, args ...string) (string, string, int) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := Run(context.Background(), IOStreams{In: strings.NewReader(stdin), Out: &out, ErrOut: &errOut}, append([]string{"conduit"}, args...))
	code := ExitCode(&errOut, err)
	return out.String(), errOut.String(), code
}

func writeInjectFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestInjectCommand(t *testing.T) {
	dir := t.TempDir()
	file := writeInjectFile(t, dir, "app.yaml", injectDeploy+"---\n"+injectService)

	out, errOut, code := runInjectCLI(t, "", "inject", file)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	want, _, err := inject.Inject([]byte(injectDeploy+"---\n"+injectService), inject.Options{Proxy: inject.DefaultProxyConfig("dev")})
	if err != nil {
		t.Fatal(err)
	}
	if out != string(want) {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	wantReport := "deployment \"web\" annotated for injection\nservice \"web\" skipped: it has no pod template\n"
	if errOut != wantReport {
		t.Errorf("report:\n%q\nwant:\n%q", errOut, wantReport)
	}

	// --manual with overrides, from stdin, then uninject gives the input back.
	anchors := filepath.Join("..", "inject", "testdata", "trust-anchors.pem")
	manual, errOut, code := runInjectCLI(t, injectDeploy, "inject", "--manual", "--identity-trust-anchors-file", anchors, "--proxy-cpu-request=50m", "--opaque-ports", "3306, 5432", "--native-sidecar=false", "-")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, s := range []string{"config.conduit.io/proxy-cpu-request: 50m", `config.conduit.io/opaque-ports: "3306,5432"`, `config.conduit.io/native-sidecar: "false"`, "- name: conduit-proxy", "cpu: 50m", "- name: CONDUIT_PROXY_TRUST_ANCHORS\n", "-----BEGIN CERTIFICATE-----"} {
		if !strings.Contains(manual, s) {
			t.Errorf("--manual output lacks %q:\n%s", s, manual)
		}
	}
	if strings.Contains(manual, "restartPolicy: Always") {
		t.Error("--native-sidecar=false still used a native sidecar")
	}
	if errOut != "deployment \"web\" injected\n" {
		t.Errorf("report %q", errOut)
	}
	back, errOut, code := runInjectCLI(t, manual, "uninject", "-")
	if code != 0 || errOut != "deployment \"web\" uninjected\n" {
		t.Fatalf("uninject: exit %d: %s", code, errOut)
	}
	if back != injectDeploy {
		t.Errorf("uninject(inject --manual) differs from the input:\n%s", back)
	}
}

// TestInjectManualTrustAnchors: --manual takes the trust anchors from
// --identity-trust-anchors-file or the installed control plane's ConfigMap;
// without either it fails with one line saying what to do, and prints nothing.
func TestInjectManualTrustAnchors(t *testing.T) {
	pem, err := os.ReadFile(filepath.Join("..", "inject", "testdata", "trust-anchors.pem"))
	if err != nil {
		t.Fatal(err)
	}
	roots := func(ns string, data map[string]string) *corev1.ConfigMap {
		return &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: inject.TrustRootsConfigMap, Namespace: ns}, Data: data}
	}
	dir := t.TempDir()
	garbage := writeInjectFile(t, dir, "garbage.pem", "not a certificate")
	noCluster := errors.New("no configuration has been provided")
	tests := []struct {
		name    string
		file    string
		ns      string
		objects []runtime.Object
		cluster error
		want    string // the error, or "" for success
	}{
		{name: "configmap", ns: "conduit", objects: []runtime.Object{roots("conduit", map[string]string{inject.TrustRootsKey: string(pem)})}},
		{name: "other namespace", ns: "mesh", objects: []runtime.Object{roots("mesh", map[string]string{inject.TrustRootsKey: string(pem)})}},
		{name: "file wins", file: filepath.Join("..", "inject", "testdata", "trust-anchors.pem"), ns: "conduit", cluster: noCluster},
		{name: "not installed", ns: "conduit", objects: []runtime.Object{roots("mesh", map[string]string{inject.TrustRootsKey: string(pem)})},
			want: "--manual needs the mesh's trust anchors and Conduit is not installed in namespace \"conduit\" (no ConfigMap conduit/conduit-identity-trust-roots): install Conduit with `conduit install` (or point --conduit-namespace at its namespace), or pass --identity-trust-anchors-file"},
		{name: "no cluster", ns: "conduit", cluster: noCluster,
			want: "--manual needs the mesh's trust anchors and there is no cluster to read them from (no configuration has been provided): install Conduit"},
		{name: "empty key", ns: "conduit", objects: []runtime.Object{roots("conduit", nil)},
			want: "ConfigMap conduit/conduit-identity-trust-roots key ca-bundle.crt: no identity trust anchors configured"},
		{name: "bad file", file: garbage, ns: "conduit", want: "--identity-trust-anchors-file " + garbage + ": identity trust anchors: no PEM certificate"},
		{name: "missing file", file: filepath.Join(dir, "nope.pem"), ns: "conduit", want: "--identity-trust-anchors-file: open " + filepath.Join(dir, "nope.pem")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			opts := injectOptions{inputs: []string{"-"}, anchorsFile: tt.file, progName: "conduit"}
			opts.client = func() (kubernetes.Interface, error) {
				if tt.cluster != nil {
					return nil, tt.cluster
				}
				return fake.NewSimpleClientset(tt.objects...), nil
			}
			opts.inject.Manual = true
			opts.inject.Proxy = inject.DefaultProxyConfig("dev")
			opts.inject.Proxy.ControlPlaneNamespace = tt.ns
			var out, errOut bytes.Buffer
			err := runInject(context.Background(), opts, IOStreams{In: strings.NewReader(injectDeploy), Out: &out, ErrOut: &errOut})
			if tt.want != "" {
				if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") || out.Len() != 0 {
					t.Fatalf("err = %v, stdout %q; want one line with %q and no output", err, out.String(), tt.want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(out.String(), "CONDUIT_PROXY_TRUST_ANCHORS") || !strings.Contains(out.String(), "conduit-controller."+tt.ns+".svc") {
				t.Errorf("output lacks the trust anchors or the control plane namespace:\n%s", out.String())
			}
		})
	}

	// The CLI without a cluster: one "Error:" line, nothing on stdout.
	out, errOut, code := runInjectCLI(t, injectDeploy, "--kubeconfig", filepath.Join(dir, "missing-kubeconfig"), "inject", "--manual", "-")
	if code != 1 || out != "" || !strings.HasPrefix(errOut, "Error: --manual needs the mesh's trust anchors") || strings.Count(errOut, "\n") != 1 {
		t.Errorf("exit %d, stdout %q, stderr %q", code, out, errOut)
	}
	// Annotating needs no trust anchors; the file flag without --manual is a mistake.
	if _, errOut, code := runInjectCLI(t, injectDeploy, "--kubeconfig", filepath.Join(dir, "missing-kubeconfig"), "inject", "-"); code != 0 {
		t.Errorf("inject without --manual: exit %d: %s", code, errOut)
	}
	if _, errOut, code := runInjectCLI(t, injectDeploy, "inject", "--identity-trust-anchors-file", garbage, "-"); code != 1 || !strings.Contains(errOut, "only used with --manual") {
		t.Errorf("--identity-trust-anchors-file without --manual: exit %d: %s", code, errOut)
	}
}

func TestInjectInputs(t *testing.T) {
	dir := t.TempDir()
	writeInjectFile(t, dir, "a.yaml", injectDeploy)
	writeInjectFile(t, dir, "b.json", `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"a","image":"b"}]}}`)
	writeInjectFile(t, dir, "notes.txt", "not a manifest")
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/app.yaml" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(injectService))
	}))
	defer srv.Close()

	out, errOut, code := runInjectCLI(t, "", "inject", dir, srv.URL+"/app.yaml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	wantReport := "deployment \"web\" annotated for injection\npod \"p\" annotated for injection\nservice \"web\" skipped: it has no pod template\n"
	if errOut != wantReport {
		t.Errorf("report:\n%s", errOut)
	}
	if strings.Count(out, "---\n") != 2 || !strings.Contains(out, `"conduit.io/inject":"enabled"`) {
		t.Errorf("output:\n%s", out)
	}

	tests := []struct {
		name string
		args []string
		msg  string
	}{
		{"no input", []string{"inject"}, "no input"},
		{"missing file", []string{"inject", filepath.Join(dir, "nope.yaml")}, "nope.yaml: no such file or directory"},
		{"404", []string{"inject", srv.URL + "/missing.yaml"}, "404"},
		{"empty dir", []string{"inject", t.TempDir()}, "no .yaml, .yml or .json files"},
		{"bad flag value", []string{"inject", "--proxy-memory-limit=lots", dir}, `--proxy-memory-limit: "lots" is not a Kubernetes quantity`},
		{"flag after input is honoured", []string{"inject", dir, "--manual"}, "--manual needs the mesh's trust anchors"},
		{"uninject no input", []string{"uninject"}, "no input"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, errOut, code := runInjectCLI(t, "", tt.args...)
			if code != 1 || out != "" || !strings.Contains(errOut, tt.msg) {
				t.Errorf("exit %d, stdout %q, stderr %q; want 1, nothing, %q", code, out, errOut, tt.msg)
			}
		})
	}
}

func TestInjectMalformed(t *testing.T) {
	dir := t.TempDir()
	good := writeInjectFile(t, dir, "good.yaml", injectDeploy)
	bad := writeInjectFile(t, dir, "bad.yaml", injectDeploy+"---\n"+injectService+"---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: x\n  labels: [unclosed\n")
	badJSON := writeInjectFile(t, dir, "bad.json", "{\"kind\":\"Pod\"}\n{\"kind\": \"Pod\",\n\"spec\": }\n")
	for _, tt := range []struct{ file, msg string }{
		{bad, bad + ": document 3 (line 29): did not find expected"},
		{badJSON, badJSON + ": document 2 (line 3): invalid character '}'"},
	} {
		for _, cmd := range []string{"inject", "uninject"} {
			out, errOut, code := runInjectCLI(t, "", cmd, good, tt.file)
			if code != 1 || out != "" || !strings.HasPrefix(errOut, "Error: "+tt.msg) {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q; want 1, nothing, %q", cmd, tt.file, code, out, errOut, tt.msg)
			}
		}
	}
}

func TestInjectReportOnTerminal(t *testing.T) {
	var b bytes.Buffer
	writeReport(&b, []inject.Result{
		{Kind: "Deployment", Name: "web", Changed: true},
		{Kind: "DaemonSet", Name: "agent", Reason: "the pod uses hostNetwork, so its traffic cannot be redirected to a proxy"},
		{Name: "x", Reason: "it has no kind"},
	}, "injected", true)
	want := "✔ deployment \"web\" injected\n" +
		"‼ daemonset \"agent\" skipped: the pod uses hostNetwork, so its traffic cannot be redirected to a proxy\n" +
		"‼ object \"x\" skipped: it has no kind\n"
	if b.String() != want {
		t.Errorf("got:\n%s\nwant:\n%s", b.String(), want)
	}
}
