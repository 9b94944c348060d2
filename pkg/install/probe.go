package install

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/inject"
)

// injectorProbePrefix is the generateName of the pod ProbeInjector asks the
// API server to admit; nothing by that name is ever stored.
const injectorProbePrefix = "conduit-injector-probe-"

// NotInjectedError says the API server admitted a pod annotated for
// injection without the proxy, or could not call the injector at all: a pod
// created now would start unmeshed (failurePolicy Ignore) or be refused
// (Fail).
type NotInjectedError struct {
	Namespace string // where the probe pod was admitted
	Cause     string // the API server's error when it could not call the webhook
}

func (e *NotInjectedError) Error() string {
	if e.Cause != "" {
		return fmt.Sprintf("the API server cannot call the proxy injector for a pod in namespace %s: %s", e.Namespace, e.Cause)
	}
	return fmt.Sprintf("the API server admitted a pod annotated %s=enabled in namespace %s without the proxy: the proxy injector did not answer", contract.AnnotationInject, e.Namespace)
}

// ProbeInjector asks the API server to admit, as a server-side dry run, a pod
// annotated for injection in namespace ns, and returns nil when the proxy
// injector added the proxy. The dry run takes the path a ReplicaSet's pod
// takes, so it fails exactly when such a pod would start unmeshed: the API
// server calls the webhook through the controller's Service, and a controller
// pod that is Ready may not be reachable that way yet (kube-proxy programs
// the endpoint after readiness) or at all (a firewall between the API server
// and the pods). Nothing is stored.
//
// It returns a *NotInjectedError when the injector did not add the proxy,
// and any other error when the probe could not be made (the user may not
// create pods in ns, or another admission controller refused the pod).
func ProbeInjector(ctx context.Context, kube kubernetes.Interface, ns string) error {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: injectorProbePrefix,
			Namespace:    ns,
			Annotations:  map[string]string{contract.AnnotationInject: "enabled"},
		},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: "conduit-injector-probe"}}},
	}
	got, err := kube.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}, FieldManager: FieldManager})
	if err != nil {
		if webhookCallFailed(err) {
			return &NotInjectedError{Namespace: ns, Cause: err.Error()}
		}
		return fmt.Errorf("probing the proxy injector with a dry-run pod in namespace %s: %w", ns, explain(err))
	}
	if inject.Meshed(&got.Spec) {
		return nil
	}
	return &NotInjectedError{Namespace: ns}
}

// webhookCallFailed is true for the API server's error when a webhook with
// failurePolicy Fail could not be called (or answered garbage).
func webhookCallFailed(err error) bool {
	var status apierrors.APIStatus
	return errors.As(err, &status) && apierrors.IsInternalError(err) &&
		strings.Contains(status.Status().Message, "failed calling webhook")
}

// InjectorProbeNamespace picks where ProbeInjector should create its pod:
// "default" when the webhook's namespaceSelector covers it, else the first
// active namespace by name that it covers; "" when it covers none.
func InjectorProbeNamespace(ctx context.Context, kube kubernetes.Interface, sel *metav1.LabelSelector) (string, error) {
	selector := labels.Everything()
	if sel != nil {
		var err error
		if selector, err = metav1.LabelSelectorAsSelector(sel); err != nil {
			return "", fmt.Errorf("the proxy injector's namespaceSelector: %w", err)
		}
	}
	covered := func(ns *corev1.Namespace) bool {
		return ns.DeletionTimestamp == nil && selector.Matches(labels.Set(ns.Labels))
	}
	def, err := kube.CoreV1().Namespaces().Get(ctx, metav1.NamespaceDefault, metav1.GetOptions{})
	switch {
	case err == nil && covered(def):
		return def.Name, nil
	case err != nil && !apierrors.IsNotFound(err):
		return "", fmt.Errorf("reading namespace %s: %w", metav1.NamespaceDefault, explain(err))
	}
	list, err := kube.CoreV1().Namespaces().List(ctx, metav1.ListOptions{LabelSelector: selector.String()})
	if err != nil {
		return "", fmt.Errorf("listing namespaces: %w", explain(err))
	}
	var names []string
	for i := range list.Items {
		if covered(&list.Items[i]) {
			names = append(names, list.Items[i].Name)
		}
	}
	if len(names) == 0 {
		return "", nil
	}
	sort.Strings(names)
	return names[0], nil
}

// injectorWebhook is the first webhook of the MutatingWebhookConfiguration
// among objs, or nil when objs have none.
func injectorWebhook(objs []*unstructured.Unstructured) (*admissionregistrationv1.MutatingWebhook, error) {
	for _, obj := range objs {
		if obj.GetKind() != "MutatingWebhookConfiguration" {
			continue
		}
		var cfg admissionregistrationv1.MutatingWebhookConfiguration
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(obj.Object, &cfg); err != nil {
			return nil, fmt.Errorf("reading %s: %w", KeyOf(obj), err)
		}
		if len(cfg.Webhooks) > 0 {
			return &cfg.Webhooks[0], nil
		}
	}
	return nil, nil
}

// InjectorHint says where the API server's call to the injector of wh goes
// and what to look at when it does not arrive: the hint of `install --wait`
// and of check's injector probe.
func InjectorHint(wh *admissionregistrationv1.MutatingWebhook) string {
	svc := wh.ClientConfig.Service
	if svc == nil {
		return fmt.Sprintf("the API server calls the injector at %s: check that it can reach it", serviceOf(wh))
	}
	return fmt.Sprintf("the API server calls the injector through %s: check that the Service has ready endpoints (`kubectl -n %s get endpointslices -l kubernetes.io/service-name=%s`), that the API server can reach the controller's pods on their webhook port (a firewall between the control plane and the nodes blocks it), and the injector's log: `kubectl -n %s logs deploy/%s`",
		serviceOf(wh), svc.Namespace, svc.Name, svc.Namespace, svc.Name)
}

// serviceOf names the Service the API server calls wh through, or its URL.
func serviceOf(wh *admissionregistrationv1.MutatingWebhook) string {
	if svc := wh.ClientConfig.Service; svc != nil {
		port := int32(443)
		if svc.Port != nil {
			port = *svc.Port
		}
		return fmt.Sprintf("Service %s/%s port %d", svc.Namespace, svc.Name, port)
	}
	if wh.ClientConfig.URL != nil {
		return *wh.ClientConfig.URL
	}
	return "its clientConfig"
}
