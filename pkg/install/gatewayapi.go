package install

import (
	"bytes"
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/gateway-api/pkg/consts"

	"github.com/conduitmesh/conduit/manifests"
)

// GatewayAPIVersion is the Gateway API version whose standard channel
// install the CLI carries (manifests.GatewayAPIStandardInstall): the
// sigs.k8s.io/gateway-api module's, in go.mod.
const GatewayAPIVersion = consts.BundleVersion

// GatewayAPIBundleAnnotation is the annotation that carries a Gateway API
// CRD's version.
const GatewayAPIBundleAnnotation = consts.BundleVersionAnnotation

// GatewayAPIObjects are the objects of the Gateway API standard channel
// install, in upstream's order: the CRDs (GatewayClass, Gateway, HTTPRoute,
// GRPCRoute, ReferenceGrant, …), then the ValidatingAdmissionPolicy that
// refuses downgrades and its binding.
func GatewayAPIObjects() ([]*unstructured.Unstructured, error) {
	objs, err := DecodeObjects(bytes.NewReader(manifests.GatewayAPIStandardInstall))
	if err != nil {
		return nil, fmt.Errorf("reading the Gateway API install: %w", err)
	}
	return objs, nil
}

// establishTimeout bounds the wait for created CRDs to be served.
const establishTimeout = time.Minute

// InstallGatewayAPI creates the objects of the Gateway API install that do
// not exist and waits until the CRDs it created are served. Existing ones
// are never changed: another mesh or a gateway controller may own them,
// and a newer version must not be downgraded. Kinds the cluster does not
// serve (the ValidatingAdmissionPolicy before Kubernetes 1.30) are
// skipped. The objects carry no install labels: uninstall leaves them, and
// the routes users wrote, in place.
func (c *Client) InstallGatewayAPI(ctx context.Context, objs []*unstructured.Unstructured, detail func(string)) error {
	var created []*unstructured.Unstructured
	for _, obj := range objs {
		ri, _, err := c.resource(obj.GroupVersionKind(), obj.GetNamespace())
		if err != nil {
			return err
		}
		if ri == nil {
			detail(fmt.Sprintf("skipped %s: the cluster does not serve %s", KeyOf(obj), obj.GetAPIVersion()))
			continue
		}
		live, err := c.Get(ctx, obj)
		if err != nil {
			return err
		}
		if live == nil {
			_, err = ri.Create(ctx, obj, metav1.CreateOptions{FieldManager: FieldManager})
			if err == nil {
				detail(fmt.Sprintf("created %s", KeyOf(obj)))
				if obj.GetKind() == "CustomResourceDefinition" {
					created = append(created, obj)
				}
				continue
			}
			if !apierrors.IsAlreadyExists(err) {
				return fmt.Errorf("creating %s: %w", KeyOf(obj), explain(err))
			}
			if live, err = c.Get(ctx, obj); err != nil || live == nil {
				return err
			}
		}
		v := live.GetAnnotations()[GatewayAPIBundleAnnotation]
		if v == "" {
			v = "no " + GatewayAPIBundleAnnotation + " annotation"
		}
		detail(fmt.Sprintf("kept the existing %s (%s)", KeyOf(obj), v))
	}
	return c.waitEstablished(ctx, created, establishTimeout)
}

// waitEstablished waits until every CRD is Established (served).
func (c *Client) waitEstablished(ctx context.Context, crds []*unstructured.Unstructured, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for _, crd := range crds {
		for {
			live, err := c.Get(ctx, crd)
			if err != nil {
				return err
			}
			if live != nil && established(live) {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s is not established after %s", KeyOf(crd), timeout)
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
	}
	return nil
}

func established(crd *unstructured.Unstructured) bool {
	conds, _, _ := unstructured.NestedSlice(crd.Object, "status", "conditions")
	for _, c := range conds {
		if m, ok := c.(map[string]any); ok && m["type"] == "Established" && m["status"] == "True" {
			return true
		}
	}
	return false
}

// gatewayAPIStep is the install's and upgrade's step that creates the
// Gateway API objects that are absent.
func (c *Client) gatewayAPIStep(ctx context.Context, objs []*unstructured.Unstructured, report Reporter) error {
	return step(report, fmt.Sprintf("Installing the Gateway API %s CRDs where absent", GatewayAPIVersion), func(detail func(string)) error {
		return c.InstallGatewayAPI(ctx, objs, detail)
	})
}
