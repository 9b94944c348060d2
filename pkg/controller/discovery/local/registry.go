// Package local is the discovery backend for `conduit demo` and tests: a
// registry file (YAML or JSON) lists services and their endpoints, and the
// backend re-reads it when it changes.
package local

import (
	"bytes"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"

	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// Registry is the registry file's content. An example:
//
//	services:
//	- name: web
//	  namespace: demo
//	  port: 80
//	  authorities: ["localhost:8080"]
//	  endpoints:
//	  - address: 127.0.0.1:41001
//	    identity: spiffe://cluster.local/ns/demo/sa/web
//	    labels: {pod: web-0, deployment: web, serviceaccount: web}
//	proxies:
//	- namespace: demo
//	  pod: web-0
//	  adminAddress: 127.0.0.1:41191
//	  identity: spiffe://cluster.local/ns/demo/sa/web
//	  labels: {deployment: web}
//
// A service answers to name.namespace.svc.cluster.local:port, name.namespace.svc:port,
// name.namespace:port, name:port from a proxy in the same namespace, every
// extra authority listed, and each endpoint's own address.
type Registry struct {
	Services []Service `json:"services"`
	// Proxies list the meshed workloads' proxies, so the controller's tap
	// and stats can reach their admin ports (there are no pods to list).
	Proxies []Proxy `json:"proxies,omitempty"`
}

// Proxy is one meshed workload's proxy.
type Proxy struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// AdminAddress is the proxy's admin listener, ip:port.
	AdminAddress string            `json:"adminAddress"`
	Identity     string            `json:"identity,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// Service is one port of a service.
type Service struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Port      uint16 `json:"port"`
	// Authorities are further host:port names for the service.
	Authorities []string `json:"authorities,omitempty"`
	// Labels are added to every endpoint's metrics, after namespace and service.
	Labels    map[string]string `json:"labels,omitempty"`
	Endpoints []Endpoint        `json:"endpoints"`
}

// Endpoint is one address serving the service.
type Endpoint struct {
	// Address is ip:port.
	Address string `json:"address"`
	// Identity is the SPIFFE ID of the proxy at Address; empty for an unmeshed endpoint.
	Identity string            `json:"identity,omitempty"`
	Weight   uint32            `json:"weight,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}

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
}

type serviceKey struct {
	namespace, name string
	port            uint16
}

type service struct {
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
	}
	var errs []error
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
		svc := &service{
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
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return ix, nil
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
