package install

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

func configData(t *testing.T, objs []*unstructured.Unstructured) map[string]any {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == ConfigMapName {
			data, _, _ := unstructured.NestedMap(o.Object, "data")
			return data
		}
	}
	t.Fatal("no conduit-config in the objects")
	return nil
}

func hasNamespace(objs []*unstructured.Unstructured) bool {
	for _, o := range objs {
		if o.GetKind() == "Namespace" {
			return true
		}
	}
	return false
}

// TestRecordNamespace: an install into an existing namespace leaves the
// Namespace object out (the user's namespace is never labelled, annotated
// or in the inventory) and records that in conduit-config; an install that
// creates its namespace keeps it and records that too. The rendered objects
// are not changed.
func TestRecordNamespace(t *testing.T) {
	objs, _, err := RenderInstall(InstallOptions{Values: ValueOptions{Namespace: "mesh"}, Version: "v1.0.0", Now: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if !hasNamespace(objs) {
		t.Fatal("the rendered install has no Namespace")
	}
	for _, created := range []bool{true, false} {
		got, err := recordNamespace(objs, created)
		if err != nil {
			t.Fatal(err)
		}
		if hasNamespace(got) != created {
			t.Errorf("created=%v: Namespace object present: %v", created, hasNamespace(got))
		}
		if want := len(objs) - map[bool]int{true: 0, false: 1}[created]; len(got) != want {
			t.Errorf("created=%v: %d objects, want %d", created, len(got), want)
		}
		if v := configData(t, got)[NamespaceCreatedKey]; v != map[bool]string{true: "true", false: "false"}[created] {
			t.Errorf("created=%v: conduit-config %s = %v", created, NamespaceCreatedKey, v)
		}
	}
	if _, ok := configData(t, objs)[NamespaceCreatedKey]; ok || !hasNamespace(objs) {
		t.Error("recordNamespace changed the rendered objects")
	}
}

// TestKeepUserNamespace: uninstall keeps the namespace when the install
// recorded that it found it (even if something labelled it as ours), and
// deletes it when the install created it or recorded nothing (older
// installs).
func TestKeepUserNamespace(t *testing.T) {
	inv := []*unstructured.Unstructured{
		labelled("v1", "ConfigMap", "mesh", ConfigMapName, "mesh"),
		labelled("v1", "Namespace", "", "mesh", "mesh"),
	}
	tests := []struct {
		name   string
		record map[string]string // conduit-config data; nil: no configmap
		want   []string
		kept   bool
	}{
		{"found by the install", map[string]string{NamespaceCreatedKey: "false"}, []string{"ConfigMap mesh/conduit-config"}, true},
		{"created by the install", map[string]string{NamespaceCreatedKey: "true"}, []string{"ConfigMap mesh/conduit-config", "Namespace mesh"}, false},
		{"installed before the record", map[string]string{"version": "v0.9.0"}, []string{"ConfigMap mesh/conduit-config", "Namespace mesh"}, false},
		{"no install", nil, []string{"ConfigMap mesh/conduit-config", "Namespace mesh"}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			kube := fake.NewClientset(&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "mesh"}})
			if tc.record != nil {
				kube = fake.NewClientset(&corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: ConfigMapName, Namespace: "mesh"}, Data: tc.record})
			}
			c := &Client{Kube: kube}
			got, kept, err := c.KeepUserNamespace(context.Background(), "mesh", inv)
			if err != nil {
				t.Fatal(err)
			}
			var keys []string
			for _, o := range got {
				keys = append(keys, KeyOf(o).String())
			}
			if diff := cmp.Diff(tc.want, keys); diff != "" || kept != tc.kept {
				t.Errorf("kept %v (want %v); objects to delete (-want +got):\n%s", kept, tc.kept, diff)
			}
			if len(inv) != 2 {
				t.Error("KeepUserNamespace changed its input")
			}
		})
	}
}

func TestNamespaceExists(t *testing.T) {
	now := metav1.Now()
	c := &Client{Kube: fake.NewClientset(
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "apps"}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "leaving", DeletionTimestamp: &now, Finalizers: []string{"kubernetes"}}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceTerminating}},
	)}
	for ns, want := range map[string]bool{"apps": true, "conduit": false} {
		if got, err := c.NamespaceExists(context.Background(), ns); err != nil || got != want {
			t.Errorf("NamespaceExists(%s) = %v, %v; want %v", ns, got, err, want)
		}
	}
	// Nothing can be created in a namespace being deleted.
	_, err := c.NamespaceExists(context.Background(), "leaving")
	var te *TerminatingError
	if !errors.As(err, &te) || !strings.Contains(err.Error(), "kubectl wait --for=delete namespace/leaving") {
		t.Errorf("terminating namespace: err = %v, want a TerminatingError", err)
	}
}

// TestRenderUpgradeKeepsNamespaceRecord: an upgrade of an install into an
// existing namespace renders no Namespace (so it applies nothing to the
// user's namespace and prunes nothing of it) and keeps the record; an
// upgrade of an install that created its namespace keeps both.
func TestRenderUpgradeKeepsNamespaceRecord(t *testing.T) {
	rendered, _ := renderForTest(t, ValueOptions{})
	for _, created := range []bool{true, false} {
		installed, err := recordNamespace(rendered, created)
		if err != nil {
			t.Fatal(err)
		}
		objs, _, err := fakeInstalled(t, installed).RenderUpgrade(context.Background(), "conduit", UpgradeOptions{Version: "v1.3.0", Now: testNow})
		if err != nil {
			t.Fatal(err)
		}
		if hasNamespace(objs) != created {
			t.Errorf("created=%v: the upgrade renders a Namespace: %v", created, hasNamespace(objs))
		}
		if v := configData(t, objs)[NamespaceCreatedKey]; v != map[bool]string{true: "true", false: "false"}[created] {
			t.Errorf("created=%v: the upgrade records %s = %v", created, NamespaceCreatedKey, v)
		}
	}
	// Installs older than the record: unchanged behaviour.
	objs, _, err := fakeInstalled(t, rendered).RenderUpgrade(context.Background(), "conduit", UpgradeOptions{Version: "v1.3.0", Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := configData(t, objs)[NamespaceCreatedKey]; ok || !hasNamespace(objs) {
		t.Error("an upgrade of an install without a record changed how it treats the namespace")
	}
}

// A user who may not read namespaces gets the install's permission error,
// not the API's message (the CLI test TestInstallWithoutPermission wants one
// clear line naming cluster-admin).
func TestNamespaceExistsForbidden(t *testing.T) {
	kube := fake.NewClientset()
	kube.PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "namespaces"}, "conduit", errors.New("no"))
	})
	_, err := (&Client{Kube: kube}).NamespaceExists(context.Background(), "conduit")
	var pe *PermissionError
	if !errors.As(err, &pe) || !strings.Contains(err.Error(), "cluster-admin") {
		t.Errorf("got %v, want a PermissionError", err)
	}
}
