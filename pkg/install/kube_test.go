package install

import (
	"context"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
)

// fakeDynamic serves InventoryKinds (but not CRDs, as if the cluster had
// none of that API) from objs.
func fakeDynamic(t *testing.T, objs ...*unstructured.Unstructured) *Client {
	return fakeDynamicServing(t, nil, objs...)
}

// fakeDynamicServing serves InventoryKinds but CRDs, and the kinds extra,
// from objs.
func fakeDynamicServing(t *testing.T, extra []schema.GroupVersionKind, objs ...*unstructured.Unstructured) *Client {
	t.Helper()
	mapper := meta.NewDefaultRESTMapper(nil)
	listKinds := map[schema.GroupVersionResource]string{}
	for _, gvk := range slices.Concat(InventoryKinds, extra) {
		if gvk.Kind == "CustomResourceDefinition" && !slices.Contains(extra, gvk) {
			continue
		}
		scope := meta.RESTScopeNamespace
		switch gvk.Kind {
		case "Namespace", "ClusterRole", "ClusterRoleBinding", "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "CustomResourceDefinition":
			scope = meta.RESTScopeRoot
		}
		mapper.Add(gvk, scope)
		m, err := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
		if err != nil {
			t.Fatal(err)
		}
		listKinds[m.Resource] = gvk.Kind + "List"
	}
	var robjs []runtime.Object
	for _, o := range objs {
		robjs = append(robjs, o)
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, robjs...)
	return &Client{Dynamic: dyn, Mapper: mapper}
}

func labelled(apiVersion, kind, ns, name, cpNS string) *unstructured.Unstructured {
	o := &unstructured.Unstructured{}
	o.SetAPIVersion(apiVersion)
	o.SetKind(kind)
	o.SetNamespace(ns)
	o.SetName(name)
	if cpNS != "" {
		o.SetLabels(map[string]string{LabelPartOf: "conduit", LabelControlPlaneNS: cpNS})
	}
	return o
}

func TestInventoryAndUninstall(t *testing.T) {
	c := fakeDynamic(t,
		labelled("v1", "Namespace", "", "conduit", "conduit"),
		labelled("v1", "ConfigMap", "conduit", "conduit-config", "conduit"),
		labelled("apps/v1", "Deployment", "conduit", "conduit-controller", "conduit"),
		labelled("rbac.authorization.k8s.io/v1", "ClusterRole", "", "conduit-conduit-controller", "conduit"),
		labelled("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", "conduit-proxy-injector", "conduit"),
		// Not ours: another install's object, and a workload.
		labelled("rbac.authorization.k8s.io/v1", "ClusterRole", "", "conduit-other-controller", "other"),
		labelled("apps/v1", "Deployment", "conduit", "user-app", ""),
	)
	ctx := context.Background()
	inv, err := c.Inventory(ctx, "conduit")
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, o := range inv {
		got = append(got, KeyOf(o).String())
	}
	want := []string{
		"MutatingWebhookConfiguration conduit-proxy-injector",
		"Deployment conduit/conduit-controller",
		"ConfigMap conduit/conduit-config",
		"ClusterRole conduit-conduit-controller",
		"Namespace conduit",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("inventory in delete order (-want +got):\n%s", diff)
	}
	if err := c.Uninstall(ctx, inv, &WaitOptions{Timeout: 5 * time.Second, Interval: 10 * time.Millisecond}, func(Event) {}); err != nil {
		t.Fatal(err)
	}
	if left, _ := c.Inventory(ctx, "conduit"); len(left) != 0 {
		t.Errorf("%d objects left after uninstall", len(left))
	}
	for _, keep := range []*unstructured.Unstructured{
		labelled("rbac.authorization.k8s.io/v1", "ClusterRole", "", "conduit-other-controller", ""),
		labelled("apps/v1", "Deployment", "conduit", "user-app", ""),
	} {
		if live, err := c.Get(ctx, keep); err != nil || live == nil {
			t.Errorf("uninstall removed %s (err=%v)", KeyOf(keep), err)
		}
	}
}

func TestInstallRefusesAnotherControlPlanesWebhook(t *testing.T) {
	c := fakeDynamic(t, labelled("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", "conduit-proxy-injector", "other"))
	objs := []*unstructured.Unstructured{
		labelled("v1", "Namespace", "", "conduit", "conduit"),
		labelled("admissionregistration.k8s.io/v1", "MutatingWebhookConfiguration", "", "conduit-proxy-injector", "conduit"),
	}
	err := c.checkClusterScopedOwners(context.Background(), objs, "conduit")
	if err == nil || !strings.Contains(err.Error(), "belongs to the Conduit control plane in namespace other") {
		t.Errorf("err = %v", err)
	}
	if err := c.checkClusterScopedOwners(context.Background(), objs, "other"); err != nil {
		t.Errorf("own webhook refused: %v", err)
	}
}
