package integration

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	batchv1 "k8s.io/api/batch/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/restmapper"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/controller/injector"
	"github.com/conduitmesh/conduit/pkg/inject"
	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
)

// TestInjectWebhook runs the proxy injector in-process behind a
// MutatingWebhookConfiguration on the real API server: pods that
// kube-controller-manager creates in an injection-enabled namespace arrive
// with the proxy, others untouched.
func TestInjectWebhook(t *testing.T) {
	ctx := context.Background()
	kube := testCluster.Client

	meshed := createNamespace(t, "inject-meshed")
	plain := createNamespace(t, "inject-plain")
	nsObj, err := kube.CoreV1().Namespaces().Get(ctx, meshed, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	nsObj.Annotations = map[string]string{inject.AnnotationInject: inject.ValueEnabled}
	if _, err := kube.CoreV1().Namespaces().Update(ctx, nsObj, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	cfg := startWebhook(t, meshed, plain)
	waitWebhookActive(t, meshed)

	// A Deployment in the meshed namespace: its pods come out injected.
	if _, err := kube.AppsV1().Deployments(meshed).Create(ctx, deployment("web"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod := waitPod(t, meshed, "app=web")
	checkInjected(t, pod, cfg.Version)

	// A Deployment in a plain namespace: untouched.
	if _, err := kube.AppsV1().Deployments(plain).Create(ctx, deployment("untouched"), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod = waitPod(t, plain, "app=untouched")
	if len(pod.Spec.InitContainers) != 0 || len(pod.Spec.Containers) != 1 || pod.Labels[inject.LabelProxyVersion] != "" {
		t.Errorf("pod in a plain namespace was changed: init %v containers %v labels %v", names(pod.Spec.InitContainers), names(pod.Spec.Containers), pod.Labels)
	}

	// `conduit inject app.yaml | kubectl apply -f -` in the plain namespace:
	// the annotation on the pod template is enough for the webhook.
	conduit := buildBinary(t, "./cmd/conduit")
	in := filepath.Join("..", "pkg", "inject", "testdata", "deployment.input.yaml")
	res := runBinary(t, conduit, "", "inject", in)
	if res.Code != 0 {
		t.Fatalf("conduit inject: exit %d: %s", res.Code, res.Stderr)
	}
	applyManifest(t, plain, []byte(res.Stdout), false)
	pod = waitPod(t, plain, "app=web")
	checkInjected(t, pod, cfg.Version)

	// A Job: the proxy is a native sidecar, so the Job can complete.
	job := &batchv1.Job{
		ObjectMeta: metav1.ObjectMeta{Name: "migrate"},
		Spec: batchv1.JobSpec{Template: corev1.PodTemplateSpec{
			ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "migrate"}},
			Spec: corev1.PodSpec{
				RestartPolicy: corev1.RestartPolicyNever,
				Containers:    []corev1.Container{{Name: "migrate", Image: "busybox:1.36", Command: []string{"true"}}},
			},
		}},
	}
	if _, err := kube.BatchV1().Jobs(meshed).Create(ctx, job, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod = waitPod(t, meshed, "app=migrate")
	checkInjected(t, pod, cfg.Version)
	for _, c := range pod.Spec.Containers {
		if c.Name == inject.ProxyContainerName {
			t.Errorf("the Job's proxy is a regular container; it would keep the Job from completing")
		}
	}

	// conduit.io/inject: disabled on the pod wins over the namespace.
	off := deployment("off")
	off.Spec.Template.Annotations = map[string]string{inject.AnnotationInject: inject.ValueDisabled}
	if _, err := kube.AppsV1().Deployments(meshed).Create(ctx, off, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pod = waitPod(t, meshed, "app=off")
	if len(pod.Spec.InitContainers) != 0 {
		t.Errorf("disabled pod was injected: %v", names(pod.Spec.InitContainers))
	}
}

// startWebhook runs the proxy injector in-process (TLS on a free loopback
// port with a self-made CA) behind a MutatingWebhookConfiguration for pods
// created in namespaces, until the test ends; it returns the injector's
// proxy configuration.
func startWebhook(t *testing.T, namespaces ...string) inject.ProxyConfig {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	certDir := t.TempDir()
	caPEM := writeServingCert(t, certDir)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := inject.DefaultProxyConfig("v0.0.0-test")
	cfg.TrustAnchorsPEM = string(testTrustAnchors(t))
	h := injector.NewHandler(injector.Config{Proxy: cfg, Namespaces: injector.KubeNamespaces(testCluster.Client)})
	served := make(chan error, 1)
	go func() { served <- injector.ServeListener(ctx, ln, certDir, h) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("webhook server: %v", err)
		}
	})
	registerWebhook(t, ln.Addr().String(), caPEM, namespaces...)
	return cfg
}

func deployment(name string) *appsv1.Deployment {
	one := int32(1)
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: name, Image: "nginx:1.27", Ports: []corev1.ContainerPort{{ContainerPort: 80}},
				}}},
			},
		},
	}
}

