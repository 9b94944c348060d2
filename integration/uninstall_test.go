package integration

import (
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/conduitmesh/conduit/pkg/install"
)

// TestUninstallKeepsExistingNamespace: `conduit install -L` into a namespace
// that already holds the user's objects says so and leaves the namespace
// as it is; uninstall refuses to go ahead without a terminal unless --yes,
// then deletes Conduit's objects and keeps the namespace and the user's
// objects. A namespace the install created is deleted by uninstall. Uninstall
// returns when its objects are gone, so an install can follow at once.
func TestUninstallKeepsExistingNamespace(t *testing.T) {
	ctx := context.Background()
	kube := testCluster.Client
	apiserverLog := logFrom(t, filepath.Join(testCluster.Dir, "kube-apiserver.log"))
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

	// A pod elsewhere runs the proxy: uninstall refuses, naming it, until
	// it is gone (uninjected) or --force.
	const meshedNS = "shop-meshed"
	if err := testCluster.CreateNamespace(ctx, meshedNS, nil); err != nil {
		t.Fatal(err)
	}
	createMeshedPod(ctx, t, meshedNS, "web-0", "dev")
	res = runBinary(t, cli, "", "uninstall", "-L", ns, "--yes")
	if l := lastLine(res.Stderr); res.Code == 0 || !strings.Contains(l, "1 meshed pods ("+meshedNS+"/web-0;") || !strings.Contains(l, "--force") {
		t.Fatalf("uninstall with a meshed pod left: exit %d, want one line naming %s/web-0 and --force; stderr:\n%s", res.Code, meshedNS, res.Stderr)
	}
	getConfigMap(t, ns, install.ConfigMapName) // nothing was deleted
	if err := kube.CoreV1().Pods(meshedNS).Delete(ctx, "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}

	res = runBinary(t, cli, "", "uninstall", "-L", ns, "--yes")
	if res.Code != 0 {
		t.Fatalf("uninstall --yes: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stdout, "existed before the install and is kept") {
		t.Errorf("uninstall did not say it keeps the namespace:\n%s", res.Stdout)
	}
	inventoryGone(t, ns)
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
	inventoryGone(t, created)
	live, err = kube.CoreV1().Namespaces().Get(ctx, created, metav1.GetOptions{})
	if err == nil {
		t.Errorf("uninstall returned while namespace %s, which the install created, is still there (deletion %v)", created, live.DeletionTimestamp)
	} else if !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}

	// The CRDs were deleted right after they were created, before anything
	// read their resources: the API server's CRD finalizer must not have
	// found their storage initialising (it can then stall for minutes).
	for _, line := range strings.Split(apiserverLog(), "\n") {
		if strings.Contains(line, "crd_finalizer") && strings.Contains(line, ".policy.conduit.io") {
			t.Errorf("the API server's CRD finalizer failed during uninstall: %s", line)
		}
	}

	// And an install can follow at once.
	res = runBinary(t, cli, "", "install", "-L", created, "--wait=false")
	if res.Code != 0 {
		t.Fatalf("install right after uninstall: exit %d\nstderr:\n%s", res.Code, res.Stderr)
	}
	client, err := install.NewClient(testCluster.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := client.Inventory(ctx, created)
	if err != nil {
		t.Fatal(err)
	}
	crds := 0
	for _, o := range inv {
		if o.GetKind() == "CustomResourceDefinition" {
			crds++
		}
		if o.GetDeletionTimestamp() != nil {
			t.Errorf("%s of the new install is being deleted", install.KeyOf(o))
		}
	}
	if crds == 0 {
		t.Errorf("the new install has no CRDs: %d objects", len(inv))
	}
}

// inventoryGone fails t if any object labelled as the install in ns is
// left.
func inventoryGone(t *testing.T, ns string) {
	t.Helper()
	client, err := install.NewClient(testCluster.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := client.Inventory(context.Background(), ns)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range inv {
		t.Errorf("uninstall returned with %s left", install.KeyOf(o))
	}
}

// logFrom returns a function that reads what was appended to the file at
// path since logFrom was called.
func logFrom(t *testing.T, path string) func() string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return func() string {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(data[min(fi.Size(), int64(len(data))):])
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

// TestWaitDeletedRetriesAStalledCRDCleanup: the nudge that restarts a
// stalled CRD finalizer (an annotation changed on a CRD being deleted) is
// one a real API server accepts, and the wait ends when the CRD is gone. The
// stall itself depends on the API server's informer lagging its own write,
// so it is staged: a CRD held by a finalizer of the test's, with the
// condition the API server's finalizer writes when its cleanup fails.
func TestWaitDeletedRetriesAStalledCRDCleanup(t *testing.T) {
	ctx := context.Background()
	dyn := dynamic.NewForConfigOrDie(testCluster.RESTConfig)
	crds := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"})
	const name, hold = "widgets.nudge.conduit.test", "conduit.test/hold"
	crd := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
		"metadata": map[string]any{
			"name": name, "finalizers": []any{hold},
			"labels": map[string]any{install.LabelPartOf: "conduit", install.LabelControlPlaneNS: "nudge"},
		},
		"spec": map[string]any{
			"group": "nudge.conduit.test", "scope": "Namespaced",
			"names": map[string]any{"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
			"versions": []any{map[string]any{"name": "v1", "served": true, "storage": true,
				"schema": map[string]any{"openAPIV3Schema": map[string]any{"type": "object"}}}},
		},
	}}
	created, err := crds.Create(ctx, crd, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	release := func() {
		_, _ = crds.Patch(ctx, name, types.JSONPatchType, []byte(`[{"op":"remove","path":"/metadata/finalizers"}]`), metav1.PatchOptions{})
	}
	t.Cleanup(release)
	if err := crds.Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Once the API server's own finalizer is done, stage its failure.
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		live, err := crds.Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		if slices.Contains(live.GetFinalizers(), "customresourcecleanup.apiextensions.k8s.io") {
			return false, nil
		}
		_ = unstructured.SetNestedSlice(live.Object, []any{map[string]any{
			"type": "Terminating", "status": "True", "reason": "InstanceDeletionFailed",
			"message": "could not list instances: storage is (re)initializing", "lastTransitionTime": time.Now().UTC().Format(time.RFC3339),
		}}, "status", "conditions")
		_, err = crds.UpdateStatus(ctx, live, metav1.UpdateOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("staging the failed cleanup: %v", err)
	}

	client, err := install.NewClient(testCluster.RESTConfig)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- client.WaitDeleted(ctx, []*unstructured.Unstructured{created}, install.WaitOptions{Timeout: time.Minute, Interval: 100 * time.Millisecond}, func(string) {})
	}()
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		live, err := crds.Get(ctx, name, metav1.GetOptions{})
		return err == nil && live.GetAnnotations()[install.AnnotationCleanupRetry] != "", err
	})
	if err != nil {
		t.Fatalf("the wait did not retry the CRD's cleanup: %v", err)
	}
	release()
	if err := <-done; err != nil {
		t.Fatalf("wait after the CRD went: %v", err)
	}
}
