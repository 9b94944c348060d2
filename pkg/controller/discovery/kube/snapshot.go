package kube

import (
	"fmt"
	"net/netip"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// snapshot computes a key's state from the caches.
func (b *Backend) snapshot(k key) discovery.Snapshot {
	switch {
	case !b.synced.Load():
		return discovery.Snapshot{Reason: "kubernetes discovery is starting"}
	case k.external != "":
		return discovery.Snapshot{Reason: fmt.Sprintf("%s is not a service in this cluster", k.external)}
	case k.ip.IsValid():
		return b.ipSnapshot(k)
	}
	svc, err := b.services.Services(k.namespace).Get(k.service)
	if apierrors.IsNotFound(err) {
		return discovery.Snapshot{Reason: fmt.Sprintf("service %s/%s not found", k.namespace, k.service)}
	} else if err != nil {
		return discovery.Snapshot{Reason: err.Error()}
	}
	return b.serviceSnapshot(svc, k.port, k.hostname)
}

func (b *Backend) ipSnapshot(k key) discovery.Snapshot {
	if objs, _ := b.svcIndex.ByIndex(indexClusterIP, k.ip.String()); len(objs) > 0 {
		return b.serviceSnapshot(objs[0].(*corev1.Service), k.port, "")
	}
	objs, _ := b.podIndex.ByIndex(indexPodIP, k.ip.String())
	for _, o := range objs {
		pod := o.(*corev1.Pod)
		if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
			continue
		}
		ep := b.endpoint(netip.AddrPortFrom(k.ip, k.port), pod)
		return discovery.Snapshot{
			Exists:    true,
			Labels:    map[string]string{"namespace": pod.Namespace},
			Endpoints: map[netip.AddrPort]discovery.Endpoint{ep.Addr: ep},
		}
	}
	return discovery.Snapshot{Reason: fmt.Sprintf("no service or running pod has IP %s", k.ip)}
}

func (b *Backend) serviceSnapshot(svc *corev1.Service, port uint16, hostname string) discovery.Snapshot {
	name := svc.Namespace + "/" + svc.Name
	if svc.Spec.Type == corev1.ServiceTypeExternalName {
		return discovery.Snapshot{Reason: fmt.Sprintf("service %s is of type ExternalName (%s): resolve it with DNS", name, svc.Spec.ExternalName)}
	}
	snap := discovery.Snapshot{
		Exists:    true,
		Labels:    map[string]string{"namespace": svc.Namespace, "service": svc.Name},
		Endpoints: map[netip.AddrPort]discovery.Endpoint{},
	}
	headless := svc.Spec.ClusterIP == corev1.ClusterIPNone
	portName, found := "", false
	for _, p := range svc.Spec.Ports {
		if p.Port == int32(port) {
			portName, found = p.Name, true
			break
		}
	}
	if !found && !headless {
		snap.Reason = fmt.Sprintf("service %s has no port %d", name, port)
		return snap
	}

	slices, _ := b.sliceIndex.ByIndex(indexService, name)
	for _, o := range slices {
		slice := o.(*discoveryv1.EndpointSlice)
		if slice.AddressType != discoveryv1.AddressTypeIPv4 && slice.AddressType != discoveryv1.AddressTypeIPv6 {
			continue
		}
		// The EndpointSlice controller resolves a named target port per pod,
		// so the slice's port named like the service port is the one to dial.
		target, ok := uint16(0), false
		for _, p := range slice.Ports {
			if found && p.Name != nil && *p.Name == portName && p.Port != nil {
				target, ok = uint16(*p.Port), true
			} else if found && p.Name == nil && portName == "" && p.Port != nil {
				target, ok = uint16(*p.Port), true
			}
		}
		if !found {
			// A headless service without this port: pods are dialled on the port asked for.
			target, ok = port, true
		}
		if !ok {
			continue
		}
		for _, e := range slice.Endpoints {
			if !ready(e) || len(e.Addresses) == 0 {
				continue
			}
			if hostname != "" && (e.Hostname == nil || *e.Hostname != hostname) {
				continue
			}
			ip, err := netip.ParseAddr(e.Addresses[0])
			if err != nil {
				continue
			}
			addr := netip.AddrPortFrom(ip.Unmap(), target)
			var pod *corev1.Pod
			if ref := e.TargetRef; ref != nil && ref.Kind == "Pod" {
				ns := ref.Namespace
				if ns == "" {
					ns = slice.Namespace
				}
				pod, _ = b.pods.Pods(ns).Get(ref.Name)
			}
			snap.Endpoints[addr] = b.endpoint(addr, pod)
		}
	}
	if len(snap.Endpoints) == 0 {
		snap.Reason = fmt.Sprintf("service %s has no ready endpoints for port %d", name, port)
	}
	return snap
}

// ready reports whether an endpoint takes traffic. A nil condition means ready.
func ready(e discoveryv1.Endpoint) bool {
	return e.Conditions.Ready == nil || *e.Conditions.Ready
}

// endpoint describes addr served by pod (nil when the endpoint is not a pod
// the cache knows).
func (b *Backend) endpoint(addr netip.AddrPort, pod *corev1.Pod) discovery.Endpoint {
	ep := discovery.Endpoint{Addr: addr, Weight: 1, Labels: map[string]string{}}
	if pod == nil {
		return ep
	}
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	ep.Labels["pod"] = pod.Name
	ep.Labels["serviceaccount"] = sa
	if pod.Labels[ProxyVersionLabel] != "" {
		ep.Identity = discovery.SpiffeID(b.opts.TrustDomain, pod.Namespace, sa)
	}
	if owner := metav1.GetControllerOf(pod); owner != nil {
		switch owner.Kind {
		case "ReplicaSet":
			ep.Labels["replicaset"] = owner.Name
			if rs, err := b.replicaSets.ReplicaSets(pod.Namespace).Get(owner.Name); err == nil {
				if d := deploymentOf(rs); d != "" {
					ep.Labels["deployment"] = d
				}
			}
		case "StatefulSet":
			ep.Labels["statefulset"] = owner.Name
		case "DaemonSet":
			ep.Labels["daemonset"] = owner.Name
		case "Job":
			ep.Labels["job"] = owner.Name
		}
	}
	return ep
}

func deploymentOf(rs *appsv1.ReplicaSet) string {
	if o := metav1.GetControllerOf(rs); o != nil && o.Kind == "Deployment" {
		return o.Name
	}
	return ""
}
