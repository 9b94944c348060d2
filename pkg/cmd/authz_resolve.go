package cmd

import (
	"context"
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// The workload kinds `conduit authz` takes, by canonical name.
const (
	kindDeployment  = "deployment"
	kindStatefulSet = "statefulset"
	kindDaemonSet   = "daemonset"
	kindReplicaSet  = "replicaset"
	kindJob         = "job"
	kindPod         = "pod"
)

// workloadKinds are the canonical kinds, in the order help and completion
// list them, with the short form kubectl knows.
var workloadKinds = []struct{ name, short string }{
	{kindDeployment, "deploy"},
	{kindStatefulSet, "sts"},
	{kindDaemonSet, "ds"},
	{kindReplicaSet, "rs"},
	{kindJob, ""},
	{kindPod, "po"},
}

// workloadKind maps a kind as kubectl spells it (deploy, deployments,
// Deployment, po, …) to its canonical name.
func workloadKind(s string) (string, bool) {
	s = strings.ToLower(s)
	for _, k := range workloadKinds {
		if s == k.name || s == k.name+"s" || (k.short != "" && s == k.short) {
			return k.name, true
		}
	}
	return "", false
}

// workloadKindList is "deployment (deploy), …, pod (po)" for messages.
func workloadKindList() string {
	var out []string
	for _, k := range workloadKinds {
		if k.short == "" {
			out = append(out, k.name)
		} else {
			out = append(out, k.name+" ("+k.short+")")
		}
	}
	return strings.Join(out, ", ")
}

// parseWorkload parses TYPE[/NAME] with TYPE a workload kind.
func parseWorkload(s string) (targetArg, error) {
	typ, name, _ := strings.Cut(s, "/")
	kind, ok := workloadKind(typ)
	if !ok || strings.Contains(name, "/") {
		return targetArg{}, fmt.Errorf("resource %q: %q is not a workload type; use TYPE[/NAME] with TYPE one of %s", s, typ, workloadKindList())
	}
	return targetArg{typ: kind, name: name}, nil
}

// workload is one workload and its live pods.
type workload struct {
	kind, name string
	pods       []*corev1.Pod // sorted by name
}

func (w workload) String() string { return w.kind + "/" + w.name }

// podGroup is pods made from one template: the policy of the first
// (representative) stands for all of them.
type podGroup struct {
	pod *corev1.Pod
	// template is the label that tells the group ("pod-template-hash=…"),
	// empty for a pod on its own.
	template string
	pods     []string
}

// templateLabels tell pods of one template apart from those of another:
// Deployments' ReplicaSets, StatefulSets' and DaemonSets' revisions, Jobs.
var templateLabels = []string{"pod-template-hash", "controller-revision-hash", "batch.kubernetes.io/controller-uid"}

// groups splits the workload's pods by template, in the order of their
// first pod's name.
func (w workload) groups() []podGroup {
	var out []podGroup
	byKey := map[string]int{}
	for _, p := range w.pods {
		key := ""
		for _, l := range templateLabels {
			if v, ok := p.Labels[l]; ok && w.kind != kindPod {
				key = l + "=" + v
				break
			}
		}
		if i, ok := byKey[key]; ok && key != "" {
			out[i].pods = append(out[i].pods, p.Name)
			continue
		}
		byKey[key] = len(out)
		out = append(out, podGroup{pod: p, template: key, pods: []string{p.Name}})
	}
	return out
}

// resolveWorkloads finds the workloads target names in ns (every one of
// its kind without a name) and their live pods.
func resolveWorkloads(ctx context.Context, kube kubernetes.Interface, ns string, target targetArg) ([]workload, error) {
	if target.typ == kindPod {
		return resolvePods(ctx, kube, ns, target.name)
	}
	objs, err := listWorkloads(ctx, kube, ns, target)
	if err != nil {
		return nil, fmt.Errorf("listing %ss in namespace %s: %w", target.typ, ns, err)
	}
	if target.name != "" && len(objs) == 0 {
		return nil, fmt.Errorf("%s %q not found in namespace %q: list them with `kubectl get %ss -n %s`, or name the namespace with -n", target.typ, target.name, ns, target.typ, ns)
	}
	out := make([]workload, 0, len(objs))
	for _, o := range objs {
		sel, err := metav1.LabelSelectorAsSelector(o.selector)
		if err != nil || o.selector == nil || sel.Empty() {
			return nil, fmt.Errorf("%s/%s has no usable pod selector: fix its spec.selector", target.typ, o.name)
		}
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
		if err != nil {
			return nil, fmt.Errorf("listing the pods of %s/%s: %w", target.typ, o.name, err)
		}
		out = append(out, workload{kind: target.typ, name: o.name, pods: livePods(pods.Items, sel)})
	}
	return out, nil
}

// selecting is a workload's name and pod selector.
type selecting struct {
	name     string
	selector *metav1.LabelSelector
}

// listWorkloads lists the workloads of target's kind in ns, only the one
// named when target has a name; sorted by name.
func listWorkloads(ctx context.Context, kube kubernetes.Interface, ns string, target targetArg) ([]selecting, error) {
	opts := metav1.ListOptions{}
	if target.name != "" {
		opts.FieldSelector = "metadata.name=" + target.name
	}
	var out []selecting
	switch apps := kube.AppsV1(); target.typ {
	case kindDeployment:
		l, err := apps.Deployments(ns).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, o := range l.Items {
			out = append(out, selecting{o.Name, o.Spec.Selector})
		}
	case kindStatefulSet:
		l, err := apps.StatefulSets(ns).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, o := range l.Items {
			out = append(out, selecting{o.Name, o.Spec.Selector})
		}
	case kindDaemonSet:
		l, err := apps.DaemonSets(ns).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, o := range l.Items {
			out = append(out, selecting{o.Name, o.Spec.Selector})
		}
	case kindReplicaSet:
		l, err := apps.ReplicaSets(ns).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, o := range l.Items {
			out = append(out, selecting{o.Name, o.Spec.Selector})
		}
	case kindJob:
		l, err := kube.BatchV1().Jobs(ns).List(ctx, opts)
		if err != nil {
			return nil, err
		}
		for _, o := range l.Items {
			out = append(out, selecting{o.Name, o.Spec.Selector})
		}
	}
	// Fake clients ignore field selectors.
	out = slices.DeleteFunc(out, func(o selecting) bool { return target.name != "" && o.name != target.name })
	slices.SortFunc(out, func(a, b selecting) int { return strings.Compare(a.name, b.name) })
	return out, nil
}

// resolvePods finds the pod name in ns, or every live pod of ns, each a
// workload of its own.
func resolvePods(ctx context.Context, kube kubernetes.Interface, ns, name string) ([]workload, error) {
	if name != "" {
		p, err := kube.CoreV1().Pods(ns).Get(ctx, name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("pod %q not found in namespace %q: list them with `kubectl get pods -n %s`, or name the namespace with -n", name, ns, ns)
		}
		if err != nil {
			return nil, fmt.Errorf("reading pod/%s: %w", name, err)
		}
		return []workload{{kind: kindPod, name: name, pods: []*corev1.Pod{p}}}, nil
	}
	list, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing pods in namespace %s: %w", ns, err)
	}
	var out []workload
	for _, p := range livePods(list.Items, labels.Everything()) {
		out = append(out, workload{kind: kindPod, name: p.Name, pods: []*corev1.Pod{p}})
	}
	return out, nil
}

// livePods are the pods that sel selects (fake clients do not filter) and
// that run or will: not finished, not being deleted; sorted by name.
func livePods(items []corev1.Pod, sel labels.Selector) []*corev1.Pod {
	var out []*corev1.Pod
	for i := range items {
		p := &items[i]
		if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed || !sel.Matches(labels.Set(p.Labels)) {
			continue
		}
		out = append(out, p)
	}
	slices.SortFunc(out, func(a, b *corev1.Pod) int { return strings.Compare(a.Name, b.Name) })
	return out
}

// containerPorts are the TCP ports the pod's containers declare, the
// proxy's own left out, sorted.
func containerPorts(p *corev1.Pod) []uint32 {
	var out []uint32
	for _, cs := range [][]corev1.Container{p.Spec.InitContainers, p.Spec.Containers} {
		for _, c := range cs {
			if c.Name == contract.ProxyContainerName {
				continue
			}
			for _, cp := range c.Ports {
				if cp.ContainerPort > 0 && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
					out = append(out, uint32(cp.ContainerPort))
				}
			}
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
