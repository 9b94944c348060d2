package inject

import (
	"bytes"
	"encoding/json"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
)

func unmarshalStrict(b []byte, v any) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.DisallowUnknownFields()
	return d.Decode(v)
}

// otherMeshInputs are testdata/othermesh/<name>.input.yaml: workloads that
// Linkerd or Istio meshed, or will.
func otherMeshInputs(t *testing.T) map[string][]byte {
	t.Helper()
	return inputsLike(t, "testdata/othermesh/*.input.yaml")
}

func reportText(rs []Result) string {
	var b strings.Builder
	for _, r := range rs {
		switch {
		case r.Changed && r.Replaced != "":
			fmt.Fprintf(&b, "doc %d %s %s/%s: changed, replacing %s\n", r.Doc, r.Kind, r.Namespace, r.Name, r.Replaced)
		case r.Changed:
			fmt.Fprintf(&b, "doc %d %s %s/%s: changed\n", r.Doc, r.Kind, r.Namespace, r.Name)
		default:
			fmt.Fprintf(&b, "doc %d %s %s/%s: skipped: %s\n", r.Doc, r.Kind, r.Namespace, r.Name, r.Reason)
		}
	}
	return b.String()
}

// TestOtherMeshGolden: without --force, pods of another mesh pass through
// byte for byte, each with a reason; with it, the other mesh is replaced
// and the result is a valid pod that uninjects without a trace of either.
func TestOtherMeshGolden(t *testing.T) {
	for name, in := range otherMeshInputs(t) {
		var report strings.Builder
		for _, manual := range []bool{false, true} {
			opts := testOptions(manual)
			out, res, err := Inject(in, opts)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(out, in) {
				t.Errorf("%s manual=%v: a pod of another mesh was changed without --force:\n%s", name, manual, lineDiff(string(in), string(out)))
			}
			for _, r := range res {
				if r.Changed || !strings.Contains(r.Reason, "--force") {
					t.Errorf("%s manual=%v: %s %s not skipped with a reason naming --force: %+v", name, manual, r.Kind, r.Name, r)
				}
			}
			fmt.Fprintf(&report, "# manual=%v\n%s", manual, reportText(res))
		}
		for _, manual := range []bool{false, true} {
			mode := "force-annotate"
			if manual {
				mode = "force-manual"
			}
			t.Run(name+"/"+mode, func(t *testing.T) {
				opts := testOptions(manual)
				opts.ReplaceOtherMeshes = true
				out, res, err := Inject(in, opts)
				if err != nil {
					t.Fatal(err)
				}
				fmt.Fprintf(&report, "# %s\n%s", mode, reportText(res))
				for _, r := range res {
					if !r.Changed || r.Replaced == "" {
						t.Errorf("%s %s not replaced: %+v", r.Kind, r.Name, r)
					}
				}
				checkGolden(t, filepath.Join("othermesh", goldenName(name, mode)), out)
				for _, pod := range podsOf(t, out) {
					checkNoOtherMesh(t, pod, manual)
				}
				again, res, err := Inject(out, opts)
				if err != nil {
					t.Fatal(err)
				}
				if !bytes.Equal(again, out) || slices.ContainsFunc(res, func(r Result) bool { return r.Changed }) {
					t.Errorf("injecting the replaced output again changed it")
				}
				back, _, err := Uninject(out, Options{})
				if err != nil {
					t.Fatal(err)
				}
				for _, pod := range podsOf(t, back) {
					for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
						if strings.HasPrefix(c.Name, "conduit-") {
							t.Errorf("pod %s: %s left after uninject", pod.Name, c.Name)
						}
					}
				}
			})
		}
		checkGolden(t, filepath.Join("othermesh", strings.TrimSuffix(name, ".input.yaml")+".report.golden.txt"), []byte(report.String()))
	}
}

// checkNoOtherMesh checks one pod after --force: no container, volume,
// annotation or label of Linkerd or Istio, every mount backed by a volume,
// the probes Istio rewrote restored, and Conduit's proxy present (manual).
func checkNoOtherMesh(t *testing.T, pod corev1.Pod, manual bool) {
	t.Helper()
	vols := map[string]bool{}
	for _, v := range pod.Spec.Volumes {
		vols[v.Name] = true
		if strings.Contains(v.Name, "linkerd") || strings.Contains(v.Name, "istio") || strings.HasPrefix(v.Name, "workload-") || v.Name == "credential-socket" {
			t.Errorf("pod %s: volume %s of the other mesh kept", pod.Name, v.Name)
		}
	}
	proxy := false
	for _, c := range slices.Concat(pod.Spec.InitContainers, pod.Spec.Containers) {
		if strings.Contains(c.Name, "linkerd") || strings.Contains(c.Name, "istio") {
			t.Errorf("pod %s: container %s of the other mesh kept", pod.Name, c.Name)
		}
		proxy = proxy || c.Name == ProxyContainerName
		for _, m := range c.VolumeMounts {
			if !vols[m.Name] {
				t.Errorf("pod %s: container %s mounts %s, which is no volume", pod.Name, c.Name, m.Name)
			}
		}
		for _, p := range []*corev1.Probe{c.LivenessProbe, c.ReadinessProbe, c.StartupProbe} {
			if p != nil && p.HTTPGet != nil && strings.HasPrefix(p.HTTPGet.Path, "/app-health/") {
				t.Errorf("pod %s: container %s keeps Istio's rewritten probe %s", pod.Name, c.Name, p.HTTPGet.Path)
			}
		}
	}
	if manual && !proxy {
		t.Errorf("pod %s: no %s after --force --manual", pod.Name, ProxyContainerName)
	}
	for _, kv := range []map[string]string{pod.Annotations, pod.Labels} {
		for k := range kv {
			if Linkerd.owns(k) || Istio.owns(k) || k == "prometheus.io/path" {
				t.Errorf("pod %s: %s of the other mesh kept", pod.Name, k)
			}
		}
	}
}