func names(cs []corev1.Container) []string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Name)
	}
	return out
}

// checkInjected checks the pod the API server stored has the native-sidecar
// layout and the proxy's labels and annotations.
func checkInjected(t *testing.T, pod *corev1.Pod, version string) {
	t.Helper()
	inits := pod.Spec.InitContainers
	if len(inits) < 2 || inits[0].Name != inject.InitContainerName || inits[1].Name != inject.ProxyContainerName {
		t.Fatalf("pod %s: init containers %v, want [conduit-init conduit-proxy ...]", pod.Name, names(inits))
	}
	proxy := inits[1]
	if proxy.RestartPolicy == nil || *proxy.RestartPolicy != corev1.ContainerRestartPolicyAlways {
		t.Errorf("pod %s: the proxy is not a native sidecar (restartPolicy %v)", pod.Name, proxy.RestartPolicy)
	}
	if pod.Labels[inject.LabelProxyVersion] != version || pod.Annotations[inject.AnnotationProxyVersion] != version ||
		pod.Annotations[inject.AnnotationInject] != inject.ValueEnabled {
		t.Errorf("pod %s: labels %v annotations %v", pod.Name, pod.Labels, pod.Annotations)
	}
	var token bool
	for _, v := range pod.Spec.Volumes {
		if v.Name == inject.TokenVolumeName && v.Projected != nil && len(v.Projected.Sources) == 1 &&
			v.Projected.Sources[0].ServiceAccountToken != nil && v.Projected.Sources[0].ServiceAccountToken.Audience == inject.TokenAudience {
			token = true
		}
	}
	if !token {
		t.Errorf("pod %s: no projected token volume for %s", pod.Name, inject.TokenAudience)
	}
	// The trust anchors are in the proxy's environment: a ConfigMap volume
	// could only come from the pod's own namespace, not the control plane's.
	var anchors bool
	for _, e := range proxy.Env {
		if e.Name == contract.Env(contract.FlagTrustAnchors) && strings.HasPrefix(e.Value, "-----BEGIN CERTIFICATE-----") {
			anchors = true
		}
	}
	if !anchors {
		t.Errorf("pod %s: the proxy has no %s", pod.Name, contract.Env(contract.FlagTrustAnchors))
	}
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil {
			t.Errorf("pod %s: volume %s mounts ConfigMap %s", pod.Name, v.Name, v.ConfigMap.Name)
		}
	}
}

// testTrustAnchorsFile holds the trust anchors of pkg/inject's golden files.
const testTrustAnchorsFile = "../pkg/inject/testdata/trust-anchors.pem"

func testTrustAnchors(t *testing.T) []byte {
	t.Helper()
	b, err := os.ReadFile(testTrustAnchorsFile)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// waitPod waits for the first pod matching selector in ns.
func waitPod(t *testing.T, ns, selector string) *corev1.Pod {
	t.Helper()
	deadline := time.Now().Add(90 * time.Second)
	for {
		pods, err := testCluster.Client.CoreV1().Pods(ns).List(context.Background(), metav1.ListOptions{LabelSelector: selector})
		if err == nil && len(pods.Items) > 0 {
			return &pods.Items[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no pod %s in %s after 90s (err %v)", selector, ns, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// registerWebhook registers the injector for pods created in namespaces.
func registerWebhook(t *testing.T, addr string, caPEM []byte, namespaces ...string) {
	t.Helper()
	url := "https://" + addr + "/inject"
	fail := admissionregistrationv1.Fail
	none := admissionregistrationv1.SideEffectClassNone
	timeout := int32(10)
	name := "conduit-inject-test-" + namespaces[0]
	cfg := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: name},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "proxy-injector.conduit.io",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			TimeoutSeconds:          &timeout,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: &url, CABundle: caPEM},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: "kubernetes.io/metadata.name", Operator: metav1.LabelSelectorOpIn, Values: namespaces,
			}}},
			ObjectSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: inject.AnnotationInject, Operator: metav1.LabelSelectorOpNotIn, Values: []string{inject.ValueDisabled},
			}}},
		}},
	}
	api := testCluster.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := api.Create(context.Background(), cfg, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { api.Delete(context.Background(), name, metav1.DeleteOptions{}) })
}

