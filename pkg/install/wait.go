package install

import (
	"context"
	"errors"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// WaitOptions bound waiting for readiness.
type WaitOptions struct {
	Timeout  time.Duration
	Interval time.Duration // poll interval; 0 means one second
}

// WaitReady waits until every Deployment among objs has rolled out: the
// controller saw the latest spec and all replicas are updated and ready.
func (c *Client) WaitReady(ctx context.Context, objs []*unstructured.Unstructured, opts WaitOptions, detail func(string)) error {
	interval := opts.Interval
	if interval <= 0 {
		interval = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	var deploys []*unstructured.Unstructured
	for _, obj := range objs {
		if obj.GetKind() == "Deployment" {
			deploys = append(deploys, obj)
		}
	}
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		pending := ""
		for _, d := range deploys {
			msg, err := c.rolloutStatus(ctx, d.GetNamespace(), d.GetName())
			if err != nil {
				return err
			}
			if msg != "" {
				pending = msg
				break
			}
		}
		if pending == "" {
			return nil
		}
		detail(pending)
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("timed out after %s: %s (see `kubectl get pods -n %s`, or raise --timeout)", opts.Timeout, pending, deploys[0].GetNamespace())
			}
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// rolloutStatus is "" when the Deployment is rolled out, else what it waits for.
func (c *Client) rolloutStatus(ctx context.Context, ns, name string) (string, error) {
	d, err := c.Kube.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Sprintf("deployment %s/%s does not exist yet", ns, name), nil
	}
	if err != nil {
		if ctx.Err() != nil {
			return "waiting", nil // the select reports the timeout
		}
		return "", fmt.Errorf("reading deployment %s/%s: %w", ns, name, explain(err))
	}
	return deploymentPending(d), nil
}

func deploymentPending(d *appsv1.Deployment) string {
	want := int32(1)
	if d.Spec.Replicas != nil {
		want = *d.Spec.Replicas
	}
	s := d.Status
	switch {
	case s.ObservedGeneration < d.Generation:
		return fmt.Sprintf("%s: waiting for the deployment controller", d.Name)
	case s.UpdatedReplicas < want:
		return fmt.Sprintf("%s: %d of %d replicas updated", d.Name, s.UpdatedReplicas, want)
	case s.Replicas > s.UpdatedReplicas:
		return fmt.Sprintf("%s: %d old replicas terminating", d.Name, s.Replicas-s.UpdatedReplicas)
	case s.ReadyReplicas < want || s.AvailableReplicas < want:
		return fmt.Sprintf("%s: %d of %d replicas ready", d.Name, s.ReadyReplicas, want)
	}
	return ""
}
