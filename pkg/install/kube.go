package install

import (
	"context"
	"errors"
	"fmt"

	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// FieldManager is the server-side apply field manager of every write.
const FieldManager = "conduit"

// Inventory labels: every object of an install carries both, so uninstall
// and prune find the install's objects with InventorySelector.
const (
	LabelPartOf         = "app.kubernetes.io/part-of"
	LabelControlPlaneNS = "conduit.io/control-plane-ns"
	LabelVersion        = "conduit.io/version"
	ConfigMapName       = "conduit-config"
	DefaultNamespace    = "conduit"
)

// InventorySelector selects the objects of the install in namespace ns.
func InventorySelector(ns string) string {
	return fmt.Sprintf("%s=conduit,%s=%s", LabelPartOf, LabelControlPlaneNS, ns)
}

// InventoryKinds are the kinds an install may contain, in any version of
// the chart; uninstall and prune list these by label.
var InventoryKinds = []schema.GroupVersionKind{
	{Version: "v1", Kind: "Namespace"},
	{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"},
	{Version: "v1", Kind: "ServiceAccount"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRole"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "ClusterRoleBinding"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "Role"},
	{Group: "rbac.authorization.k8s.io", Version: "v1", Kind: "RoleBinding"},
	{Version: "v1", Kind: "Secret"},
	{Version: "v1", Kind: "ConfigMap"},
	{Version: "v1", Kind: "Service"},
	{Group: "apps", Version: "v1", Kind: "Deployment"},
	{Group: "policy", Version: "v1", Kind: "PodDisruptionBudget"},
	{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "MutatingWebhookConfiguration"},
	{Group: "admissionregistration.k8s.io", Version: "v1", Kind: "ValidatingWebhookConfiguration"},
}

// Client is what the lifecycle needs from a cluster.
type Client struct {
	Dynamic dynamic.Interface
	Mapper  meta.RESTMapper
	Kube    kubernetes.Interface
}

// NewClient connects to the cluster of cfg and reads which kinds it serves.
func NewClient(cfg *rest.Config) (*Client, error) {
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the Kubernetes client: %w", err)
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("creating the dynamic client: %w", err)
	}
	groups, err := restmapper.GetAPIGroupResources(kube.Discovery())
	if err != nil {
		return nil, fmt.Errorf("cannot reach the Kubernetes API server at %s (check --kubeconfig and --context): %w", cfg.Host, explain(err))
	}
	return &Client{Dynamic: dyn, Mapper: restmapper.NewDiscoveryRESTMapper(groups), Kube: kube}, nil
}

// resource returns the dynamic client for obj's kind and namespace, and the
// mapping (nil, nil, nil when the kind is not served: nothing of it exists).
func (c *Client) resource(gvk schema.GroupVersionKind, ns string) (dynamic.ResourceInterface, *meta.RESTMapping, error) {
	m, err := c.Mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		if meta.IsNoMatchError(err) {
			return nil, nil, nil
		}
		return nil, nil, fmt.Errorf("mapping %s: %w", gvk.Kind, err)
	}
	if m.Scope.Name() == meta.RESTScopeNameNamespace {
		return c.Dynamic.Resource(m.Resource).Namespace(ns), m, nil
	}
	return c.Dynamic.Resource(m.Resource), m, nil
}

// Apply server-side applies obj as FieldManager and returns the result.
func (c *Client) Apply(ctx context.Context, obj *unstructured.Unstructured, dryRun, force bool) (*unstructured.Unstructured, error) {
	ri, _, err := c.resource(obj.GroupVersionKind(), obj.GetNamespace())
	if err != nil {
		return nil, err
	}
	if ri == nil {
		return nil, fmt.Errorf("applying %s: the cluster does not serve %s", KeyOf(obj), obj.GetAPIVersion())
	}
	data, err := obj.MarshalJSON()
	if err != nil {
		return nil, fmt.Errorf("encoding %s: %w", KeyOf(obj), err)
	}
	opts := metav1.PatchOptions{FieldManager: FieldManager, Force: &force}
	if dryRun {
		opts.DryRun = []string{metav1.DryRunAll}
	}
	out, err := ri.Patch(ctx, obj.GetName(), types.ApplyPatchType, data, opts)
	if err != nil {
		return nil, fmt.Errorf("applying %s: %w", KeyOf(obj), explain(err))
	}
	return out, nil
}

// Get returns the live object for key's kind (nil when it does not exist).
func (c *Client) Get(ctx context.Context, obj *unstructured.Unstructured) (*unstructured.Unstructured, error) {
	ri, _, err := c.resource(obj.GroupVersionKind(), obj.GetNamespace())
	if err != nil || ri == nil {
		return nil, err
	}
	live, err := ri.Get(ctx, obj.GetName(), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", KeyOf(obj), explain(err))
	}
	return live, nil
}

// Inventory lists every object labelled as part of the install in ns, in
// delete order (webhook first, namespace last).
func (c *Client) Inventory(ctx context.Context, ns string) ([]*unstructured.Unstructured, error) {
	sel := InventorySelector(ns)
	var objs []*unstructured.Unstructured
	for _, gvk := range InventoryKinds {
		ri, m, err := c.resource(gvk, "")
		if err != nil {
			return nil, err
		}
		if ri == nil {
			continue
		}
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ri = c.Dynamic.Resource(m.Resource).Namespace(ns)
		}
		list, err := ri.List(ctx, metav1.ListOptions{LabelSelector: sel})
		if err != nil {
			return nil, fmt.Errorf("listing %s with %s: %w", m.Resource.Resource, sel, explain(err))
		}
		for i := range list.Items {
			item := &list.Items[i]
			item.SetAPIVersion(gvk.GroupVersion().String())
			item.SetKind(gvk.Kind)
			objs = append(objs, item)
		}
	}
	SortForDelete(objs)
	return objs, nil
}

