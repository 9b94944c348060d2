package integration

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"

	"github.com/conduitmesh/conduit/integration/cluster"
	"github.com/conduitmesh/conduit/pkg/inject"
	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
)

// checkJSON is `conduit check -o json`.
type checkJSON struct {
	Success    bool `json:"success"`
	Categories []struct {
		Name   string `json:"categoryName"`
		Checks []struct {
			Description string `json:"description"`
			Hint        string `json:"hint"`
			Error       string `json:"error"`
			Result      string `json:"result"`
		} `json:"checks"`
	} `json:"categories"`
}

func parseCheckJSON(t *testing.T, res cmdResult) checkJSON {
	t.Helper()
	var doc checkJSON
	if err := json.Unmarshal([]byte(res.Stdout), &doc); err != nil {
		t.Fatalf("check -o json printed no JSON (%v):\nstdout:\n%s\nstderr:\n%s", err, res.Stdout, res.Stderr)
	}
	return doc
}

// results maps "category/description" to "result: error".
func (d checkJSON) results() map[string]string {
	m := map[string]string{}
	for _, c := range d.Categories {
		for _, ch := range c.Checks {
			m[c.Name+"/"+ch.Description] = strings.TrimSuffix(ch.Result+": "+ch.Error, ": ")
		}
	}
	return m
}

func TestCheckPre(t *testing.T) {
	ctx := context.Background()
	cli := buildBinary(t, "./cmd/conduit")

	t.Run("passes on a cluster without the namespace", func(t *testing.T) {
		res := runBinary(t, cli, "", "check", "--pre", "-L", "check-pre-free")
		if res.Code != 0 {
			t.Fatalf("check --pre: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
		}
		for _, want := range []string{"pre-kubernetes-setup\n", "✔ control plane namespace does not already exist\n", "✔ can create Deployments\n", "✔ can create MutatingWebhookConfigurations\n", "Status check results are ✔"} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, res.Stdout)
			}
		}
		if strings.Contains(res.Stdout, "\x1b[") {
			t.Errorf("colors when not on a terminal:\n%q", res.Stdout)
		}
	})

	t.Run("fails when the namespace exists", func(t *testing.T) {
		const ns = "check-pre-taken"
		if err := testCluster.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		res := runBinary(t, cli, "", "check", "--pre", "-L", ns)
		if res.Code != 1 {
			t.Fatalf("check --pre with an existing namespace: exit %d, want 1\n%s", res.Code, res.Stdout)
		}
		for _, want := range []string{
			"× control plane namespace does not already exist\n",
			`    namespace "check-pre-taken" already exists` + "\n",
			"`conduit uninstall -L check-pre-taken` removes it",
		} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("output lacks %q:\n%s", want, res.Stdout)
			}
		}
	})

	t.Run("a limited user is told which permission is missing", func(t *testing.T) {
		const saNS, sa = "check-pre-rbac", "installer"
		if err := testCluster.CreateNamespace(ctx, saNS, nil); err != nil {
			t.Fatal(err)
		}
		kubeconfig, err := testCluster.ServiceAccountKubeconfig(ctx, saNS, sa, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		// Everything an install needs except Deployments.
		role := &rbacv1.ClusterRole{
			ObjectMeta: metav1.ObjectMeta{Name: "check-pre-almost-installer"},
			Rules: []rbacv1.PolicyRule{
				{APIGroups: []string{""}, Resources: []string{"namespaces", "serviceaccounts", "configmaps", "secrets", "services"}, Verbs: []string{"get", "create", "patch"}},
				{APIGroups: []string{"rbac.authorization.k8s.io"}, Resources: []string{"clusterroles", "clusterrolebindings", "roles", "rolebindings"}, Verbs: []string{"get", "create", "patch"}},
				{APIGroups: []string{"admissionregistration.k8s.io"}, Resources: []string{"mutatingwebhookconfigurations"}, Verbs: []string{"get", "create", "patch"}},
				{APIGroups: []string{"apiextensions.k8s.io"}, Resources: []string{"customresourcedefinitions"}, Verbs: []string{"get", "create", "patch"}},
				{APIGroups: []string{"apps"}, Resources: []string{"deployments"}, Verbs: []string{"get", "list"}},
			},
		}
		if _, err := testCluster.Client.RbacV1().ClusterRoles().Create(ctx, role, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "check-pre-almost-installer"},
			RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "ClusterRole", Name: role.Name},
			Subjects:   []rbacv1.Subject{{Kind: rbacv1.ServiceAccountKind, Name: sa, Namespace: saNS}},
		}
		if _, err := testCluster.Client.RbacV1().ClusterRoleBindings().Create(ctx, binding, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			testCluster.Client.RbacV1().ClusterRoleBindings().Delete(ctx, binding.Name, metav1.DeleteOptions{}) //nolint:errcheck // best effort
			testCluster.Client.RbacV1().ClusterRoles().Delete(ctx, role.Name, metav1.DeleteOptions{})           //nolint:errcheck // best effort
		})

		res := runBinary(t, cli, kubeconfig, "check", "--pre", "-L", "check-pre-free", "-o", "json")
		if res.Code != 1 {
			t.Fatalf("check --pre as a limited user: exit %d, want 1\n%s%s", res.Code, res.Stdout, res.Stderr)
		}
		got := parseCheckJSON(t, res).results()
		want := map[string]string{
			"pre-kubernetes-setup/can create ConfigMaps":   "success",
			"pre-kubernetes-setup/can create ClusterRoles": "success",
			"pre-kubernetes-setup/can create Deployments":  `error: user "system:serviceaccount:check-pre-rbac:installer" cannot create,patch deployments.apps in namespace "check-pre-free" (missing RBAC permission: verbs create,patch on deployments.apps)`,
		}
		for k, w := range want {
			if got[k] != w {
				t.Errorf("%s:\n got %q\nwant %q", k, got[k], w)
			}
		}
		var failed []string
		for k, v := range got {
			if !strings.HasPrefix(v, "success") {
				failed = append(failed, k)
			}
		}
		if len(failed) != 1 {
			t.Errorf("failed checks %v; want only the Deployments permission", failed)
		}
	})
}

