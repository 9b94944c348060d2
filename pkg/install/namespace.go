package install

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
)

// NamespaceCreatedKey is the key of ConfigMap conduit-config that records
// whether the install created its namespace ("true") or found it already
// there ("false"). A namespace that existed before may hold the user's
// objects: the install then leaves it alone (no labels, no annotations) and
// uninstall keeps it. Installs made before this key existed have no record;
// their namespace carries the inventory labels and uninstall deletes it.
const NamespaceCreatedKey = "namespaceCreated"

// NamespaceKey is the ObjectKey of namespace ns.
func NamespaceKey(ns string) ObjectKey {
	return ObjectKey{GroupKind: schema.GroupKind{Kind: "Namespace"}, Name: ns}
}

// NamespaceExists reports whether namespace ns exists; one still being
// deleted is a TerminatingError (nothing can be created in it).
func (c *Client) NamespaceExists(ctx context.Context, ns string) (bool, error) {
	live, err := c.Kube.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	switch {
	case err == nil && live.DeletionTimestamp != nil:
		return true, &TerminatingError{Key: NamespaceKey(ns)}
	case err == nil:
		return true, nil
	case apierrors.IsNotFound(err):
		return false, nil
	case apierrors.IsForbidden(err):
		// the same clear line as the permission check that follows would give
		return false, &PermissionError{Verb: "get", Resource: "namespaces", Where: "cluster-wide"}
	default:
		return false, fmt.Errorf("looking up namespace %s: %w", ns, explain(err))
	}
}

// recordNamespace writes into the rendered conduit-config whether the
// install created its namespace and, when it did not, takes the Namespace
// object out of objs, so that the install never applies to the user's
// namespace and the namespace is never in the inventory.
func recordNamespace(objs []*unstructured.Unstructured, created bool) ([]*unstructured.Unstructured, error) {
	out := objs[:0:0]
	for _, o := range objs {
		switch {
		case o.GetKind() == "Namespace" && o.GetAPIVersion() == "v1" && !created:
			continue
		case o.GetKind() == "ConfigMap" && o.GetName() == ConfigMapName:
			o = o.DeepCopy()
			if err := unstructured.SetNestedField(o.Object, fmt.Sprint(created), "data", NamespaceCreatedKey); err != nil {
				return nil, fmt.Errorf("recording whether the install created its namespace: %w", err)
			}
		}
		out = append(out, o)
	}
	return out, nil
}

// NamespaceRecord reads from the install in ns whether it created its
// namespace; recorded is false for an install older than the record (or
// none at all).
func (c *Client) NamespaceRecord(ctx context.Context, ns string) (created, recorded bool, err error) {
	cm, err := c.Kube.CoreV1().ConfigMaps(ns).Get(ctx, ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, false, nil
	}
	if err != nil {
		return false, false, fmt.Errorf("reading configmap %s/%s: %w", ns, ConfigMapName, explain(err))
	}
	v, ok := cm.Data[NamespaceCreatedKey]
	if !ok {
		return false, false, nil
	}
	return v == "true", true, nil
}

// KeepUserNamespace removes namespace ns from an uninstall inventory when
// the install recorded that it did not create it (it is not labelled then,
// but an older version may have labelled it). kept reports whether the
// namespace stays.
func (c *Client) KeepUserNamespace(ctx context.Context, ns string, inv []*unstructured.Unstructured) (_ []*unstructured.Unstructured, kept bool, err error) {
	created, recorded, err := c.NamespaceRecord(ctx, ns)
	if err != nil {
		return nil, false, err
	}
	if !recorded || created {
		return inv, false, nil
	}
	out := inv[:0:0]
	for _, o := range inv {
		if o.GetKind() == "Namespace" && o.GetName() == ns {
			continue
		}
		out = append(out, o)
	}
	return out, true, nil
}