// podsOf decodes every pod (bare or templated, in Lists too) of a stream.
func podsOf(t *testing.T, stream []byte) []corev1.Pod {
	t.Helper()
	var pods []corev1.Pod
	var walk func(obj *yaml.Node)
	walk = func(obj *yaml.Node) {
		kind, _ := getString(obj, "kind")
		if items := get(obj, "items"); isSeq(items) {
			for _, it := range items.Content {
				walk(it)
			}
			return
		}
		_, path, ok := workload(kind)
		if !ok {
			return
		}
		holder := obj
		if path != nil {
			holder = getPath(obj, path...)
		}
		var buf bytes.Buffer
		if err := nodeToJSON(&buf, holder); err != nil {
			t.Fatal(err)
		}
		var pod corev1.Pod
		if err := unmarshalStrict(buf.Bytes(), &pod); err != nil {
			t.Fatalf("%s: %v\n%s", kind, err, buf.Bytes())
		}
		if pod.Name == "" {
			pod.Name, _ = getString(get(obj, "metadata"), "name")
		}
		pods = append(pods, pod)
	}
	for _, d := range splitYAML(stream) {
		root, err := parseYAMLDoc(d.body)
		if err != nil {
			t.Fatal(err)
		}
		if root.Kind != 0 && len(root.Content) > 0 {
			walk(resolve(root.Content[0]))
		}
	}
	return pods
}

// TestOtherMeshSkipped covers what shows another mesh, one sign at a time,
// and a mesh named by the user.
func TestOtherMeshSkipped(t *testing.T) {
	const head = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n"
	custom, err := CustomMesh([]string{"envoy-sidecar"}, []string{"consul.hashicorp.com/connect-inject=true"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tt := range []struct {
		name, pod, want string
	}{
		{"linkerd container", "spec:\n  containers:\n  - name: app\n  - name: linkerd-proxy\n", "Linkerd (container linkerd-proxy)"},
		{"linkerd native sidecar", "spec:\n  initContainers:\n  - name: linkerd-proxy\n  containers:\n  - name: app\n", "Linkerd (container linkerd-proxy)"},
		{"linkerd webhook", "  annotations:\n    linkerd.io/inject: enabled\nspec:\n  containers:\n  - name: app\n", "Linkerd (annotation linkerd.io/inject: enabled)"},
		{"istio status", "  annotations:\n    sidecar.istio.io/status: '{}'\nspec:\n  containers:\n  - name: app\n", "Istio (annotation sidecar.istio.io/status: {})"},
		{"istio label", "  labels:\n    sidecar.istio.io/inject: \"true\"\nspec:\n  containers:\n  - name: app\n", "Istio (label sidecar.istio.io/inject: true)"},
		{"istio cni", "spec:\n  initContainers:\n  - name: istio-validation\n  containers:\n  - name: app\n", "Istio (container istio-validation)"},
		{"custom container", "spec:\n  containers:\n  - name: app\n  - name: envoy-sidecar\n", "another mesh (container envoy-sidecar)"},
		{"custom annotation", "  annotations:\n    consul.hashicorp.com/connect-inject: \"true\"\nspec:\n  containers:\n  - name: app\n", "another mesh (annotation consul.hashicorp.com/connect-inject: true)"},
		{"linkerd disabled", "  annotations:\n    linkerd.io/inject: disabled\nspec:\n  containers:\n  - name: app\n", ""},
		{"istio opted out", "  labels:\n    sidecar.istio.io/inject: \"false\"\nspec:\n  containers:\n  - name: app\n", ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			opts := testOptions(true)
			opts.OtherMeshes = append(DefaultOtherMeshes(), custom)
			in := head + tt.pod
			out, res, err := Inject([]byte(in), opts)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				if !res[0].Changed {
					t.Fatalf("not injected: %s", res[0].Reason)
				}
				return
			}
			if res[0].Changed || string(out) != in {
				t.Fatalf("injected a pod of another mesh")
			}
			if !strings.Contains(res[0].Reason, "meshed by "+tt.want) {
				t.Errorf("reason %q, want it to name %q", res[0].Reason, tt.want)
			}
			// The webhook, too.
			_, reason, err := InjectPod(yamlToJSON(t, in), Namespace{Name: "shop", Annotations: map[string]string{AnnotationInject: ValueEnabled}}, opts.Proxy, opts.OtherMeshes)
			if err != nil || !strings.Contains(reason, "meshed by "+tt.want) {
				t.Errorf("webhook: reason %q (%v), want it to name %q", reason, err, tt.want)
			}
		})
	}
	if _, err := CustomMesh([]string{"a b"}, nil); err == nil {
		t.Error("a container name with a space accepted")
	}
	if _, err := CustomMesh(nil, []string{"=x"}); err == nil {
		t.Error("an annotation without a key accepted")
	}
}