// TestCheckInstalledControlPlane installs with the CLI, checks it green,
// breaks it the three ways users break it, checks that each problem is named
// with its fix, applies the fixes the hints give and checks green again.
func TestCheckInstalledControlPlane(t *testing.T) {
	ctx := context.Background()
	cli := buildBinary(t, "./cmd/conduit")
	const ns = "check-cp"

	res := runBinary(t, cli, "", "install", "-L", ns, "--timeout", "2m", noInjectorProbe)
	if res.Code != 0 {
		t.Fatalf("install: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Cleanup(func() {
		if res := runBinary(t, cli, "", "uninstall", "-L", ns, "--yes"); res.Code != 0 {
			t.Errorf("uninstall: exit %d\n%s", res.Code, res.Stderr)
		}
	})

	// kwok's controller pods run nothing: this one answers for them.
	addr := startLocalController(ctx, t, ns)

	t.Run("every category passes", func(t *testing.T) {
		res := runBinary(t, cli, "", "check", "-L", ns, "-o", "json", "--wait", "1m")
		doc := parseCheckJSON(t, res)
		var cats []string
		for _, c := range doc.Categories {
			cats = append(cats, c.Name)
			for _, ch := range c.Checks {
				if ch.Result != "success" {
					t.Errorf("%s / %s: %s: %s (hint: %s)", c.Name, ch.Description, ch.Result, ch.Error, ch.Hint)
				}
			}
		}
		want := []string{"kubernetes-api", "kubernetes-version", "conduit-config", "control-plane", "identity", "webhook", "version", "gateway-api"}
		if !slices.Equal(cats, want) {
			t.Errorf("categories %v, want %v", cats, want)
		}
		if res.Code != 0 || !doc.Success {
			t.Errorf("exit %d, success %v; want 0, true", res.Code, doc.Success)
		}
	})

	t.Run("with the controller running locally its API check passes", func(t *testing.T) {
		res := runBinary(t, cli, "", "check", "-L", ns, "--controller-addr", addr, "-o", "json", "--wait", "1m")
		got := parseCheckJSON(t, res).results()
		if r := got["control-plane/controller API answers health checks"]; r != "success" || res.Code != 0 {
			t.Errorf("exit %d, controller API check %q\n%s", res.Code, r, res.Stdout)
		}
	})

	t.Run("meshed pods pass the proxy checks", func(t *testing.T) {
		const appNS = "check-app"
		if err := testCluster.CreateNamespace(ctx, appNS, nil); err != nil {
			t.Fatal(err)
		}
		createMeshedPod(ctx, t, appNS, "web-0", "dev")
		res := runBinary(t, cli, "", "check", "-L", ns, "--proxy", "-n", appNS, "--wait", "1m", "-o", "short")
		if res.Code != 0 {
			t.Fatalf("check --proxy: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
		}
		// Short output is the summary line alone when everything passes.
		if !strings.HasPrefix(res.Stdout, "Status check results are ✔ (") || !strings.HasSuffix(res.Stdout, " passed, 0 warnings, 0 failed)\n") || strings.Count(res.Stdout, "\n") != 1 {
			t.Errorf("short output of a healthy mesh:\n%s", res.Stdout)
		}
	})

	t.Run("a Server whose routes a connection can pass is warned of, and the hint's patch fixes it", func(t *testing.T) {
		const appNS = "check-policy"
		const name = "policy/Servers with routes declare an HTTP protocol"
		if err := testCluster.CreateNamespace(ctx, appNS, nil); err != nil {
			t.Fatal(err)
		}
		createMeshedPod(ctx, t, appNS, "web-0", "dev")
		dyn := dynamic.NewForConfigOrDie(testCluster.RESTConfig)
		// proxyProtocol left out: the CRD defaults it to unknown.
		if _, err := createYAML(t, dyn, appNS, "apiVersion: policy.conduit.io/v1beta1\nkind: Server\n"+
			"metadata: {name: web, namespace: "+appNS+"}\nspec: {podSelector: {matchLabels: {app: web}}, port: 8080}\n"); err != nil {
			t.Fatal(err)
		}
		applyRoute(t, dyn, appNS, "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\n"+
			"metadata: {name: web-api, namespace: "+appNS+"}\n"+
			"spec: {parentRefs: [{group: policy.conduit.io, kind: Server, name: web}], rules: [{matches: [{path: {type: PathPrefix, value: /api}}]}]}\n")

		res := runBinary(t, cli, "", "check", "-L", ns, "--proxy", "-n", appNS, "-o", "json", "--wait", "1m")
		doc := parseCheckJSON(t, res)
		want := "warning: Server check-policy/web detects its protocol (proxyProtocol unknown): a connection that is not HTTP " +
			"to detection passes its routes (HTTPRoute check-policy/web-api), under the Server's own authorizations"
		if got := doc.results()[name]; got != want || res.Code != 0 || !doc.Success {
			t.Fatalf("exit %d, success %v, %s:\n got %q\nwant %q", res.Code, doc.Success, name, got, want)
		}
		var hint string
		for _, c := range doc.Categories {
			for _, ch := range c.Checks {
				if c.Name+"/"+ch.Description == name {
					hint = ch.Hint
				}
			}
		}
		// The hint's command, run as a user would.
		_, rest, _ := strings.Cut(hint, "`kubectl patch ")
		patch, _, ok := strings.Cut(rest, "`")
		if !ok {
			t.Fatalf("the hint names no kubectl patch: %q", hint)
		}
		if _, err := exec.LookPath("kubectl"); err != nil {
			t.Skip("kubectl is not installed")
		}
		if res := runBinary(t, "/bin/sh", "", "-c", "kubectl patch "+patch); res.Code != 0 {
			t.Fatalf("kubectl patch %s: exit %d\n%s%s", patch, res.Code, res.Stdout, res.Stderr)
		}
		res = runBinary(t, cli, "", "check", "-L", ns, "--proxy", "-n", appNS, "-o", "json", "--wait", "1m")
		if got := parseCheckJSON(t, res).results()[name]; got != "success" || res.Code != 0 {
			t.Errorf("after the hint's patch: exit %d, %s: %q", res.Code, name, got)
		}
	})

	t.Run("a meshed pod stuck in Init:Error fails the proxy checks", func(t *testing.T) {
		const appNS = "check-init-error"
		if err := testCluster.CreateNamespace(ctx, appNS, nil); err != nil {
			t.Fatal(err)
		}
		const lastLine = "conduit-proxy init: installing the redirect: permission denied: run conduit-proxy init as root with the NET_ADMIN capability"
		pod := createInitErrorPod(ctx, t, appNS, "web-1", "conduit-proxy init: starting\n"+lastLine+"\n")
		res := runBinary(t, cli, "", "check", "-L", ns, "--proxy", "-n", appNS)
		if res.Code != 1 {
			t.Fatalf("check --proxy with a pod in Init:Error: exit %d, want 1\n%s%s", res.Code, res.Stdout, res.Stderr)
		}
		for _, want := range []string{
			"× data plane proxies are ready\n",
			"    pod check-init-error/web-1 (Init:Error): conduit-init exited with code 1; last log line: " + lastLine + "\n",
			"    hint: conduit-init could not install the pod's traffic redirect: `kubectl logs -n check-init-error web-1 -c conduit-init` says why",
			"NET_ADMIN and NET_RAW",
			"Status check results are × (",
		} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		t.Logf("check --proxy -n %s:\n%s", appNS, res.Stdout)
		// Nothing rewrote the status while the check ran.
		got, err := testCluster.Client.CoreV1().Pods(appNS).Get(ctx, pod.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if st := got.Status.InitContainerStatuses; len(st) == 0 || st[0].State.Terminated == nil || st[0].State.Terminated.ExitCode != 1 {
			t.Errorf("the pod's status changed under the test: %+v", got.Status)
		}
	})

	t.Run("kubectl conduit version", func(t *testing.T) {
		kubectl, dir := kubectlPlugin(t, cli) // on PATH, the binary is the plugin
		t.Setenv("PATH", dir+string(os.PathListSeparator)+os.Getenv("PATH"))
		res := runBinary(t, kubectl, "", "conduit", "version", "--client")
		if res.Code != 0 || res.Stdout != "Client version: dev\n" {
			t.Errorf("kubectl conduit version --client: exit %d\nstdout: %q\nstderr: %s", res.Code, res.Stdout, res.Stderr)
		}
		res = runBinary(t, kubectl, "", "conduit", "version", "-L", ns, "-o", "json")
		if res.Code != 0 || res.Stdout != "{\n  \"clientVersion\": \"dev\",\n  \"serverVersion\": \"dev\"\n}\n" {
			t.Errorf("kubectl conduit version -o json: exit %d\nstdout: %q\nstderr: %s", res.Code, res.Stdout, res.Stderr)
		}
		res = runBinary(t, kubectl, "", "conduit", "version", "-L", "nowhere")
		if res.Code != 0 || !strings.Contains(res.Stdout, "Server version: unavailable") || !strings.Contains(res.Stderr, "install it with `kubectl conduit install`") {
			t.Errorf("kubectl conduit version without an install: exit %d\nstdout: %q\nstderr: %s", res.Code, res.Stdout, res.Stderr)
		}
	})

	// Break it: an expired issuer (with a new anchor, as after a botched
	// rotation), a stale webhook caBundle, and no controller Deployment.
	anchor := newTestCA(t, "root.conduit.cluster.local", time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour), nil)
	expired := newTestCA(t, "identity.conduit.cluster.local", time.Now().Add(-400*24*time.Hour), time.Now().Add(-24*time.Hour), anchor)
	setIdentity(ctx, t, ns, anchor, expired)
	stale := newTestCA(t, "stale-webhook-ca", time.Now().Add(-time.Hour), time.Now().Add(time.Hour), nil)
	patch := `[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"` + b64(stale.certPEM) + `"}]`
	if _, err := testCluster.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, "conduit-proxy-injector", types.JSONPatchType, []byte(patch), metav1.PatchOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	if err := testCluster.Client.AppsV1().Deployments(ns).Delete(ctx, "conduit-controller", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("a broken install fails naming each problem and its fix", func(t *testing.T) {
		res := runBinary(t, cli, "", "check", "-L", ns)
		if res.Code != 1 {
			t.Fatalf("check of a broken install: exit %d, want 1\n%s", res.Code, res.Stdout)
		}
		for _, want := range []string{
			"× controller Deployment exists\n    Deployment check-cp/conduit-controller does not exist\n    hint: `conduit upgrade -L check-cp` re-applies every control plane object",
			"× issuer certificate is within its validity period\n    issuer certificate \"identity.conduit.cluster.local\" expired on ",
			"conduit upgrade -L check-cp --identity-trust-anchors-file ca.crt --identity-issuer-certificate-file issuer.crt --identity-issuer-key-file issuer.key",
			"× webhook caBundle matches the webhook certificate\n    the caBundle of webhook proxy-injector.conduit.io does not verify the serving certificate",
			"hint: `conduit upgrade -L check-cp` re-applies the MutatingWebhookConfiguration with the caBundle from Secret check-cp/conduit-proxy-injector-tls (add --force-conflicts if it was edited by hand)",
			// The stale caBundle makes the API server refuse the injector's
			// certificate: pods would start unmeshed.
			"× proxy injector adds the proxy to new pods\n    the API server admitted a pod annotated conduit.io/inject=enabled in namespace default without the proxy: the proxy injector did not answer\n    hint: the API server calls the injector through Service check-cp/conduit-controller port 443",
			"Status check results are × (",
			", 4 failed)\n",
		} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("output lacks %q", want)
			}
		}
		if t.Failed() {
			t.Logf("output:\n%s", res.Stdout)
		}
		junit := runBinary(t, cli, "", "check", "-L", ns, "-o", "junit")
		if junit.Code != 1 || !strings.Contains(junit.Stdout, `<testsuites name="conduit check" tests="`) || !strings.Contains(junit.Stdout, `failures="4"`) {
			t.Errorf("junit: exit %d\n%s", junit.Code, junit.Stdout)
		}
	})

	t.Run("the hints repair it", func(t *testing.T) {
		// The hint's step command, done in Go: a new issuer from the anchor.
		issuer := newTestCA(t, "identity.conduit.cluster.local", time.Now().Add(-time.Hour), time.Now().Add(365*24*time.Hour), anchor)
		dir := t.TempDir()
		files := map[string]string{"ca.crt": anchor.certPEM, "issuer.crt": issuer.certPEM, "issuer.key": issuer.keyPEM}
		for name, data := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(data), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		// --force-conflicts: the objects were broken by hand (the hints say so).
		args := []string{"upgrade", "-L", ns, "--yes", "--force-conflicts", "--timeout", "2m", noInjectorProbe}
		if help := runBinary(t, cli, "", "upgrade", "--help"); strings.Contains(help.Stdout, "--identity-issuer-certificate-file") {
			args = append(args,
				"--identity-trust-anchors-file", filepath.Join(dir, "ca.crt"),
				"--identity-issuer-certificate-file", filepath.Join(dir, "issuer.crt"),
				"--identity-issuer-key-file", filepath.Join(dir, "issuer.key"))
		} else {
			// Until upgrade takes the identity files (see
			// /work/notes/requests-HARNESS.md), install them by hand.
			t.Log("conduit upgrade has no --identity-* flags yet: replacing the issuer through the API")
			setIdentity(ctx, t, ns, anchor, issuer)
		}
		res := runBinary(t, cli, "", args...)
		if res.Code != 0 {
			t.Fatalf("the hinted upgrade failed: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
		res = runBinary(t, cli, "", "check", "-L", ns, "--wait", "1m")
		if res.Code != 0 {
			t.Fatalf("check after the repair: exit %d\n%s", res.Code, res.Stdout)
		}
	})
}

// createMeshedPod creates a pod that looks injected (proxy label and
// container), bound to the kwok node, which kwok makes Running and Ready.
// conduit.io/inject=disabled keeps the injector webhook out of it. It is
// deleted when t ends: a meshed pod left behind makes every later uninstall
// refuse.
func createMeshedPod(ctx context.Context, t *testing.T, ns, name, proxyVersion string) {
	t.Helper()
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			"app": "web", "conduit.io/proxy-version": proxyVersion, "conduit.io/inject": "disabled",
		}},
		Spec: corev1.PodSpec{
			NodeName: cluster.NodeName,
			Containers: []corev1.Container{
				{Name: "web", Image: "example.com/web:1"},
				{Name: "conduit-proxy", Image: "ghcr.io/conduitmesh/conduit-proxy:" + proxyVersion},
			},
		},
	}
	if _, err := testCluster.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		testCluster.Client.CoreV1().Pods(ns).Delete(ctx, name, metav1.DeleteOptions{}) //nolint:errcheck // best effort
	})
}

