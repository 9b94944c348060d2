package install

import (
	"context"
	"fmt"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
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
// last). Workloads are never in it: they do not carry the inventory labels.
func (c *Client) Uninstall(ctx context.Context, inv []*unstructured.Unstructured, report Reporter) error {
	return step(report, fmt.Sprintf("Deleting %d objects", len(inv)), func(detail func(string)) error {
		for _, obj := range inv {
			detail(KeyOf(obj).String())
			if err := c.Delete(ctx, obj); err != nil {
				return err
			}
		}
		return nil
	})
}
