// Package local is the discovery backend for `conduit demo` and tests: a
// registry file (YAML or JSON) lists services and their endpoints, and the
// backend re-reads it when it changes.
package local

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// The registry file's schema is shared with `conduit demo` (which writes it)
// and the controller's stats (which read its proxies): it lives in contract.
type (
	// Registry is the registry file's content (see contract.Registry).
	Registry = contract.Registry
	// Proxy is one meshed workload's proxy.
	Proxy = contract.Proxy
	// Service is one port of a service.
	Service = contract.Service
	// Endpoint is one address serving the service.
	Endpoint = contract.Endpoint
	// Port is a named port of a proxy's pod.
	Port = contract.Port
	// Namespace is a namespace's labels and annotations.
	Namespace = contract.Namespace
)

// ParseRegistry decodes and validates a registry. Unknown fields are errors,
// so a typo does not silently drop an endpoint.
func ParseRegistry(data []byte) (Registry, error) {
	var r Registry
	if len(bytes.TrimSpace(data)) == 0 {
		return r, nil
	}
	if err := yaml.UnmarshalStrict(data, &r); err != nil {
		return Registry{}, err
	}
	_, err := newIndex(r, "cluster.local")
	return r, err
}

// WriteFile writes r to path atomically (a temporary file renamed over it),
// so the backend never reads half a registry.
func WriteFile(path string, r Registry) error {
	data, err := yaml.Marshal(r)
	if err != nil {
		return fmt.Errorf("encoding registry: %w", err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing registry: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing registry %s: %w", tmp.Name(), err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing registry %s: %w", tmp.Name(), err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing registry: %w", err)
	}
	return nil
}

// index is a registry ready for lookups. It is immutable once built.
type index struct {
	clusterDomain string
	services      map[serviceKey]*service
	aliases       map[string]*service // host:port
	endpoints     map[netip.AddrPort]endpointRef
	// kube are the services as Kubernetes Services (all their ports, their
	// annotations), by namespace and name, for outbound routing.
	kube map[types.NamespacedName]*corev1.Service
}

type serviceKey struct {
	namespace, name string
	port            uint16
}

type service struct {
	key       serviceKey
	labels    map[string]string
	endpoints map[netip.AddrPort]discovery.Endpoint
}

type endpointRef struct {
	svc *service
	ep  discovery.Endpoint
}

func newIndex(r Registry, clusterDomain string) (*index, error) {
	ix := &index{
		clusterDomain: clusterDomain,
		services:      make(map[serviceKey]*service),
		aliases:       make(map[string]*service),
		endpoints:     make(map[netip.AddrPort]endpointRef),
		kube:          make(map[types.NamespacedName]*corev1.Service),
	}
	var errs []error
	// annotated is where each Service's annotations were first given.
	annotated := map[string]string{}
	for i, s := range r.Services {
		where := fmt.Sprintf("services[%d] (%s.%s:%d)", i, s.Name, s.Namespace, s.Port)
		if _, ok := discovery.ParseServiceHost(s.Name+"."+s.Namespace, clusterDomain, ""); !ok || strings.Contains(s.Name, ".") {
			errs = append(errs, fmt.Errorf("%s: name and namespace must be DNS labels (lower-case letters, digits, '-')", where))
			continue
		}
		if s.Port == 0 {
			errs = append(errs, fmt.Errorf("%s: port is missing", where))
			continue
		}
		key := serviceKey{s.Namespace, s.Name, s.Port}
		if _, dup := ix.services[key]; dup {
			errs = append(errs, fmt.Errorf("%s: listed twice", where))
			continue
		}
		if err := ix.addKube(s, where, annotated); err != nil {
			errs = append(errs, err)
			continue
		}
		svc := &service{
			key:       key,
			labels:    map[string]string{"namespace": s.Namespace, "service": s.Name},
			endpoints: make(map[netip.AddrPort]discovery.Endpoint, len(s.Endpoints)),
		}
		for k, v := range s.Labels {
			svc.labels[k] = v
		}
		for j, e := range s.Endpoints {
			ap, err := netip.ParseAddrPort(e.Address)
			if err != nil || ap.Port() == 0 {
				errs = append(errs, fmt.Errorf("%s: endpoints[%d]: address %q is not ip:port", where, j, e.Address))
				continue
			}
			ap = netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
			if e.Identity != "" && !strings.HasPrefix(e.Identity, "spiffe://") {
				errs = append(errs, fmt.Errorf("%s: endpoints[%d]: identity %q is not a spiffe:// ID", where, j, e.Identity))
				continue
			}
			ep := discovery.Endpoint{Addr: ap, Identity: e.Identity, Weight: e.Weight, Labels: e.Labels}
			svc.endpoints[ap] = ep
			ix.endpoints[ap] = endpointRef{svc: svc, ep: ep}
		}
		for _, a := range s.Authorities {
			auth, err := discovery.ParseAuthority(a)
			if err != nil {
				errs = append(errs, fmt.Errorf("%s: authorities: %w", where, err))
				continue
			}
			ix.aliases[auth.String()] = svc
		}
		ix.services[key] = svc
	}
	for i, p := range r.Proxies {
		if p.Namespace == "" || p.Pod == "" {
			errs = append(errs, fmt.Errorf("proxies[%d]: namespace and pod are required", i))
		}
		if _, err := netip.ParseAddrPort(p.AdminAddress); err != nil {
			errs = append(errs, fmt.Errorf("proxies[%d] (%s/%s): adminAddress %q is not ip:port", i, p.Namespace, p.Pod, p.AdminAddress))
		}
		names := map[string]bool{}
		for j, port := range p.Ports {
			switch {
			case port.Name == "" || port.Port == 0:
				errs = append(errs, fmt.Errorf("proxies[%d] (%s/%s): ports[%d]: name and port are required", i, p.Namespace, p.Pod, j))
			case names[port.Name]:
				errs = append(errs, fmt.Errorf("proxies[%d] (%s/%s): ports[%d]: port name %q listed twice", i, p.Namespace, p.Pod, j, port.Name))
			}
			names[port.Name] = true
		}
	}
	namespaces := map[string]bool{}
	for i, ns := range r.Namespaces {
		switch {
		case ns.Name == "":
			errs = append(errs, fmt.Errorf("namespaces[%d]: name is required", i))
		case namespaces[ns.Name]:
			errs = append(errs, fmt.Errorf("namespaces[%d]: namespace %q listed twice", i, ns.Name))
		}
		namespaces[ns.Name] = true
	}
	for i, obj := range r.Policies {
		if err := checkObject(obj); err != nil {
			errs = append(errs, fmt.Errorf("policies[%d]: %w", i, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ix, nil
}

// addKube adds a registry entry (one port of a service) to the service's
// Kubernetes Service. An annotation given by two entries must have the
// same value in both (annotated says where each was first given).
func (ix *index) addKube(s Service, where string, annotated map[string]string) error {
	name := types.NamespacedName{Namespace: s.Namespace, Name: s.Name}
	ks := ix.kube[name]
	if ks == nil {
		ks = &corev1.Service{
			ObjectMeta: metav1.ObjectMeta{Namespace: s.Namespace, Name: s.Name},
			Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeClusterIP},
		}
	}
	for _, k := range slices.Sorted(maps.Keys(s.Annotations)) {
		v := s.Annotations[k]
		if old, ok := ks.Annotations[k]; ok && old != v {
			return fmt.Errorf("%s: annotation %s=%q differs from %q given by %s: a service's entries must agree", where, k, v, old, annotated[name.String()+" "+k])
		}
	}
	for k, v := range s.Annotations {
		if ks.Annotations == nil {
			ks.Annotations = map[string]string{}
		}
		if _, ok := ks.Annotations[k]; !ok {
			annotated[name.String()+" "+k] = where
		}
		ks.Annotations[k] = v
	}
	ks.Spec.Ports = append(ks.Spec.Ports, corev1.ServicePort{Port: int32(s.Port), Protocol: corev1.ProtocolTCP})
	ix.kube[name] = ks
	return nil
}

// checkObject checks the shape of a policy object: apiVersion, kind,
// metadata.name and metadata.namespace are strings, spec an object. What
// the object says is the inbound policy's to check (Options.OnLoad).
func checkObject(obj map[string]any) error {
	str := func(m map[string]any, key string) string {
		s, _ := m[key].(string)
		return s
	}
	meta, _ := obj["metadata"].(map[string]any)
	kind, name, ns := str(obj, "kind"), str(meta, "name"), str(meta, "namespace")
	if str(obj, "apiVersion") == "" || kind == "" || name == "" || ns == "" {
		return fmt.Errorf("apiVersion, kind, metadata.name and metadata.namespace are required (got kind %q, name %q, namespace %q)", kind, name, ns)
	}
	if _, ok := obj["spec"].(map[string]any); !ok {
		return fmt.Errorf("%s %s/%s: spec is missing or not an object", kind, ns, name)
	}
	return nil
}

// snapshot resolves a watch key against the index.
func (ix *index) snapshot(k key) discovery.Snapshot {
	if svc, ok := ix.aliases[k.authority.String()]; ok {
		return svc.snapshot()
	}
	if k.authority.IP.IsValid() {
		ref, ok := ix.endpoints[netip.AddrPortFrom(k.authority.IP, k.authority.Port)]
		if !ok {
			return discovery.Snapshot{Reason: fmt.Sprintf("no endpoint %s in the registry", k.authority)}
		}
		return discovery.Snapshot{
			Exists:    true,
			Labels:    ref.svc.labels,
			Endpoints: map[netip.AddrPort]discovery.Endpoint{ref.ep.Addr: ref.ep},
		}
	}
	name, ok := discovery.ParseServiceHost(k.authority.Host, ix.clusterDomain, k.namespace)
	if !ok || name.Hostname != "" {
		return discovery.Snapshot{Reason: fmt.Sprintf("%s is not a service in the registry", k.authority)}
	}
	svc, ok := ix.services[serviceKey{name.Namespace, name.Name, k.authority.Port}]
	if !ok {
		return discovery.Snapshot{Reason: fmt.Sprintf("no service %s.%s with port %d in the registry", name.Name, name.Namespace, k.authority.Port)}
	}
	return svc.snapshot()
}

func (s *service) snapshot() discovery.Snapshot {
	snap := discovery.Snapshot{Exists: true, Labels: s.labels, Endpoints: s.endpoints}
	if len(s.endpoints) == 0 {
		snap.Reason = "the service has no endpoints in the registry"
	}
	return snap
}