// createInitErrorPod creates an injected pod (conduit-init, then
// conduit-proxy as a native sidecar) held in Init:Error: conduit-init exited
// with code 1 and termination message msg. No kubelet or kwok touches it:
// it is bound to a Node of its own that nothing manages, so the status the
// test writes stays. (kwok's pod-ready stage would make any Pending pod on
// kwok-node-0 Running, and that node's addresses would make the API server
// dial out for the pod's logs; a Node without addresses makes the logs API
// fail at once, and the check falls back to the termination message.)
func createInitErrorPod(ctx context.Context, t *testing.T, ns, name, msg string) *corev1.Pod {
	t.Helper()
	core := testCluster.Client.CoreV1()
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "held-" + ns}}
	if _, err := core.Nodes().Create(ctx, node, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	always := corev1.ContainerRestartPolicyAlways
	image := "ghcr.io/conduitmesh/conduit-proxy:dev"
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{
			"app": "web", "conduit.io/proxy-version": "dev", "conduit.io/inject": "disabled",
		}},
		Spec: corev1.PodSpec{
			NodeName: node.Name,
			InitContainers: []corev1.Container{
				{Name: inject.InitContainerName, Image: image, Args: []string{"init"}, TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError},
				{Name: inject.ProxyContainerName, Image: image, Args: []string{"run"}, RestartPolicy: &always},
			},
			Containers: []corev1.Container{{Name: "web", Image: "example.com/web:1"}},
		},
	}
	pod, err := core.Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// No kubelet confirms a graceful deletion: delete at once.
		core.Pods(ns).Delete(ctx, name, *metav1.NewDeleteOptions(0)) //nolint:errcheck // best effort
		core.Nodes().Delete(ctx, node.Name, metav1.DeleteOptions{})  //nolint:errcheck // best effort
	})
	now := metav1.Now()
	started := false
	pod.Status = corev1.PodStatus{
		Phase: corev1.PodPending,
		Conditions: []corev1.PodCondition{
			{Type: corev1.PodScheduled, Status: corev1.ConditionTrue, LastTransitionTime: now},
			{Type: corev1.PodInitialized, Status: corev1.ConditionFalse, Reason: "ContainersNotInitialized", LastTransitionTime: now,
				Message: "containers with incomplete status: [conduit-init conduit-proxy]"},
			{Type: corev1.PodReady, Status: corev1.ConditionFalse, Reason: "ContainersNotReady", LastTransitionTime: now},
		},
		InitContainerStatuses: []corev1.ContainerStatus{
			{Name: inject.InitContainerName, Image: image, State: corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
				ExitCode: 1, Reason: "Error", Message: msg, StartedAt: now, FinishedAt: now,
			}}},
			{Name: inject.ProxyContainerName, Image: image, Started: &started, State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}},
		},
		ContainerStatuses: []corev1.ContainerStatus{
			{Name: "web", Image: "example.com/web:1", State: corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: "PodInitializing"}}},
		},
	}
	if pod, err = core.Pods(ns).UpdateStatus(ctx, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return pod
}