// TestWebhookNamespaceOfOtherMesh: a namespace that Istio's or Linkerd's
// webhook also meshes gets no Conduit proxy (the two webhooks would both
// inject), unless the pod opts out of the other mesh.
func TestWebhookNamespaceOfOtherMesh(t *testing.T) {
	pod := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"app","image":"x"}]}}`
	optedOut := `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","labels":{"sidecar.istio.io/inject":"false"},"annotations":{"linkerd.io/inject":"disabled"}},"spec":{"containers":[{"name":"app","image":"x"}]}}`
	enabled := map[string]string{AnnotationInject: ValueEnabled}
	for _, tt := range []struct {
		name string
		ns   Namespace
		pod  string
		want string
	}{
		{"istio label", Namespace{Name: "shop", Annotations: enabled, Labels: map[string]string{"istio-injection": "enabled"}}, pod, "also meshed by Istio (label istio-injection: enabled)"},
		{"istio revision", Namespace{Name: "shop", Annotations: enabled, Labels: map[string]string{"istio.io/rev": "canary"}}, pod, "also meshed by Istio (label istio.io/rev: canary)"},
		{"linkerd", Namespace{Name: "shop", Annotations: map[string]string{AnnotationInject: ValueEnabled, "linkerd.io/inject": "enabled"}}, pod, "also meshed by Linkerd (annotation linkerd.io/inject: enabled)"},
		{"opted out", Namespace{Name: "shop", Annotations: map[string]string{AnnotationInject: ValueEnabled, "linkerd.io/inject": "enabled"}, Labels: map[string]string{"istio-injection": "enabled"}}, optedOut, ""},
	} {
		t.Run(tt.name, func(t *testing.T) {
			out, reason, err := InjectPod([]byte(tt.pod), tt.ns, testProxyConfig("v1"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.want == "" {
				if out == nil {
					t.Fatalf("not injected: %s", reason)
				}
				return
			}
			if out != nil || !strings.Contains(reason, tt.want) {
				t.Errorf("reason %q (injected: %v), want %q", reason, out != nil, tt.want)
			}
		})
	}
}

// TestControlPlaneNamespaceUninject: inject leaves the control plane's
// objects alone, and so does uninject, even when they carry what uninject
// would otherwise remove.
func TestControlPlaneNamespaceUninject(t *testing.T) {
	in := []byte(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: conduit-controller
  namespace: conduit
spec:
  template:
    metadata:
      annotations:
        conduit.io/proxy-version: v1.2.3
      labels:
        conduit.io/proxy-version: v1.2.3
    spec:
      containers:
      - name: controller
        image: ghcr.io/conduitmesh/conduit-controller:v1.2.3
---
apiVersion: v1
kind: Namespace
metadata:
  name: conduit
  annotations:
    conduit.io/inject: enabled
`)
	opts := testOptions(true)
	out, res, err := Inject(in, opts)
	if err != nil {
		t.Fatal(err)
	}
	if res[0].Changed || !strings.Contains(res[0].Reason, "control plane namespace conduit") || !bytes.Equal(out, in) {
		t.Fatalf("inject touched the control plane: %+v", res)
	}
	out, res, err = Uninject(in, opts)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out, in) {
		t.Errorf("uninject changed the control plane:\n%s", lineDiff(string(in), string(out)))
	}
	for _, r := range res {
		if r.Changed || !strings.Contains(r.Reason, "left as it is") {
			t.Errorf("%s %s: %+v, want skipped with the reason", r.Kind, r.Name, r)
		}
	}
	// Without a control plane namespace (the library default), uninject
	// does what it always did.
	if _, res, _ := Uninject(in, Options{}); !res[0].Changed {
		t.Errorf("uninject without a control plane namespace skipped the Deployment: %+v", res[0])
	}
}

func yamlToJSON(t *testing.T, in string) []byte {
	t.Helper()
	root, err := parseYAMLDoc([]byte(in))
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := nodeToJSON(&buf, root.Content[0]); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
