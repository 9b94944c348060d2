package kube

import (
	"fmt"
	"net/netip"

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
	if svc := b.Service(discovery.Target{IP: k.ip}); svc != nil {
		return b.serviceSnapshot(svc, k.port, "")
	}
	objs, _ := b.podIndex.ByIndex(indexPodIP, k.ip.String())
	for _, o := range objs {
		pod := o.(*corev1.Pod)
		if pod.Status.Phase != corev1.PodRunning || pod.DeletionTimestamp != nil {
			continue
		}
		ep := b.newMemo().endpoint(netip.AddrPortFrom(k.ip, k.port), pod)
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
	m := b.newMemo()
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
			snap.Endpoints[addr] = m.endpoint(addr, pod)
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

// memo remembers, while one snapshot is computed, what its endpoints share:
// a service's pods mostly have one service account and one ReplicaSet.
type memo struct {
	b           *Backend
	identities  map[string]string // namespace/serviceaccount -> SPIFFE ID
	deployments map[string]string // namespace/replicaset -> deployment ("" when none)
}

func (b *Backend) newMemo() *memo {
	return &memo{b: b, identities: map[string]string{}, deployments: map[string]string{}}
}

// endpoint describes addr served by pod (nil when the endpoint is not a pod
// the cache knows).
func (m *memo) endpoint(addr netip.AddrPort, pod *corev1.Pod) discovery.Endpoint {
	ep := discovery.Endpoint{Addr: addr, Weight: 1}
	if pod == nil {
		ep.Labels = map[string]string{}
		return ep
	}
	ep.Labels = make(map[string]string, 4)
	sa := pod.Spec.ServiceAccountName
	if sa == "" {
		sa = "default"
	}
	ep.Labels["pod"] = pod.Name
	ep.Labels["serviceaccount"] = sa
	if pod.Labels[ProxyVersionLabel] != "" {
		k := pod.Namespace + "/" + sa
		id, ok := m.identities[k]
		if !ok {
			id = discovery.SpiffeID(m.b.opts.TrustDomain, pod.Namespace, sa)
			m.identities[k] = id
		}
		ep.Identity = id
	}
	if kind, name := controllerOf(pod.OwnerReferences); kind != "" {
		switch kind {
		case "ReplicaSet":
			ep.Labels["replicaset"] = name
			if d := m.deployment(pod.Namespace, name); d != "" {
				ep.Labels["deployment"] = d
			}
		case "StatefulSet":
			ep.Labels["statefulset"] = name
		case "DaemonSet":
			ep.Labels["daemonset"] = name
		case "Job":
			ep.Labels["job"] = name
		}
	}
	return ep
}

// deployment returns the Deployment that controls a ReplicaSet, or "".
func (m *memo) deployment(namespace, replicaSet string) string {
	k := namespace + "/" + replicaSet
	d, ok := m.deployments[k]
	if !ok {
		if rs, err := m.b.replicaSets.ReplicaSets(namespace).Get(replicaSet); err == nil {
			if kind, name := controllerOf(rs.OwnerReferences); kind == "Deployment" {
				d = name
			}
		}
		m.deployments[k] = d
	}
	return d
}

// controllerOf returns the kind and name of the controlling owner, if any.
func controllerOf(refs []metav1.OwnerReference) (kind, name string) {
	for _, r := range refs {
		if r.Controller != nil && *r.Controller {
			return r.Kind, r.Name
		}
	}
	return "", ""
}