// Delete deletes obj (background propagation); a missing object is fine.
func (c *Client) Delete(ctx context.Context, obj *unstructured.Unstructured) error {
	ri, _, err := c.resource(obj.GroupVersionKind(), obj.GetNamespace())
	if err != nil || ri == nil {
		return err
	}
	policy := metav1.DeletePropagationBackground
	err = ri.Delete(ctx, obj.GetName(), metav1.DeleteOptions{PropagationPolicy: &policy})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting %s: %w", KeyOf(obj), explain(err))
	}
	return nil
}

// CheckPermissions asks the API server (SelfSubjectAccessReview) whether
// the caller may perform each verb on the kinds of objs, and names the first
// one it may not, so nothing is half-applied.
func (c *Client) CheckPermissions(ctx context.Context, objs []*unstructured.Unstructured, verbs ...string) error {
	seen := map[string]bool{}
	for _, obj := range objs {
		_, m, err := c.resource(obj.GroupVersionKind(), obj.GetNamespace())
		if err != nil {
			return err
		}
		if m == nil {
			continue
		}
		ns := ""
		if m.Scope.Name() == meta.RESTScopeNameNamespace {
			ns = obj.GetNamespace()
		}
		for _, verb := range verbs {
			key := verb + " " + m.Resource.String() + " " + ns
			if seen[key] {
				continue
			}
			seen[key] = true
			review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
				ResourceAttributes: &authorizationv1.ResourceAttributes{
					Namespace: ns, Verb: verb, Group: m.Resource.Group, Resource: m.Resource.Resource,
				},
			}}
			res, err := c.Kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
			if err != nil {
				return fmt.Errorf("checking permission to %s %s: %w", verb, m.Resource.GroupResource(), explain(err))
			}
			if !res.Status.Allowed {
				where := "cluster-wide"
				if ns != "" {
					where = "in namespace " + ns
				}
				return &PermissionError{Verb: verb, Resource: m.Resource.GroupResource().String(), Where: where}
			}
		}
	}
	return nil
}

// PermissionError says which permission the caller lacks.
type PermissionError struct{ Verb, Resource, Where string }

func (e *PermissionError) Error() string {
	return fmt.Sprintf("you are not allowed to %s %s %s: Conduit's control plane needs cluster-admin level permissions; ask a cluster administrator, or run `conduit check --pre`", e.Verb, e.Resource, e.Where)
}

// explain shortens API errors to their message.
func explain(err error) error {
	var se apierrors.APIStatus
	if errors.As(err, &se) {
		return errors.New(se.Status().Message)
	}
	return err
}
