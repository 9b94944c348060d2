package install

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// ForReview strips server-owned fields so objects print like manifests.
func ForReview(objs []*unstructured.Unstructured) []*unstructured.Unstructured {
	out := make([]*unstructured.Unstructured, len(objs))
	for i, obj := range objs {
		out[i] = &unstructured.Unstructured{Object: normalize(obj)}
	}
	return out
}

// Uninstall deletes the inventory (from Inventory: webhook first, namespace
// last) and, with wait, waits until every deleted object is gone, so that an
// install that follows finds none of them terminating. Workloads are never in
// the inventory: they do not carry its labels.
//
// Before deleting a CustomResourceDefinition it lists its custom resources
// (readyCustomResources): the API server builds a CRD's storage lazily, and
// a CRD deleted before anything read its resources (install --wait=false, a
// controller that never started) finds that storage still initialising; the
// API server's CRD finalizer then fails, and can stall for minutes (see
// retryCRDCleanup).
func (c *Client) Uninstall(ctx context.Context, inv []*unstructured.Unstructured, wait *WaitOptions, report Reporter) error {
	err := step(report, fmt.Sprintf("Deleting %d objects", len(inv)), func(detail func(string)) error {
		for _, obj := range inv {
			detail(KeyOf(obj).String())
			if isCRD(obj) {
				c.readyCustomResources(ctx, obj)
			}
			if err := c.Delete(ctx, obj); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil || wait == nil {
		return err
	}
	return step(report, fmt.Sprintf("Waiting for the deleted objects to be gone (timeout %s)", wait.Timeout), func(detail func(string)) error {
		return c.WaitDeleted(ctx, inv, *wait, detail)
	})
}

// WaitDeleted waits until none of objs exists any more (an object of the same
// name but another UID is a new one, not a leftover). A CRD whose cleanup
// failed is retried (retryCRDCleanup).
func (c *Client) WaitDeleted(ctx context.Context, objs []*unstructured.Unstructured, opts WaitOptions, detail func(string)) error {
	retried := map[string]time.Time{}
	return poll(ctx, opts, detail, func(ctx context.Context) (string, string, error) {
		return c.deletePending(ctx, objs, retried)
	})
}

// deletePending describes the first object of objs that still exists, and
// where to look; "" when none does.
func (c *Client) deletePending(ctx context.Context, objs []*unstructured.Unstructured, retried map[string]time.Time) (pending, hint string, err error) {
	for _, obj := range objs {
		live, err := c.Get(ctx, obj)
		if err != nil {
			return "", "", err
		}
		if live == nil || (obj.GetUID() != "" && live.GetUID() != obj.GetUID()) {
			continue
		}
		key := KeyOf(obj)
		if isCRD(live) && crdCleanupFailed(live) && time.Since(retried[live.GetName()]) >= crdRetryInterval {
			retried[live.GetName()] = time.Now()
			if err := c.retryCRDCleanup(ctx, live); err != nil {
				return "", "", err
			}
		}
		hint = fmt.Sprintf("everything is deleted and finishes terminating in the cluster: see `kubectl get %s`", kubectlName(key))
		if why := terminatingMessage(live); why != "" {
			return fmt.Sprintf("%s is terminating: %s", key, why), hint, nil
		}
		return fmt.Sprintf("%s is terminating", key), hint, nil
	}
	return "", "", nil
}

// kubectlName is how kubectl names the object of key (kind/name, with -n).
func kubectlName(key ObjectKey) string {
	s := strings.ToLower(key.GroupKind.Kind) + "/" + key.Name
	if key.Namespace != "" {
		s += " -n " + key.Namespace
	}
	return s
}

// terminatingMessage is what the API server says holds a terminating
// namespace or CRD (its conditions), "" when it says nothing.
func terminatingMessage(live *unstructured.Unstructured) string {
	conds, _, _ := unstructured.NestedSlice(live.Object, "status", "conditions")
	var msgs []string
	for _, c := range conds {
		m, _ := c.(map[string]any)
		t, _ := m["type"].(string)
		status, _ := m["status"].(string)
		msg, _ := m["message"].(string)
		if status != "True" || msg == "" {
			continue
		}
		switch {
		case isCRD(live) && t == "Terminating",
			live.GetKind() == "Namespace" && strings.HasPrefix(t, "Namespace"):
			msgs = append(msgs, msg)
		}
	}
	return strings.Join(msgs, "; ")
}

var crdResource = schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}

func isCRD(obj *unstructured.Unstructured) bool {
	return obj.GetKind() == "CustomResourceDefinition" && obj.GroupVersionKind().Group == crdResource.Group
}

// readyCustomResources lists the custom resources of crd, all namespaces.
// That makes the API server build the CRD's storage if nothing has yet, and
// client-go retries the 429 ("storage is (re)initializing") it answers until
// that storage is ready, so the CRD finalizer's own list, after the delete,
// succeeds the first time. Best effort: a failure here shows, at worst, as a
// slower delete.
func (c *Client) readyCustomResources(ctx context.Context, crd *unstructured.Unstructured) {
	gvr, ok := customResource(crd)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, _ = c.Dynamic.Resource(gvr).List(ctx, metav1.ListOptions{})
}

// customResource is the resource crd serves (its storage version, else the
// first served one).
func customResource(crd *unstructured.Unstructured) (schema.GroupVersionResource, bool) {
	group, _, _ := unstructured.NestedString(crd.Object, "spec", "group")
	plural, _, _ := unstructured.NestedString(crd.Object, "spec", "names", "plural")
	versions, _, _ := unstructured.NestedSlice(crd.Object, "spec", "versions")
	version := ""
	for _, v := range versions {
		m, _ := v.(map[string]any)
		name, _ := m["name"].(string)
		if storage, _ := m["storage"].(bool); storage {
			version = name
			break
		}
		if served, _ := m["served"].(bool); served && version == "" {
			version = name
		}
	}
	if group == "" || plural == "" || version == "" {
		return schema.GroupVersionResource{}, false
	}
	return schema.GroupVersionResource{Group: group, Version: version, Resource: plural}, true
}

// crdCleanupFailed reports whether the API server's CRD finalizer said it
// failed to delete crd's custom resources ("InstanceDeletionFailed": it
// could not list or delete them; "InstanceDeletionCheck": they were not gone
// within its minute).
func crdCleanupFailed(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		m, _ := c.(map[string]any)
		if m["type"] == "Terminating" && m["status"] == "True" &&
			(m["reason"] == "InstanceDeletionFailed" || m["reason"] == "InstanceDeletionCheck") {
			return true
		}
	}
	return false
}

// AnnotationCleanupRetry is set on a terminating CRD by retryCRDCleanup.
const AnnotationCleanupRetry = "conduit.io/cleanup-retry"

// crdRetryInterval spaces retryCRDCleanup's nudges of one CRD.
const crdRetryInterval = 5 * time.Second

// retryCRDCleanup works around a stall of the API server's CRD finalizer
// (apiextensions-apiserver, pkg/controller/finalizer): when its cleanup
// fails it records the failure in the CRD's Terminating condition and
// retries a few milliseconds later; if its informer has not yet seen its own
// status write, that retry's write conflicts and is dropped in the
// expectation of the next update event, and the events that follow are
// ignored because they only change the Terminating condition. The CRD then
// waits for the informer's resync, up to five minutes. Readying the
// storage and changing an annotation (an update that is not the
// condition's) makes the finalizer try again at once.
func (c *Client) retryCRDCleanup(ctx context.Context, crd *unstructured.Unstructured) error {
	c.readyCustomResources(ctx, crd)
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, AnnotationCleanupRetry, time.Now().UTC().Format(time.RFC3339Nano))
	_, err := c.Dynamic.Resource(crdResource).Patch(ctx, crd.GetName(), types.MergePatchType, []byte(patch), metav1.PatchOptions{FieldManager: FieldManager})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("retrying the deletion of %s: %w", KeyOf(crd), explain(err))
	}
	return nil
}