// waitWebhookActive dry-runs a pod creation until the API server calls the
// webhook (it picks up new configurations asynchronously).
func waitWebhookActive(t *testing.T, ns string) {
	t.Helper()
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "probe-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: "busybox:1.36"}}},
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		p, err := testCluster.Client.CoreV1().Pods(ns).Create(context.Background(), probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err == nil && len(p.Spec.InitContainers) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the webhook never injected a dry-run pod in %s (last err %v)", ns, err)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// writeServingCert writes a self-signed certificate for 127.0.0.1 (its own
// CA) into dir and returns it as PEM for the caBundle.
func writeServingCert(t *testing.T, dir string) []byte {
	t.Helper()
	c := pkitest.Anchor(t, "conduit-inject-test", func(c *x509.Certificate) {
		c.KeyUsage |= x509.KeyUsageDigitalSignature
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		c.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	})
	certPEM := c.PEM()
	if err := os.WriteFile(filepath.Join(dir, "tls.crt"), certPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "tls.key"), c.KeyPEM(t), 0o600); err != nil {
		t.Fatal(err)
	}
	return certPEM
}

// injectKinds are the golden inputs of pkg/inject, one per supported kind.
var injectKinds = []string{"pod", "deployment", "replicaset", "replicationcontroller", "statefulset", "daemonset", "job", "cronjob", "list"}

// TestInjectManualAccepted: for every supported kind, `conduit inject
// --manual` (and the default annotation) is accepted by the real API server,
// and `conduit uninject` of it gives the input back. --manual reads the trust
// anchors from the control plane's ConfigMap (a stand-in namespace here, as
// other tests install and uninstall Conduit) or --identity-trust-anchors-file.
func TestInjectManualAccepted(t *testing.T) {
	conduit := buildBinary(t, "./cmd/conduit")
	ns := createNamespace(t, "inject-dryrun")
	waitServiceAccount(t, ns)
	dir := t.TempDir()
	controlPlane := createNamespace(t, "inject-cp")

	// Before the trust anchors ConfigMap exists: one line saying what to do.
	res := runBinary(t, conduit, "", "inject", "--manual", "--conduit-namespace", controlPlane, filepath.Join("..", "pkg", "inject", "testdata", "deployment.input.yaml"))
	if res.Code != 1 || res.Stdout != "" || strings.Count(res.Stderr, "\n") != 1 ||
		!strings.Contains(res.Stderr, "Conduit is not installed in namespace \""+controlPlane+"\"") || !strings.Contains(res.Stderr, "--identity-trust-anchors-file") {
		t.Errorf("--manual without trust anchors: exit %d, stdout %q, stderr %q", res.Code, res.Stdout, res.Stderr)
	}
	roots := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{Name: inject.TrustRootsConfigMap},
		Data:       map[string]string{inject.TrustRootsKey: string(testTrustAnchors(t))},
	}
	if _, err := testCluster.Client.CoreV1().ConfigMaps(controlPlane).Create(context.Background(), roots, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	modes := [][]string{
		{"inject", "--manual", "--conduit-namespace", controlPlane},
		{"inject", "--manual", "--identity-trust-anchors-file", testTrustAnchorsFile},
		{"inject"},
	}
	for _, kind := range injectKinds {
		t.Run(kind, func(t *testing.T) {
			input := filepath.Join("..", "pkg", "inject", "testdata", kind+".input.yaml")
			orig, err := os.ReadFile(input)
			if err != nil {
				t.Fatal(err)
			}
			for i, args := range modes {
				res := runBinary(t, conduit, "", append(args, input)...)
				if res.Code != 0 || res.Stdout == "" {
					t.Fatalf("%s: exit %d\n%s", strings.Join(args, " "), res.Code, res.Stderr)
				}
				if !strings.Contains(res.Stderr, "injected") && !strings.Contains(res.Stderr, "annotated for injection") {
					t.Errorf("%s: report does not say injected:\n%s", strings.Join(args, " "), res.Stderr)
				}
				out := filepath.Join(dir, fmt.Sprintf("%s.%d.yaml", kind, i))
				if err := os.WriteFile(out, []byte(res.Stdout), 0o644); err != nil {
					t.Fatal(err)
				}
				kubectlDryRun(t, ns, out)
				if len(args) > 1 && !strings.Contains(res.Stdout, contract.Env(contract.FlagTrustAnchors)) {
					t.Errorf("%s: the proxy has no %s", strings.Join(args, " "), contract.Env(contract.FlagTrustAnchors))
				}

				back := runBinary(t, conduit, "", "uninject", out)
				if back.Code != 0 {
					t.Fatalf("uninject: exit %d\n%s", back.Code, back.Stderr)
				}
				if back.Stdout != string(orig) {
					t.Errorf("%s then uninject differs from the input:\n%s", strings.Join(args, " "), back.Stdout)
				}
			}
		})
	}
}

// kubectlDryRun has the API server validate (and admit) a manifest file
// without storing it.
func kubectlDryRun(t *testing.T, ns, file string) {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	applyManifest(t, ns, b, true)
}

// applyManifest applies a YAML stream in ns (as a server-side dry run when
// dryRun) with kubectl, or, where kubectl is not installed, by creating the
// objects through the dynamic client.
func applyManifest(t *testing.T, ns string, manifest []byte, dryRun bool) {
	t.Helper()
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		args := []string{"--kubeconfig", testCluster.Kubeconfig, "-n", ns, "apply", "-f", "-"}
		if dryRun {
			args = append(args, "--dry-run=server")
		}
		cmd := exec.Command(kubectl, args...)
		cmd.Stdin = bytes.NewReader(manifest)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubectl %s: %v\n%s\n%s", strings.Join(args[2:], " "), err, out, manifest)
		}
		return
	}
	dyn, err := dynamic.NewForConfig(testCluster.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(testCluster.Client.Discovery()))
	opts := metav1.CreateOptions{}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(manifest), 4096)
	for {
		var obj unstructured.Unstructured
		if err := dec.Decode(&obj.Object); errors.Is(err, io.EOF) {
			return
		} else if err != nil {
			t.Fatal(err)
		}
		objs := []unstructured.Unstructured{obj}
		if obj.IsList() {
			list, err := obj.ToList()
			if err != nil {
				t.Fatal(err)
			}
			objs = list.Items
		}
		for _, o := range objs {
			gvk := o.GroupVersionKind()
			m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := dyn.Resource(m.Resource).Namespace(ns).Create(context.Background(), &o, opts); err != nil {
				t.Fatalf("creating %s %s (dry run %v): %v", gvk.Kind, o.GetName(), dryRun, err)
			}
		}
	}
}

