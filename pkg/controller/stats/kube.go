package stats

import (
	"context"
	"fmt"
	"net"
	"sort"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	appslisters "k8s.io/client-go/listers/apps/v1"
	corelisters "k8s.io/client-go/listers/core/v1"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// ProxyVersionLabel marks an injected pod.
const ProxyVersionLabel = contract.LabelProxyVersion

// DefaultAdminPort is the proxy's admin port.
const DefaultAdminPort = 4191

// KubePods lists pods from informer caches: every pod that has not
// finished. A pod is Running while its phase is Running and it is not being
// deleted; it is meshed (scraped at podIP:AdminPort) while it is labelled
// conduit.io/proxy-version and its conduit-proxy container is running.
type KubePods struct {
	Pods     corelisters.PodLister
	Services corelisters.ServiceLister // optional: fills the "service" label
	// ReplicaSets and Namespaces (optional) tell which deployments and
	// namespaces exist (Existing).
	ReplicaSets appslisters.ReplicaSetLister
	Namespaces  corelisters.NamespaceLister
	// AdminPort defaults to DefaultAdminPort.
	AdminPort int
	// TrustDomain completes identities; default cluster.local.
	TrustDomain string
}

// List implements Pods (through PodsFunc(k.List)).
func (k KubePods) List(context.Context) ([]Pod, error) {
	pods, err := k.Pods.List(labels.Everything())
	if err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	var svcs []*corev1.Service
	if k.Services != nil {
		if svcs, err = k.Services.List(labels.Everything()); err != nil {
			return nil, fmt.Errorf("listing services: %w", err)
		}
	}
	port := k.AdminPort
	if port == 0 {
		port = DefaultAdminPort
	}
	td := k.TrustDomain
	if td == "" {
		td = "cluster.local"
	}
	out := make([]Pod, 0, len(pods))
	for _, p := range pods {
		if p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed {
			continue
		}
		sa := p.Spec.ServiceAccountName
		if sa == "" {
			sa = "default"
		}
		pod := Pod{
			Namespace: p.Namespace,
			Name:      p.Name,
			Running:   p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil,
			Labels:    map[string]string{"serviceaccount": sa},
		}
		if d := deploymentOf(p); d != "" {
			pod.Labels["deployment"] = d
		}
		if s := servicesOf(p, svcs); s != "" {
			pod.Labels["service"] = s
		}
		// A terminating pod's proxy is still scraped (its last traffic
		// counts) but the pod is no longer Running.
		if _, injected := p.Labels[ProxyVersionLabel]; injected && p.Status.PodIP != "" && proxyRunning(p) {
			pod.AdminAddr = net.JoinHostPort(p.Status.PodIP, strconv.Itoa(port))
			pod.Identity = "spiffe://" + td + "/ns/" + p.Namespace + "/sa/" + sa
		}
		out = append(out, pod)
	}
	return out, nil
}

// Existing implements Resources for deployments and services, in namespace
// ns ("" for all), and namespaces (all; their Refs have no namespace). A
// deployment is known by its ReplicaSets, which it keeps while scaled to
// zero and which the garbage collector deletes with it: no informer on
// Deployments (whole pod templates) is needed for their names.
func (k KubePods) Existing(t, ns string) ([]Ref, bool, error) {
	var out []Ref
	switch {
	case t == TypeNamespace && k.Namespaces != nil:
		nss, err := k.Namespaces.List(labels.Everything())
		if err != nil {
			return nil, false, fmt.Errorf("listing namespaces: %w", err)
		}
		for _, n := range nss {
			out = append(out, Ref{Type: TypeNamespace, Name: n.Name})
		}
	case t == TypeDeployment && k.ReplicaSets != nil:
		rss, err := k.ReplicaSets.List(labels.Everything())
		if err != nil {
			return nil, false, fmt.Errorf("listing replicasets: %w", err)
		}
		seen := map[Ref]bool{}
		for _, rs := range rss {
			if ns != "" && rs.Namespace != ns {
				continue
			}
			for _, o := range rs.OwnerReferences {
				r := Ref{Namespace: rs.Namespace, Type: TypeDeployment, Name: o.Name}
				if o.Kind == "Deployment" && o.Controller != nil && *o.Controller && !seen[r] {
					seen[r] = true
					out = append(out, r)
				}
			}
		}
	case t == TypeService && k.Services != nil:
		svcs, err := k.Services.List(labels.Everything())
		if err != nil {
			return nil, false, fmt.Errorf("listing services: %w", err)
		}
		for _, s := range svcs {
			if ns == "" || s.Namespace == ns {
				out = append(out, Ref{Namespace: s.Namespace, Type: TypeService, Name: s.Name})
			}
		}
	default:
		return nil, false, nil
	}
	return out, true, nil
}

// proxyRunning reports whether the pod's conduit-proxy container is running,
// as a native sidecar (an init container with restartPolicy Always) or as a
// regular container. An injected pod whose conduit-init failed, or whose
// proxy crashes, has none.
func proxyRunning(p *corev1.Pod) bool {
	for _, statuses := range [][]corev1.ContainerStatus{p.Status.InitContainerStatuses, p.Status.ContainerStatuses} {
		for _, cs := range statuses {
			if cs.Name == contract.ProxyContainerName && cs.State.Running != nil {
				return true
			}
		}
	}
	return false
}

// deploymentOf derives a pod's deployment from its ReplicaSet owner, whose
// name is the deployment's plus "-<pod-template-hash>".
func deploymentOf(p *corev1.Pod) string {
	for _, o := range p.OwnerReferences {
		if o.Kind != "ReplicaSet" || o.Controller == nil || !*o.Controller {
			continue
		}
		if h := p.Labels["pod-template-hash"]; h != "" {
			if d, ok := strings.CutSuffix(o.Name, "-"+h); ok {
				return d
			}
		}
		if i := strings.LastIndexByte(o.Name, '-'); i > 0 {
			return o.Name[:i]
		}
	}
	return ""
}

// servicesOf names the services in the pod's namespace whose selector
// matches it, comma-separated and sorted.
func servicesOf(p *corev1.Pod, svcs []*corev1.Service) string {
	var names []string
	for _, s := range svcs {
		if s.Namespace != p.Namespace || len(s.Spec.Selector) == 0 {
			continue
		}
		if labels.SelectorFromSet(s.Spec.Selector).Matches(labels.Set(p.Labels)) {
			names = append(names, s.Name)
		}
	}
	sort.Strings(names)
	return strings.Join(names, ",")
}
