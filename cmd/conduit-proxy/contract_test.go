package main

import (
	"encoding/json"
	"flag"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/inject"
)

// injectedPod is a pod as the proxy injector writes it.
func injectedPod(t *testing.T) corev1.Pod {
	t.Helper()
	anchors, err := os.ReadFile(filepath.Join("..", "..", "pkg", "inject", "testdata", "trust-anchors.pem"))
	if err != nil {
		t.Fatal(err)
	}
	cfg := inject.DefaultProxyConfig("v1.2.3")
	cfg.TrustAnchorsPEM = string(anchors)
	cfg.OpaquePorts = "3306"
	in := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"web","annotations":{"conduit.io/inject":"enabled"}},"spec":{"containers":[{"name":"web","image":"nginx"}]}}`
	out, reason, err := inject.InjectPod([]byte(in), inject.Namespace{Name: "shop"}, cfg, nil)
	if err != nil || out == nil {
		t.Fatalf("inject: %v %s", err, reason)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(out, &pod); err != nil {
		t.Fatal(err)
	}
	return pod
}

func container(t *testing.T, pod corev1.Pod, name string) corev1.Container {
	t.Helper()
	for _, c := range append(pod.Spec.InitContainers, pod.Spec.Containers...) {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no container %s", name)
	return corev1.Container{}
}

// TestInjectorWritesWhatTheProxyReads: every variable the injector gives
// the proxy is the environment variable of a flag of `conduit-proxy run`,
// and `run` accepts them all; every argument it gives the init container is
// a flag `conduit-proxy init` accepts.
func TestInjectorWritesWhatTheProxyReads(t *testing.T) {
	pod := injectedPod(t)
	proxy := container(t, pod, contract.ProxyContainerName)
	if len(proxy.Args) != 1 || proxy.Args[0] != "run" {
		t.Fatalf("proxy args %q, want [run]", proxy.Args)
	}
	fs, _ := newRunFlags(io.Discard)
	flags := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) { flags[contract.Env(f.Name)] = f.Name })
	env := map[string]string{}
	downward := map[string]string{contract.EnvPodNamespace: "shop", contract.EnvPodServiceAccount: "default"}
	for _, e := range proxy.Env {
		if _, ok := downward[e.Name]; ok {
			if e.ValueFrom == nil || e.ValueFrom.FieldRef == nil {
				t.Errorf("%s is not from the downward API", e.Name)
			}
			continue
		}
		if _, ok := flags[e.Name]; !ok {
			t.Errorf("the injector sets %s, which is no flag of conduit-proxy run", e.Name)
		}
		v := e.Value
		for name, val := range downward { // what the kubelet does with $(NAME)
			v = strings.ReplaceAll(v, "$("+name+")", val)
		}
		env[e.Name] = v
	}
	if _, err := parseRunOptions(nil, func(k string) string { return env[k] }, io.Discard); err != nil {
		t.Errorf("conduit-proxy run rejects the injected environment: %v", err)
	}
	if env[contract.Env(contract.FlagIdentityName)] != "spiffe://cluster.local/ns/shop/sa/default" {
		t.Errorf("identity name %q after the kubelet's expansion", env[contract.Env(contract.FlagIdentityName)])
	}

	initc := container(t, pod, contract.InitContainerName)
	if len(initc.Args) < 2 || initc.Args[0] != "init" {
		t.Fatalf("init args %q, want init and flags", initc.Args)
	}
	if _, err := parseInitFlags(initc.Args[1:], func(string) string { return "" }, io.Discard); err != nil {
		t.Errorf("conduit-proxy init rejects the injected arguments %q: %v", initc.Args[1:], err)
	}
}

// TestEnvNamesSpelledOnce: no Go file outside pkg/contract spells the
// environment variable of a proxy flag (or the downward-API variables): they
// are contract.Env(flag), so the injector and the proxy cannot drift.
func TestEnvNamesSpelledOnce(t *testing.T) {
	names := []string{contract.EnvPodNamespace, contract.EnvPodServiceAccount}
	fs, _ := newRunFlags(io.Discard)
	fs.VisitAll(func(f *flag.Flag) { names = append(names, contract.Env(f.Name)) })
	if _, err := parseInitFlags([]string{"-h"}, nil, io.Discard); err != flag.ErrHelp {
		t.Fatalf("init -h: %v", err)
	}
	for _, f := range []string{"inbound-port", "outbound-port", "proxy-uid", "skip-inbound-ports", "skip-outbound-ports", "skip-subnets", "redirect-mode"} {
		names = append(names, contract.Env(f))
	}
	re := regexp.MustCompile(`\b(` + strings.Join(names, "|") + `)\b`)
	root := filepath.Join("..", "..")
	var found []string
	err := filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			switch d.Name() {
			case ".git", "testdata", "node_modules":
				return filepath.SkipDir
			}
			if rel, _ := filepath.Rel(root, p); rel == filepath.Join("pkg", "contract") {
				return filepath.SkipDir
			}
			return nil
		}
		if !strings.HasSuffix(p, ".go") || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		for _, m := range re.FindAllString(string(b), -1) {
			found = append(found, p+": "+m)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(found) > 0 {
		t.Errorf("proxy environment variables spelled outside pkg/contract (use contract.Env):\n%s", strings.Join(found, "\n"))
	}
	// The check can fail: it finds the spelling in pkg/contract itself.
	def, err := os.ReadFile(filepath.Join(root, "pkg", "contract", "contract.go"))
	if err != nil || !re.Match(def) {
		t.Errorf("the pattern does not find %s in pkg/contract (%v)", contract.EnvPodNamespace, err)
	}
}