// testCA is a CA certificate and its key, in PEM.
type testCA struct {
	cert            *x509.Certificate
	key             *ecdsa.PrivateKey
	certPEM, keyPEM string
}

// newTestCA makes an ECDSA P-256 CA valid from notBefore to notAfter,
// signed by parent (self-signed when nil).
func newTestCA(t *testing.T, cn string, notBefore, notAfter time.Time, parent *testCA) *testCA {
	t.Helper()
	mod := func(c *x509.Certificate) {
		c.NotBefore, c.NotAfter = notBefore, notAfter
		c.KeyUsage |= x509.KeyUsageDigitalSignature
	}
	var c *pkitest.Cert
	if parent == nil {
		c = pkitest.Anchor(t, cn, mod)
	} else {
		c = pkitest.Issuer(t, &pkitest.Cert{Cert: parent.cert, Key: parent.key}, cn, mod)
	}
	return &testCA{cert: c.Cert, key: c.Key, certPEM: string(c.PEM()), keyPEM: string(c.KeyPEM(t))}
}

// setIdentity overwrites the install's trust roots and issuer, as an
// operator rotating by hand would.
func setIdentity(ctx context.Context, t *testing.T, ns string, anchor, issuer *testCA) {
	t.Helper()
	core := testCluster.Client.CoreV1()
	cm, err := core.ConfigMaps(ns).Get(ctx, "conduit-identity-trust-roots", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cm.Data["ca-bundle.crt"] = anchor.certPEM
	if _, err := core.ConfigMaps(ns).Update(ctx, cm, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
	sec, err := core.Secrets(ns).Get(ctx, "conduit-identity-issuer", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	sec.Data = map[string][]byte{"tls.crt": []byte(issuer.certPEM), "tls.key": []byte(issuer.keyPEM), "ca.crt": []byte(anchor.certPEM)}
	if _, err := core.Secrets(ns).Update(ctx, sec, metav1.UpdateOptions{FieldManager: "kubectl-edit"}); err != nil {
		t.Fatal(err)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// startLocalController runs conduit-controller on loopback against the test
// cluster, with the identity and webhook certificate of the install in ns,
// and returns its gRPC address. The API server reaches its proxy injector
// through the controller Service, as in a cluster (Cluster.RouteEgress), so
// `conduit check`'s injector probe passes. The process is stopped, and the
// route removed, when the test ends.
func startLocalController(ctx context.Context, t *testing.T, ns string) string {
	t.Helper()
	bin := buildBinary(t, "./cmd/conduit-controller")
	secretDir := func(name string, keys ...string) string {
		sec, err := testCluster.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		for _, k := range keys {
			if err := os.WriteFile(filepath.Join(dir, k), sec.Data[k], 0o600); err != nil {
				t.Fatal(err)
			}
		}
		return dir
	}
	issuerDir := secretDir("conduit-identity-issuer", "tls.crt", "tls.key", "ca.crt")
	webhookDir := secretDir("conduit-proxy-injector-tls", "tls.crt", "tls.key")
	cmd := exec.Command(bin, "--discovery=kubernetes", "--kubeconfig="+testCluster.Kubeconfig,
		"--grpc-addr=127.0.0.1:0", "--admin-addr=127.0.0.1:0", "--webhook-addr=127.0.0.1:0", "--controller-namespace="+ns,
		"--identity-issuer-dir="+issuerDir, "--webhook-cert-dir="+webhookDir,
		"--stats-interval=0") // kwok pod IPs are not ours to reach: never scrape them
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }() //nolint:errcheck // stopping
		select {
		case <-done:
		case <-time.After(15 * time.Second):
			cmd.Process.Kill() //nolint:errcheck // last resort
			<-done
		}
	})
	// It prints its addresses first ("grpc-addr=127.0.0.1:PORT", then
	// admin-addr and webhook-addr).
	addrs := make(chan [2]string, 3)
	go func() { // ends when the process closes stdout
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok && strings.HasSuffix(k, "-addr") {
				addrs <- [2]string{k, v}
			}
		}
		close(addrs)
	}()
	got := map[string]string{}
	timeout := time.After(30 * time.Second)
	for got["grpc-addr"] == "" || got["webhook-addr"] == "" {
		select {
		case a, ok := <-addrs:
			if !ok {
				t.Fatalf("conduit-controller exited without listening:\n%s", stderr.String())
			}
			got[a[0]] = a[1]
		case <-timeout:
			t.Fatalf("conduit-controller printed no grpc-addr and webhook-addr in 30s (%v):\n%s", got, stderr.String())
		}
	}
	// The API server calls the injector through the controller Service's
	// ClusterIP: the cluster's egress guard takes that to this controller.
	svc, err := testCluster.Client.CoreV1().Services(ns).Get(ctx, "conduit-controller", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	unroute, err := testCluster.RouteEgress(svc.Spec.ClusterIP+":443", got["webhook-addr"])
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(unroute)
	return got["grpc-addr"]
}

// TestCheckAcrossAnUpgrade: a control plane installed by an older CLI checks
// green with that CLI, the newer CLI warns (only) about the version skew,
// and after `upgrade` the newer CLI checks every category green.
func TestCheckAcrossAnUpgrade(t *testing.T) {
	oldCLI := buildBinary(t, "./cmd/conduit", withVersion(oldVersion))
	newCLI := buildBinary(t, "./cmd/conduit", withVersion(newVersion))
	const ns = "check-upgrade"

	if res := runBinary(t, oldCLI, "", "install", "-L", ns, "--timeout", "2m", noInjectorProbe); res.Code != 0 {
		t.Fatalf("install: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	t.Cleanup(func() {
		if res := runBinary(t, newCLI, "", "uninstall", "-L", ns, "--yes"); res.Code != 0 {
			t.Errorf("uninstall: exit %d\n%s", res.Code, res.Stderr)
		}
	})
	startLocalController(context.Background(), t, ns) // the injector the checks probe
	notPassing := func(res cmdResult) map[string]string {
		t.Helper()
		m := map[string]string{}
		for k, v := range parseCheckJSON(t, res).results() {
			if v != "success" {
				m[k] = v
			}
		}
		return m
	}

	res := runBinary(t, oldCLI, "", "check", "-L", ns, "-o", "json", "--wait", "1m")
	if got := notPassing(res); res.Code != 0 || len(got) > 0 {
		t.Errorf("old CLI on its own install: exit %d, not passing %v", res.Code, got)
	}

	res = runBinary(t, newCLI, "", "check", "-L", ns, "-o", "json")
	want := map[string]string{"version/control plane and CLI versions match": "warning: control plane is " + oldVersion + " but the CLI is " + newVersion}
	if got := notPassing(res); res.Code != 0 || len(got) != 1 || got["version/control plane and CLI versions match"] != want["version/control plane and CLI versions match"] {
		t.Errorf("new CLI before the upgrade: exit %d (want 0: a warning), not passing %v, want %v", res.Code, got, want)
	}

	if res := runBinary(t, newCLI, "", "upgrade", "-L", ns, "--yes", "--timeout", "2m", noInjectorProbe); res.Code != 0 {
		t.Fatalf("upgrade: exit %d\n%s%s", res.Code, res.Stdout, res.Stderr)
	}
	res = runBinary(t, newCLI, "", "check", "-L", ns, "-o", "json", "--wait", "1m")
	if got := notPassing(res); res.Code != 0 || len(got) > 0 {
		t.Errorf("new CLI after the upgrade: exit %d, not passing %v", res.Code, got)
	}
}
