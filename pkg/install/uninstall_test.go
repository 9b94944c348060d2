package install

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/conduitmesh/conduit/pkg/contract"
)

var (
	crdKind    = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}
	policyKind = schema.GroupVersionKind{Group: "policy.conduit.io", Version: "v1beta1", Kind: "AuthorizationPolicy"}
	policies   = schema.GroupVersionResource{Group: "policy.conduit.io", Version: "v1beta1", Resource: "authorizationpolicies"}
)

var quickWait = WaitOptions{Timeout: 5 * time.Second, Interval: 10 * time.Millisecond}

// policyCRD is the CRD of AuthorizationPolicy as the cluster holds it,
// labelled as the install's in namespace conduit.
func policyCRD() *unstructured.Unstructured {
	crd := labelled("apiextensions.k8s.io/v1", "CustomResourceDefinition", "", "authorizationpolicies.policy.conduit.io", "conduit")
	crd.SetUID("crd-1")
	_ = unstructured.SetNestedField(crd.Object, "policy.conduit.io", "spec", "group")
	_ = unstructured.SetNestedField(crd.Object, "authorizationpolicies", "spec", "names", "plural")
	_ = unstructured.SetNestedSlice(crd.Object, []any{
		map[string]any{"name": "v1alpha1", "served": true, "storage": false},
		map[string]any{"name": "v1beta1", "served": true, "storage": true},
	}, "spec", "versions")
	return crd
}

// terminating marks obj as deleted, held by finalizer, with a status
// condition.
func terminating(obj *unstructured.Unstructured, finalizer string, cond map[string]any) *unstructured.Unstructured {
	obj = obj.DeepCopy()
	now := metav1.Now()
	obj.SetDeletionTimestamp(&now)
	obj.SetFinalizers([]string{finalizer})
	if cond != nil {
		_ = unstructured.SetNestedSlice(obj.Object, []any{cond}, "status", "conditions")
	}
	return obj
}

func dynFake(c *Client) *dynamicfake.FakeDynamicClient {
	return c.Dynamic.(*dynamicfake.FakeDynamicClient)
}

// TestUninstallReadiesCustomResourcesBeforeDeletingTheirCRD: the custom
// resources of a CRD are listed (its storage made ready) before the CRD is
// deleted, and Uninstall waits for the CRD to be gone.
func TestUninstallReadiesCustomResourcesBeforeDeletingTheirCRD(t *testing.T) {
	crd := policyCRD()
	c := fakeDynamicServing(t, []schema.GroupVersionKind{crdKind, policyKind}, crd)
	if err := c.Uninstall(context.Background(), []*unstructured.Unstructured{crd}, &quickWait, func(Event) {}); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, a := range dynFake(c).Actions() {
		got = append(got, a.GetVerb()+" "+a.GetResource().Resource+"/"+a.GetResource().Version)
	}
	want := "list authorizationpolicies/v1beta1,delete customresourcedefinitions/v1"
	if !strings.HasPrefix(strings.Join(got, ","), want) {
		t.Errorf("actions %v, want them to start with %s", got, want)
	}
}

// TestWaitDeletedWaitsForTerminatingObjects: the wait goes on while an
// object is there, says what the API server says holds it, ends when it is
// gone or replaced by a new object of the same name, and times out naming
// it.
func TestWaitDeletedWaitsForTerminatingObjects(t *testing.T) {
	ns := labelled("v1", "Namespace", "", "conduit", "conduit")
	ns.SetUID("ns-1")
	held := terminating(ns, "kubernetes", map[string]any{
		"type": "NamespaceContentRemaining", "status": "True", "reason": "SomeResourcesRemain",
		"message": "Some resources are remaining: pods. has 1 resource instances",
	})
	ctx := context.Background()

	t.Run("gone", func(t *testing.T) {
		c := fakeDynamic(t, held)
		var gets atomic.Int32
		dynFake(c).PrependReactor("get", "namespaces", func(k8stesting.Action) (bool, runtime.Object, error) {
			if gets.Add(1) == 3 {
				_ = dynFake(c).Tracker().Delete(schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}, "", "conduit")
			}
			return false, nil, nil
		})
		var details []string
		if err := c.WaitDeleted(ctx, []*unstructured.Unstructured{ns}, quickWait, func(d string) { details = append(details, d) }); err != nil {
			t.Fatal(err)
		}
		if len(details) == 0 || details[0] != "Namespace conduit is terminating: Some resources are remaining: pods. has 1 resource instances" {
			t.Errorf("progress %q", details)
		}
	})

	t.Run("replaced", func(t *testing.T) {
		fresh := ns.DeepCopy()
		fresh.SetUID("ns-2")
		if err := fakeDynamic(t, fresh).WaitDeleted(ctx, []*unstructured.Unstructured{ns}, quickWait, func(string) {}); err != nil {
			t.Errorf("a new namespace of the same name was waited for: %v", err)
		}
	})

	t.Run("timeout", func(t *testing.T) {
		err := fakeDynamic(t, held).WaitDeleted(ctx, []*unstructured.Unstructured{ns}, WaitOptions{Timeout: 50 * time.Millisecond, Interval: 10 * time.Millisecond}, func(string) {})
		for _, want := range []string{"timed out after 50ms", "Namespace conduit is terminating: Some resources are remaining", "kubectl get namespace/conduit", "--timeout"} {
			if err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("err = %v, want it to contain %q", err, want)
			}
		}
	})
}