// MeshedPods lists the pods outside the control plane's namespace ns that
// run Conduit's proxy (labelled conduit.io/proxy-version), not finished and
// not being deleted, nor in a namespace being deleted: an uninstall would
// leave them without the control plane their proxies renew certificates
// from and discover through.
func (c *Client) MeshedPods(ctx context.Context, ns string) ([]types.NamespacedName, error) {
	leaving := map[string]bool{}
	if nss, err := c.Kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{}); err == nil {
		for _, n := range nss.Items {
			leaving[n.Name] = n.DeletionTimestamp != nil
		}
	} // else every namespace stays, as far as we know
	pods, err := c.Kube.CoreV1().Pods("").List(ctx, metav1.ListOptions{LabelSelector: contract.LabelProxyVersion})
	if err != nil {
		if apierrors.IsForbidden(err) {
			return nil, fmt.Errorf("cannot list pods to find the meshed ones (%w): pass --force to uninstall without looking", explain(err))
		}
		return nil, fmt.Errorf("listing meshed pods: %w", explain(err))
	}
	var out []types.NamespacedName
	for _, p := range pods.Items {
		if p.Namespace == ns || leaving[p.Namespace] || p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		out = append(out, types.NamespacedName{Namespace: p.Namespace, Name: p.Name})
	}
	slices.SortFunc(out, func(a, b types.NamespacedName) int { return strings.Compare(a.String(), b.String()) })
	return out, nil
}

// MeshedPodsError refuses an uninstall that would leave meshed pods behind.
type MeshedPodsError struct {
	Pods     []types.NamespacedName // sorted
	ProgName string                 // how the user runs the CLI
}

func (e *MeshedPodsError) Error() string {
	const shown = 3
	var names, namespaces []string
	for i, p := range e.Pods {
		if i < shown {
			names = append(names, p.String())
		}
		if !slices.Contains(namespaces, p.Namespace) {
			namespaces = append(namespaces, p.Namespace)
		}
	}
	list := strings.Join(names, ", ")
	if more := len(e.Pods) - shown; more > 0 {
		list += fmt.Sprintf(" and %d more", more)
	}
	return fmt.Sprintf("uninstall would leave %d meshed pods (%s; namespaces %s) without the control plane their proxies renew certificates from and discover through: uninject them first (`kubectl get deploy -n %s -o yaml | %s uninject - | kubectl apply -f -`, or remove the conduit.io/inject annotation and restart them), or pass --force",
		len(e.Pods), list, strings.Join(namespaces, ", "), namespaces[0], e.ProgName)
}