// waitServiceAccount waits for the namespace's default ServiceAccount, which
// pod admission requires.
func waitServiceAccount(t *testing.T, ns string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := testCluster.Client.CoreV1().ServiceAccounts(ns).Get(context.Background(), "default", metav1.GetOptions{})
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no default ServiceAccount in %s: %v", ns, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestInjectMalformedDocument: a malformed document anywhere in a stream
// makes the built binary exit 1 with the document's position and print
// nothing on stdout.
func TestInjectMalformedDocument(t *testing.T) {
	conduit := buildBinary(t, "./cmd/conduit")
	good, err := os.ReadFile(filepath.Join("..", "pkg", "inject", "testdata", "deployment.input.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.Write(good)
	b.WriteString("---\n")
	b.Write(good)
	b.WriteString("---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: broken\nspec:\n  containers:\n  - name: a\n    image: b\n   bad: indentation\n")
	b.WriteString("---\n")
	b.Write(good)
	file := filepath.Join(t.TempDir(), "app.yaml")
	if err := os.WriteFile(file, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	lines := bytes.Count(good, []byte("\n"))
	for _, cmd := range []string{"inject", "uninject"} {
		args := []string{cmd, file}
		if cmd == "inject" {
			args = []string{cmd, "--manual", "--identity-trust-anchors-file", testTrustAnchorsFile, file}
		}
		res := runBinary(t, conduit, "", args...)
		// The parser names a line inside the third document (the start of
		// the construct it could not finish, or the bad line itself).
		var line int
		_, scanErr := fmt.Sscanf(strings.TrimPrefix(res.Stderr, "Error: "+file+": document 3 (line "), "%d)", &line)
		first, last := 2*lines+3, 2*lines+12
		if res.Code != 1 || res.Stdout != "" || scanErr != nil || line < first || line > last {
			t.Errorf("%s: exit %d, stdout %d bytes, stderr %q; want exit 1, nothing, %q with a line in %d-%d",
				cmd, res.Code, len(res.Stdout), res.Stderr, "Error: "+file+": document 3 (line N): ...", first, last)
		}
	}
}
