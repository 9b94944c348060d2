package kube

import (
	"net/netip"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/client-go/tools/cache"
)

// podAffected selects the watched keys a pod change can alter: the services
// whose EndpointSlices point at the pod (by name or by cluster IP) and the
// pod's own IPs. Pods change often (status, labels), so refreshing every key
// of the namespace on each pod event would not scale.
func (b *Backend) podAffected(obj any) func(key) bool {
	if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = d.Obj
	}
	pod, ok := obj.(*corev1.Pod)
	if !ok {
		return func(key) bool { return false }
	}
	services := map[string]bool{}
	slices, _ := b.sliceIndex.ByIndex(cache.NamespaceIndex, pod.Namespace)
	for _, o := range slices {
		es, ok := o.(*discoveryv1.EndpointSlice)
		if !ok {
			continue
		}
		for _, e := range es.Endpoints {
			if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" && ref.Name == pod.Name {
				services[es.Labels[discoveryv1.LabelServiceName]] = true
				break
			}
		}
	}
	ips := map[netip.Addr]bool{}
	addIPs := func(ss []string) {
		for _, s := range ss {
			if ip, err := netip.ParseAddr(s); err == nil {
				ips[ip.Unmap()] = true
			}
		}
	}
	podAddrs, _ := podIPs(pod)
	addIPs(podAddrs)
	for name := range services {
		if svc, err := b.services.Services(pod.Namespace).Get(name); err == nil {
			clusterIPs, _ := serviceClusterIPs(svc)
			addIPs(clusterIPs)
		}
	}
	return func(k key) bool {
		if k.ip.IsValid() {
			return ips[k.ip]
		}
		return k.namespace == pod.Namespace && services[k.service]
	}
}
