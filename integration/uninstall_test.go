package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/utils/ptr"

	"github.com/conduitmesh/conduit/pkg/install"
)

// TestUninstallKeepsExistingNamespace: `conduit install -L` into a namespace
// that already holds the user's objects says so and leaves the namespace
// as it is; uninstall refuses to go ahead without a terminal unless --yes,
// then deletes Conduit's objects and keeps the namespace and the user's
// objects. A namespace the install created is deleted by uninstall.
func TestUninstallKeepsExistingNamespace(t *testing.T) {
	ctx := context.Background()
	kube := testCluster.Client
	cli := buildBinary(t, "./cmd/conduit", withVersion(newVersion))
	uninstallLater := func(ns string) {
		t.Cleanup(func() { runBinary(t, cli, "", "uninstall", "-L", ns, "--yes") })
	}

	const ns = "shop-existing"
	if err := testCluster.CreateNamespace(ctx, ns, map[string]string{"team": "shop"}); err != nil {
		t.Fatal(err)
	}
	settings := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: "shop-settings", Namespace: ns}, Data: map[string]string{"currency": "EUR"}}
	if _, err := kube.CoreV1().ConfigMaps(ns).Create(ctx, settings, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	shop := userDeployment(ns, "shop")
	if _, err := kube.AppsV1().Deployments(ns).Create(ctx, shop, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	res := runBinary(t, cli, "", "install", "-L", ns, "--wait=false")
	uninstallLater(ns)
	if res.Code != 0 {
		t.Fatalf("install -L %s: exit %d\nstdout:\n%s\nstderr:\n%s", ns, res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "Namespace "+ns+" already exists") || !strings.Contains(res.Stderr, "uninstall` will keep it") {
		t.Errorf("install into an existing namespace did not say so on stderr:\n%s", res.Stderr)
	}
	live, err := kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for k := range live.Labels {
		if strings.Contains(k, "conduit") {
			t.Errorf("install labelled the user's namespace: %v", live.Labels)
		}
	}
	for k := range live.Annotations {
		if strings.Contains(k, "conduit") {
			t.Errorf("install annotated the user's namespace: %v", live.Annotations)
		}
	}
	if got := getConfigMap(t, ns, install.ConfigMapName).Data[install.NamespaceCreatedKey]; got != "false" {
		t.Errorf("conduit-config %s = %q, want \"false\"", install.NamespaceCreatedKey, got)
	}

	// No terminal (the test's stdin is not one, and CI=true): no --yes, no
	// deletion.
	res = runBinary(t, cli, "", "uninstall", "-L", ns)
	if res.Code == 0 {
		t.Fatalf("uninstall without a terminal and without --yes succeeded:\n%s", res.Stdout)
	}
	if l := lastLine(res.Stderr); !strings.Contains(l, "--yes") || !strings.Contains(l, "no terminal") {
		t.Errorf("want one line asking for --yes, got stderr:\n%s", res.Stderr)
	}
	getConfigMap(t, ns, install.ConfigMapName) // nothing was deleted

	res = runBinary(t, cli, "", "uninstall", "-L", ns, "--yes")
	if res.Code != 0 {
		t.Fatalf("uninstall --yes: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stdout, "existed before the install and is kept") {
		t.Errorf("uninstall did not say it keeps the namespace:\n%s", res.Stdout)
	}
	waitInventoryGone(t, ns)
	live, err = kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil || live.DeletionTimestamp != nil {
		t.Fatalf("uninstall deleted the user's namespace %s (err=%v, deletion %v)", ns, err, live.DeletionTimestamp)
	}
	if cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, "shop-settings", metav1.GetOptions{}); err != nil || cm.Data["currency"] != "EUR" {
		t.Errorf("the user's configmap after uninstall: %v, %v", cm, err)
	}
	if _, err := kube.AppsV1().Deployments(ns).Get(ctx, "shop", metav1.GetOptions{}); err != nil {
		t.Errorf("the user's deployment after uninstall: %v", err)
	}

	// A namespace the install created goes with the uninstall.
	const created = "conduit-created"
	res = runBinary(t, cli, "", "install", "-L", created, "--wait=false")
	uninstallLater(created)
	if res.Code != 0 {
		t.Fatalf("install -L %s: exit %d\nstderr:\n%s", created, res.Code, res.Stderr)
	}
	if strings.Contains(res.Stderr, "already exists") {
		t.Errorf("install into a new namespace says it exists:\n%s", res.Stderr)
	}
	if got := getConfigMap(t, created, install.ConfigMapName).Data[install.NamespaceCreatedKey]; got != "true" {
		t.Errorf("conduit-config %s = %q, want \"true\"", install.NamespaceCreatedKey, got)
	}
	res = runBinary(t, cli, "", "uninstall", "-L", created, "--yes")
	if res.Code != 0 {
		t.Fatalf("uninstall --yes: exit %d\nstderr:\n%s", res.Code, res.Stderr)
	}
	waitInventoryGone(t, created)
	live, err = kube.CoreV1().Namespaces().Get(ctx, created, metav1.GetOptions{})
	if err == nil && live.DeletionTimestamp == nil {
		t.Errorf("uninstall kept namespace %s, which the install created", created)
	} else if err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
}

// waitInventoryGone waits until no object labelled as the install in ns is
// left.
func waitInventoryGone(t *testing.T, ns string) {
	t.Helper()
	client, err := install.NewClient(testCluster.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	err = wait.PollUntilContextTimeout(context.Background(), 500*time.Millisecond, 90*time.Second, true, func(ctx context.Context) (bool, error) {
		inv, err := client.Inventory(ctx, ns)
		if err != nil {
			return false, err
		}
		left = left[:0]
		for _, o := range inv {
			left = append(left, install.KeyOf(o).String())
		}
		return len(inv) == 0, nil
	})
	if err != nil {
		t.Fatalf("objects with our labels left after uninstall: %v (%v)", left, err)
	}
}

// userDeployment is a workload that is not Conduit's, for tests to check
// that install and uninstall leave it alone.
func userDeployment(ns, name string) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: labels},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](1),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: name, Image: name + ":1"}}},
			},
		},
	}
}
