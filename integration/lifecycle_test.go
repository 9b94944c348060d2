package integration

import (
	"context"
	"encoding/json"
	"os/exec"
	"regexp"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/conduitmesh/conduit/pkg/install"
)

// The CLI versions of the upgrade test: the "older" release is the same
// source linked with an older version, which is what users upgrade from.
const (
	oldVersion = "v0.0.1-lifecycle"
	newVersion = "v0.0.2-lifecycle"
)

// TestLifecycle drives the built conduit binary through install, upgrade
// from an older version, idempotent re-upgrade, a value change and
// uninstall against the real API server.
func TestLifecycle(t *testing.T) {
	ctx := context.Background()
	kube := testCluster.Client
	oldCLI := buildBinary(t, "./cmd/conduit", withVersion(oldVersion))
	newCLI := buildBinary(t, "./cmd/conduit", withVersion(newVersion))
	const ns = "conduit-lifecycle"

	// A workload that is not ours: uninstall must leave it alone.
	const appNS = "lifecycle-app"
	if err := testCluster.CreateNamespace(ctx, appNS, nil); err != nil {
		t.Fatal(err)
	}
	app := userDeployment(appNS, "web")
	if _, err := kube.AppsV1().Deployments(appNS).Create(ctx, app, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("render only touches nothing and the API server accepts it", func(t *testing.T) {
		res := runBinary(t, newCLI, "", "install", "-L", ns, "-o", "yaml")
		if res.Code != 0 {
			t.Fatalf("install -o yaml: exit %d\n%s", res.Code, res.Stderr)
		}
		if _, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Fatalf("install -o yaml created namespace %s (err=%v)", ns, err)
		}
		// Namespaced objects are only validated by a server-side dry run
		// when their namespace exists.
		if err := testCluster.CreateNamespace(ctx, ns, nil); err != nil {
			t.Fatal(err)
		}
		serverDryRun(t, res.Stdout)
	})

	var issuerBefore []byte
	t.Run("install", func(t *testing.T) {
		res := runBinary(t, oldCLI, "", "install", "-L", ns, "--timeout", "90s", noInjectorProbe)
		if res.Code != 0 {
			t.Fatalf("install: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
		if !strings.Contains(res.Stdout, "is installed in namespace "+ns) {
			t.Errorf("install stdout lacks the result line:\n%s", res.Stdout)
		}
		if !strings.Contains(res.Stderr, "✓ Waiting for the control plane to be ready") {
			t.Errorf("install printed no plain progress:\n%s", res.Stderr)
		}
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "conduit.io/control-plane-component=controller"})
		if err != nil {
			t.Fatal(err)
		}
		if len(pods.Items) == 0 {
			t.Fatal("no controller pods were created")
		}
		for _, p := range pods.Items {
			if !podReady(&p) {
				t.Errorf("pod %s is not Ready after install returned", p.Name)
			}
		}
		cm := getConfigMap(t, ns, install.ConfigMapName)
		if cm.Data["version"] != oldVersion || strings.Contains(cm.Data["values"], "PRIVATE KEY") {
			t.Errorf("conduit-config: version %q (want %q), values hold a private key: %v", cm.Data["version"], oldVersion, strings.Contains(cm.Data["values"], "PRIVATE KEY"))
		}
		s, err := kube.CoreV1().Secrets(ns).Get(ctx, install.IssuerSecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		issuerBefore = s.Data["tls.crt"]
	})

	t.Run("installing twice is refused", func(t *testing.T) {
		res := runBinary(t, newCLI, "", "install", "-L", ns)
		if res.Code == 0 {
			t.Fatal("second install succeeded")
		}
		lastLine := lastLine(res.Stderr)
		if !strings.Contains(lastLine, "already installed in namespace "+ns) || !strings.Contains(lastLine, "conduit upgrade") {
			t.Errorf("want one line pointing to `conduit upgrade`, got stderr:\n%s", res.Stderr)
		}
		if res.Stdout != "" {
			t.Errorf("stdout not empty: %q", res.Stdout)
		}
	})

	// An object an older version had and the new one does not.
	legacy := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "conduit-legacy", Namespace: ns, Labels: map[string]string{
		install.LabelPartOf: "conduit", install.LabelControlPlaneNS: ns, install.LabelVersion: oldVersion,
	}}}
	if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, legacy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	t.Run("upgrade dry run shows the version change and the prune", func(t *testing.T) {
		res := runBinary(t, newCLI, "", "upgrade", "-L", ns, "--dry-run")
		if res.Code != 0 {
			t.Fatalf("upgrade --dry-run: exit %d\n%s", res.Code, res.Stderr)
		}
		for _, want := range []string{
			"# update Deployment " + ns + "/conduit-controller",
			"-    conduit.io/version: " + oldVersion,
			"+    conduit.io/version: " + newVersion,
			"# delete ConfigMap " + ns + "/conduit-legacy",
		} {
			if !strings.Contains(res.Stdout, want) {
				t.Errorf("dry run lacks %q:\n%s", want, res.Stdout)
			}
		}
		if _, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "conduit-legacy", metav1.GetOptions{}); err != nil {
			t.Errorf("dry run pruned: %v", err)
		}
		if v := getConfigMap(t, ns, install.ConfigMapName).Data["version"]; v != oldVersion {
			t.Errorf("dry run changed the installed version to %q", v)
		}
	})

	t.Run("upgrade -o json prints the same plan as data", func(t *testing.T) {
		res := runBinary(t, newCLI, "", "upgrade", "-L", ns, "-o", "json")
		if res.Code != 0 {
			t.Fatalf("upgrade -o json: exit %d\n%s", res.Code, res.Stderr)
		}
		var plan struct {
			Namespace, FromVersion, ToVersion string
			Changes                           []struct{ Action, Kind, Namespace, Name, Diff string }
			Delete                            int
		}
		if err := json.Unmarshal([]byte(res.Stdout), &plan); err != nil {
			t.Fatalf("%v:\n%s", err, res.Stdout)
		}
		deletes := map[string]bool{}
		for _, c := range plan.Changes {
			if c.Action == "delete" {
				deletes[c.Kind+" "+c.Namespace+"/"+c.Name] = true
			}
		}
		if plan.Namespace != ns || plan.FromVersion != oldVersion || plan.ToVersion != newVersion || plan.Delete != 1 || !deletes["ConfigMap "+ns+"/conduit-legacy"] {
			t.Errorf("plan %+v", plan)
		}
		if v := getConfigMap(t, ns, install.ConfigMapName).Data["version"]; v != oldVersion {
			t.Errorf("upgrade -o json changed the installed version to %q", v)
		}
	})

	t.Run("upgrade", func(t *testing.T) {
		res := runBinary(t, newCLI, "", "upgrade", "-L", ns, "--yes", "--timeout", "90s", noInjectorProbe)
		if res.Code != 0 {
			t.Fatalf("upgrade: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
		if v := getConfigMap(t, ns, install.ConfigMapName).Data["version"]; v != newVersion {
			t.Errorf("installed version %q after upgrade, want %q", v, newVersion)
		}
		d, err := kube.AppsV1().Deployments(ns).Get(ctx, "conduit-controller", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if got := d.Spec.Template.Labels[install.LabelVersion]; got != newVersion {
			t.Errorf("controller pod template version %q, want %q", got, newVersion)
		}
		if img := d.Spec.Template.Spec.Containers[0].Image; !strings.HasSuffix(img, ":"+newVersion) {
			t.Errorf("controller image %q is not at %s", img, newVersion)
		}
		if _, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "conduit-legacy", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("the legacy object was not pruned (err=%v)", err)
		}
		s, err := kube.CoreV1().Secrets(ns).Get(ctx, install.IssuerSecretName, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if string(s.Data["tls.crt"]) != string(issuerBefore) {
			t.Error("upgrade replaced the identity issuer; it must keep the installed certificates")
		}
	})

	t.Run("a second upgrade changes nothing", func(t *testing.T) {
		res := runBinary(t, newCLI, "", "upgrade", "-L", ns, "--dry-run")
		if res.Code != 0 || !strings.Contains(res.Stdout, "No changes") {
			t.Errorf("upgrade --dry-run after upgrade: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
		res = runBinary(t, newCLI, "", "upgrade", "-L", ns, "--yes", noInjectorProbe)
		if res.Code != 0 || !strings.Contains(res.Stdout, "No changes") {
			t.Errorf("upgrade after upgrade: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
	})

	t.Run("a changed value shows exactly that change", func(t *testing.T) {
		res := runBinary(t, newCLI, "", "upgrade", "-L", ns, "--dry-run", "--set", "webhook.timeoutSeconds=7")
		if res.Code != 0 {
			t.Fatalf("exit %d\n%s", res.Code, res.Stderr)
		}
		headers := regexp.MustCompile(`(?m)^# .*$`).FindAllString(res.Stdout, -1)
		wantHeaders := []string{"# update ConfigMap " + ns + "/conduit-config", "# update MutatingWebhookConfiguration conduit-proxy-injector"}
		if strings.Join(headers, "\n") != strings.Join(wantHeaders, "\n") {
			t.Errorf("changed objects:\n%s\nwant:\n%s\nfull diff:\n%s", strings.Join(headers, "\n"), strings.Join(wantHeaders, "\n"), res.Stdout)
		}
		changed := regexp.MustCompile(`(?m)^[-+] .*$|^[-+]\s+\S.*$`).FindAllString(res.Stdout, -1)
		for _, l := range changed {
			if !strings.Contains(l, "timeoutSeconds") {
				t.Errorf("unexpected changed line %q in:\n%s", l, res.Stdout)
			}
		}
		// 10 -> 7 in the webhook and in conduit-config's merged values, and
		// the --set added to the user values recorded there.
		if len(changed) != 5 {
			t.Errorf("%d changed lines, want 5 (timeoutSeconds 10 -> 7 in two places, + 7 in the user values):\n%s", len(changed), res.Stdout)
		}
	})

	t.Run("uninstall", func(t *testing.T) {
		res := runBinary(t, newCLI, "", "uninstall", "-L", ns, "-o", "yaml")
		if res.Code != 0 || !strings.Contains(res.Stdout, "name: conduit-proxy-injector") || !strings.Contains(res.Stdout, "kind: ClusterRole\n") {
			t.Fatalf("uninstall -o yaml: exit %d\n%s\n%s", res.Code, res.Stdout, res.Stderr)
		}
		getConfigMap(t, ns, install.ConfigMapName) // still there

		res = runBinary(t, newCLI, "", "uninstall", "-L", ns, "--yes")
		if res.Code != 0 {
			t.Fatalf("uninstall: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
		}
		inventoryGone(t, ns)
		if _, err := kube.AppsV1().Deployments(appNS).Get(ctx, "web", metav1.GetOptions{}); err != nil {
			t.Errorf("uninstall touched a workload: %v", err)
		}
	})
}

// TestInstallWithoutPermission: a user whose RBAC cannot install gets one
// clear line and nothing is created.
func TestInstallWithoutPermission(t *testing.T) {
	ctx := context.Background()
	kube := testCluster.Client
	cli := buildBinary(t, "./cmd/conduit", withVersion(newVersion))
	const ns = "conduit-forbidden"
	if err := testCluster.CreateNamespace(ctx, "lifecycle-limited", nil); err != nil {
		t.Fatal(err)
	}
	// The user may manage ConfigMaps in one namespace, nothing else.
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "configmaps", Namespace: "lifecycle-limited"},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"*"}}},
	}
	if _, err := kube.RbacV1().Roles(role.Namespace).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "configmaps", Namespace: role.Namespace},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: role.Name},
		Subjects:   []rbacv1.Subject{{APIGroup: "rbac.authorization.k8s.io", Kind: "User", Name: "lifecycle-limited"}},
	}
	if _, err := kube.RbacV1().RoleBindings(rb.Namespace).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	kubeconfig, err := testCluster.UserKubeconfig("lifecycle-limited")
	if err != nil {
		t.Fatal(err)
	}
	res := runBinary(t, cli, kubeconfig, "install", "-L", ns)
	if res.Code == 0 {
		t.Fatal("install without permission succeeded")
	}
	if l := lastLine(res.Stderr); !strings.HasPrefix(l, "Error: you are not allowed to ") || !strings.Contains(l, "cluster-admin") {
		t.Errorf("want one clear permission error, got stderr:\n%s", res.Stderr)
	}
	if _, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("a failed install created namespace %s (err=%v)", ns, err)
	}
}

// serverDryRun has the API server validate manifests without storing them:
// with kubectl when it is installed, else with the same server-side apply
// dry run through client-go.
func serverDryRun(t *testing.T, manifests string) {
	t.Helper()
	if kubectl, err := exec.LookPath("kubectl"); err == nil {
		cmd := exec.Command(kubectl, "--kubeconfig", testCluster.Kubeconfig, "apply", "--dry-run=server", "-f", "-")
		cmd.Stdin = strings.NewReader(manifests)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("kubectl apply --dry-run=server rejected install -o yaml: %v\n%s", err, out)
		}
		return
	}
	client, err := install.NewClient(testCluster.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := install.DecodeObjects(strings.NewReader(manifests))
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range objs {
		if _, err := client.Apply(context.Background(), o, true, false); err != nil {
			t.Fatalf("server dry run rejected install -o yaml: %v", err)
		}
	}
}

func getConfigMap(t *testing.T, ns, name string) *corev1.ConfigMap {
	t.Helper()
	cm, err := testCluster.Client.CoreV1().ConfigMaps(ns).Get(context.Background(), name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("configmap %s/%s: %v", ns, name, err)
	}
	return cm
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return lines[len(lines)-1]
}
