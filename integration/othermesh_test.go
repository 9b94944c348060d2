package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/conduitmesh/conduit/pkg/inject"
)

// otherMeshFixtures are the manifests of pods that Linkerd or Istio meshed
// (or will), with their namespace set to ns.
func otherMeshFixtures(t *testing.T, ns string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	for _, name := range []string{"linkerd", "istio"} {
		b, err := os.ReadFile(filepath.Join("..", "pkg", "inject", "testdata", "othermesh", name+".input.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		out[name] = bytes.ReplaceAll(b, []byte("namespace: shop"), []byte("namespace: "+ns))
	}
	return out
}

// TestInjectForceAccepted: the fixtures are valid objects for the API
// server; `conduit inject --force` (annotation and --manual) replaces the
// other mesh with output the API server accepts, and without --force the
// manifests come back untouched, every pod skipped with the reason.
func TestInjectForceAccepted(t *testing.T) {
	conduit := buildBinary(t, "./cmd/conduit")
	ns := createNamespace(t, "inject-force")
	waitServiceAccount(t, ns)
	dir := t.TempDir()
	for name, in := range otherMeshFixtures(t, ns) {
		t.Run(name, func(t *testing.T) {
			src := filepath.Join(dir, name+".yaml")
			if err := os.WriteFile(src, in, 0o644); err != nil {
				t.Fatal(err)
			}
			kubectlDryRun(t, ns, src)

			res := runBinary(t, conduit, "", "inject", src)
			if res.Code != 0 || res.Stdout != string(in) {
				t.Fatalf("inject without --force: exit %d, output changed %v\n%s", res.Code, res.Stdout != string(in), res.Stderr)
			}
			if strings.Count(res.Stderr, "skipped: it is meshed by ") != strings.Count(res.Stderr, "\n") {
				t.Errorf("inject without --force did not skip every pod with the reason:\n%s", res.Stderr)
			}
			for _, args := range [][]string{
				{"inject", "--force"},
				{"inject", "--force", "--manual", "--identity-trust-anchors-file", testTrustAnchorsFile},
			} {
				res := runBinary(t, conduit, "", append(args, src)...)
				if res.Code != 0 || !strings.Contains(res.Stderr, "replacing ") || strings.Contains(res.Stderr, "skipped") {
					t.Fatalf("%s: exit %d\n%s", strings.Join(args, " "), res.Code, res.Stderr)
				}
				out := filepath.Join(dir, name+".forced.yaml")
				if err := os.WriteFile(out, []byte(res.Stdout), 0o644); err != nil {
					t.Fatal(err)
				}
				kubectlDryRun(t, ns, out)
				for _, c := range []string{"linkerd-proxy", "linkerd-init", "istio-proxy", "istio-init"} {
					if strings.Contains(res.Stdout, "name: "+c+"\n") {
						t.Errorf("%s: %s kept", strings.Join(args, " "), c)
					}
				}
			}
		})
	}
}

// TestInjectWebhookOtherMeshes: the proxy injector, behind the real API
// server, admits every pod of the fixtures without a second proxy, and
// refuses to mesh a namespace that Istio's webhook meshes too (unless the
// pod opts out of Istio).
func TestInjectWebhookOtherMeshes(t *testing.T) {
	ctx := context.Background()
	kube := testCluster.Client
	meshed := createNamespace(t, "othermesh")
	istio := createNamespace(t, "othermesh-istio")
	for ns, labels := range map[string]map[string]string{meshed: nil, istio: {"istio-injection": "enabled"}} {
		obj, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		obj.Annotations = map[string]string{inject.AnnotationInject: inject.ValueEnabled}
		for k, v := range labels {
			obj.Labels[k] = v
		}
		if _, err := kube.CoreV1().Namespaces().Update(ctx, obj, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		waitServiceAccount(t, ns)
	}
	startWebhook(t, meshed, istio)
	waitWebhookActive(t, meshed)

	admit := func(ns string, pod *corev1.Pod) *corev1.Pod {
		t.Helper()
		pod = pod.DeepCopy()
		pod.Namespace, pod.ResourceVersion = ns, ""
		got, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatalf("pod %s: %v", pod.Name, err)
		}
		return got
	}
	hasConduit := func(p *corev1.Pod) bool {
		for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			if strings.HasPrefix(c.Name, "conduit-") {
				return true
			}
		}
		return false
	}
	n := 0
	for name, in := range otherMeshFixtures(t, meshed) {
		for _, pod := range fixturePods(t, in) {
			n++
			if got := admit(meshed, pod); hasConduit(got) {
				t.Errorf("%s: pod %s of another mesh was injected: init %v containers %v", name, pod.Name, names(got.Spec.InitContainers), names(got.Spec.Containers))
			}
		}
	}
	if n < 6 {
		t.Fatalf("only %d pods in the fixtures", n)
	}

	plain := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "plain"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app", Image: "busybox:1.36"}}},
	}
	if got := admit(meshed, plain); !hasConduit(got) {
		t.Errorf("a plain pod in %s was not injected", meshed)
	}
	if got := admit(istio, plain); hasConduit(got) {
		t.Errorf("a pod in %s, which Istio's webhook meshes too, was injected", istio)
	}
	optedOut := plain.DeepCopy()
	optedOut.Labels = map[string]string{"sidecar.istio.io/inject": "false"}
	if got := admit(istio, optedOut); !hasConduit(got) {
		t.Errorf("a pod opted out of Istio in %s was not injected", istio)
	}
}

// fixturePods returns every pod of a manifest stream: bare Pods and the pod
// templates of workloads, in Lists too.
func fixturePods(t *testing.T, stream []byte) []*corev1.Pod {
	t.Helper()
	var pods []*corev1.Pod
	var walk func(obj map[string]any)
	walk = func(obj map[string]any) {
		if items, ok := obj["items"].([]any); ok {
			for _, it := range items {
				walk(it.(map[string]any))
			}
			return
		}
		var tmpl map[string]any
		var found bool
		switch obj["kind"] {
		case "Pod":
			tmpl, found = obj, true
		case "CronJob":
			tmpl, found, _ = unstructured.NestedMap(obj, "spec", "jobTemplate", "spec", "template")
		default:
			tmpl, found, _ = unstructured.NestedMap(obj, "spec", "template")
		}
		if !found {
			t.Fatalf("no pod in %v", obj["kind"])
		}
		var pod corev1.Pod
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(tmpl, &pod); err != nil {
			t.Fatal(err)
		}
		if pod.Name == "" {
			pod.Name, _, _ = unstructured.NestedString(obj, "metadata", "name")
		}
		pods = append(pods, &pod)
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(stream), 4096)
	for {
		var obj map[string]any
		err := dec.Decode(&obj)
		if errors.Is(err, io.EOF) {
			return pods
		}
		if err != nil {
			t.Fatal(err)
		}
		if obj != nil {
			walk(obj)
		}
	}
}
