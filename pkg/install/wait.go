package install

import (
	"context"
	"errors"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

// WaitOptions bound waiting for readiness.
type WaitOptions struct {
	Timeout  time.Duration
	Interval time.Duration // poll interval; 0 means one second
	// SkipInjector waits for the Deployments only, not for the proxy
	// injector to answer a probe.
	SkipInjector bool
}

// WaitReady waits until every Deployment among objs has rolled out (the
// controller saw the latest spec and all replicas are updated and ready), and
// then until the proxy injector of objs' webhook adds the proxy to a pod the
// API server admits (ProbeInjector): a Ready controller is not yet a working
// injector, and a workload applied in between would start unmeshed.
func (c *Client) WaitReady(ctx context.Context, objs []*unstructured.Unstructured, opts WaitOptions, detail func(string)) error {
	var deploys []*unstructured.Unstructured
	for _, obj := range objs {
		if obj.GetKind() == "Deployment" {
			deploys = append(deploys, obj)
		}
	}
	var wh *admissionregistrationv1.MutatingWebhook
	if !opts.SkipInjector {
		var err error
		if wh, err = injectorWebhook(objs); err != nil {
			return err
		}
	}
	probe := &injectorWait{c: c, webhook: wh, detail: detail}
	return poll(ctx, opts, detail, func(ctx context.Context) (pending, hint string, err error) {
		pending, hint, err = c.rolloutPending(ctx, deploys)
		if err == nil && pending == "" {
			pending, hint, err = probe.pending(ctx)
		}
		return pending, hint, err
	})
}

// poll calls pending every opts.Interval (default one second), reporting
// what it says is pending to detail, until it says nothing is or fails, or
// opts.Timeout passes: then the error names what was pending and the hint
// (where to look).
func poll(ctx context.Context, opts WaitOptions, detail func(string), pending func(context.Context) (pending, hint string, err error)) error {
	interval := opts.Interval
	if interval <= 0 {
		interval = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, opts.Timeout)
	defer cancel()
	ticker := time.NewTicker(interval)
	defer ticker.Stop()
	for {
		what, hint, err := pending(ctx)
		if err != nil {
			return err
		}
		if what == "" {
			return nil
		}
		detail(what)
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return fmt.Errorf("timed out after %s: %s (%s, or raise --timeout)", opts.Timeout, what, hint)
			}
			return ctx.Err()
		case <-ticker.C:
		}
	}
}

// rolloutPending is what the first Deployment not rolled out waits for, and
// where to look; "" when all are.
func (c *Client) rolloutPending(ctx context.Context, deploys []*unstructured.Unstructured) (pending, hint string, err error) {
	for _, d := range deploys {
		msg, err := c.rolloutStatus(ctx, d.GetNamespace(), d.GetName())
		if err != nil || msg != "" {
			return msg, fmt.Sprintf("see `kubectl get pods -n %s`", d.GetNamespace()), err
		}
	}
	return "", "", nil
}

// injectorWait probes the proxy injector until it answers.
type injectorWait struct {
	c       *Client
	webhook *admissionregistrationv1.MutatingWebhook // nil: nothing (left) to wait for
	ns      string                                   // where to probe, once chosen
	detail  func(string)
}

// pending is "" once the injector added the proxy to a probe pod, or when it
// cannot be probed (said through detail); else what it waits for and where
// to look.
func (w *injectorWait) pending(ctx context.Context) (pending, hint string, err error) {
	if w.webhook == nil {
		return "", "", nil
	}
	if w.ns == "" {
		ns, err := InjectorProbeNamespace(ctx, w.c.Kube, w.webhook.NamespaceSelector)
		if err != nil {
			if ctx.Err() != nil {
				return "proxy injector: waiting", InjectorHint(w.webhook), nil // the caller reports the timeout
			}
			return "", "", err
		}
		if ns == "" {
			w.detail("the proxy injector covers no namespace to probe it in: not waiting for it")
			w.webhook = nil
			return "", "", nil
		}
		w.ns = ns
	}
	err = ProbeInjector(ctx, w.c.Kube, w.ns)
	var notInjected *NotInjectedError
	switch {
	case err == nil:
		w.webhook = nil
		return "", "", nil
	case errors.As(err, &notInjected):
		return "proxy injector: " + notInjected.Error(), InjectorHint(w.webhook), nil
	case ctx.Err() != nil:
		return "proxy injector: waiting", InjectorHint(w.webhook), nil
	}
	w.detail(fmt.Sprintf("not waiting for the proxy injector: %v", err))
	w.webhook = nil
	return "", "", nil
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