// TestWaitDeletedRetriesAFailedCRDCleanup: a CRD whose cleanup the API
// server's finalizer reports as failed gets its custom resources listed and
// an annotation changed, which is what makes the finalizer try again; a CRD
// whose cleanup is merely in progress is left alone.
func TestWaitDeletedRetriesAFailedCRDCleanup(t *testing.T) {
	ctx := context.Background()
	cond := func(reason string) map[string]any {
		return map[string]any{"type": "Terminating", "status": "True", "reason": reason, "message": "could not list instances: storage is (re)initializing"}
	}
	for _, tc := range []struct {
		reason string
		retry  bool
	}{
		{"InstanceDeletionFailed", true},
		{"InstanceDeletionCheck", true},
		{"InstanceDeletionInProgress", false},
	} {
		t.Run(tc.reason, func(t *testing.T) {
			crd := policyCRD()
			c := fakeDynamicServing(t, []schema.GroupVersionKind{crdKind, policyKind},
				terminating(crd, "customresourcecleanup.apiextensions.k8s.io", cond(tc.reason)))
			var patches []string
			dynFake(c).PrependReactor("patch", "customresourcedefinitions", func(a k8stesting.Action) (bool, runtime.Object, error) {
				p := a.(k8stesting.PatchAction)
				if p.GetPatchType() != types.MergePatchType {
					t.Errorf("patch type %s", p.GetPatchType())
				}
				patches = append(patches, string(p.GetPatch()))
				// The finalizer, nudged, succeeds.
				return true, nil, dynFake(c).Tracker().Delete(crdResource, "", crd.GetName())
			})
			err := c.WaitDeleted(ctx, []*unstructured.Unstructured{crd}, WaitOptions{Timeout: 100 * time.Millisecond, Interval: 10 * time.Millisecond}, func(string) {})
			if !tc.retry {
				if len(patches) != 0 || err == nil {
					t.Errorf("cleanup in progress: patched %v, err %v", patches, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(patches) != 1 || !strings.Contains(patches[0], `"annotations":{"`+AnnotationCleanupRetry+`":`) {
				t.Errorf("patches %v, want one setting %s", patches, AnnotationCleanupRetry)
			}
			listed := false
			for _, a := range dynFake(c).Actions() {
				listed = listed || (a.GetVerb() == "list" && a.GetResource() == policies)
				if a.GetVerb() == "patch" && !listed {
					t.Error("the CRD was nudged before its custom resources were listed")
				}
			}
		})
	}
}

// TestInstallRefusesTerminatingObjects: an install right after an uninstall
// that did not wait would apply over objects about to disappear.
func TestInstallRefusesTerminatingObjects(t *testing.T) {
	crd := policyCRD()
	c := fakeDynamicServing(t, []schema.GroupVersionKind{crdKind}, terminating(crd, "customresourcecleanup.apiextensions.k8s.io", nil))
	err := c.checkClusterScopedOwners(context.Background(), []*unstructured.Unstructured{crd}, "conduit")
	want := "CustomResourceDefinition authorizationpolicies.policy.conduit.io is still being deleted (by an earlier uninstall): wait until it is gone (`kubectl wait --for=delete customresourcedefinition/authorizationpolicies.policy.conduit.io --timeout=5m`), then install again"
	if err == nil || err.Error() != want {
		t.Errorf("err = %v\nwant %s", err, want)
	}
}

// TestMeshedPods: the pods an uninstall would strand are the running (or
// pending) meshed pods outside the control plane's namespace.
func TestMeshedPods(t *testing.T) {
	now := metav1.Now()
	pod := func(ns, name string, meshed bool, mod func(*corev1.Pod)) runtime.Object {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name}, Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		if meshed {
			p.Labels = map[string]string{contract.LabelProxyVersion: "v1"}
		}
		if mod != nil {
			mod(p)
		}
		return p
	}
	c := &Client{Kube: kubefake.NewClientset(
		pod("conduit", "conduit-controller-1", true, nil),
		pod("shop", "web-1", true, nil),
		pod("shop", "books-1", true, func(p *corev1.Pod) { p.Status.Phase = corev1.PodPending }),
		pod("shop", "plain-1", false, nil),
		pod("shop", "job-1", true, func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
		pod("shop", "old-1", true, func(p *corev1.Pod) { p.DeletionTimestamp = &now; p.Finalizers = []string{"x"} }),
		pod("books", "authors-1", true, nil),
		pod("gone", "web-1", true, nil), // in a namespace being deleted
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "gone", DeletionTimestamp: &now, Finalizers: []string{"kubernetes"}}},
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}},
	)}
	got, err := c.MeshedPods(context.Background(), "conduit")
	if err != nil {
		t.Fatal(err)
	}
	want := []types.NamespacedName{{Namespace: "books", Name: "authors-1"}, {Namespace: "shop", Name: "books-1"}, {Namespace: "shop", Name: "web-1"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("meshed pods (-want +got):\n%s", diff)
	}
	msg := (&MeshedPodsError{Pods: append(want, types.NamespacedName{Namespace: "shop", Name: "z-1"}), ProgName: "kubectl conduit"}).Error()
	wantMsg := "uninstall would leave 4 meshed pods (books/authors-1, shop/books-1, shop/web-1 and 1 more; namespaces books, shop) without the control plane their proxies renew certificates from and discover through: " +
		"uninject them first (`kubectl get deploy -n books -o yaml | kubectl conduit uninject - | kubectl apply -f -`, or remove the conduit.io/inject annotation and restart them), or pass --force"
	if msg != wantMsg {
		t.Errorf("error:\n got %s\nwant %s", msg, wantMsg)
	}
}

// A user who may not list pods is told how to go on.
func TestMeshedPodsForbidden(t *testing.T) {
	kube := kubefake.NewClientset()
	kube.PrependReactor("list", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New("no"))
	})
	_, err := (&Client{Kube: kube}).MeshedPods(context.Background(), "conduit")
	if err == nil || !strings.Contains(err.Error(), "pass --force") {
		t.Errorf("err = %v", err)
	}
}
