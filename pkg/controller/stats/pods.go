package stats

import (
	"context"
	"slices"
	"strings"
)

// Pod is one workload instance the controller knows, meshed or not.
type Pod struct {
	Namespace string
	Name      string
	// AdminAddr is the proxy's admin server (host:port); empty when the pod
	// runs no proxy (uninjected, or its proxy has not started).
	AdminAddr string
	// Identity is the proxy's SPIFFE ID, when known.
	Identity string
	// Labels carry the pod's owners: "deployment", "serviceaccount", and
	// "service" (several services comma-separated).
	Labels map[string]string
	// Running is false for pods that are not (yet) running and for pods
	// being deleted.
	Running bool
}

// Meshed reports whether the pod runs a proxy that can be scraped.
// `conduit stat` counts a pod as meshed only if it is also Running.
func (p Pod) Meshed() bool { return p.AdminAddr != "" }

// Pods lists the pods to scrape and to report on. The kubernetes backend
// lists pods from an informer; the local one reads the demo registry.
type Pods interface {
	Pods(ctx context.Context) ([]Pod, error)
}

// Resources tells which resources of a type exist now, so that `stat`
// lists each (a deployment scaled to zero, a namespace without pods
// included) and not one deleted within the window. ok is false for a type
// it does not know; those rows come from the pods alone.
type Resources interface {
	Existing(t, ns string) (refs []Ref, ok bool, err error)
}

// PodsFunc adapts a function to Pods.
type PodsFunc func(ctx context.Context) ([]Pod, error)

// Pods calls f(ctx).
func (f PodsFunc) Pods(ctx context.Context) ([]Pod, error) { return f(ctx) }

// Resource types, canonical names.
const (
	TypeNamespace  = "namespace"
	TypeDeployment = "deployment"
	TypePod        = "pod"
	TypeService    = "service"
	TypeAuthority  = "authority"
)

var typeAliases = map[string]string{
	"namespace": TypeNamespace, "namespaces": TypeNamespace, "ns": TypeNamespace,
	"deployment": TypeDeployment, "deployments": TypeDeployment, "deploy": TypeDeployment,
	"pod": TypePod, "pods": TypePod, "po": TypePod,
	"service": TypeService, "services": TypeService, "svc": TypeService,
	"authority": TypeAuthority, "authorities": TypeAuthority, "au": TypeAuthority,
}

// CanonicalType maps a resource type or its short form (deploy, po, svc,
// ns, au) to its canonical name; ok is false for an unknown type.
func CanonicalType(t string) (string, bool) {
	c, ok := typeAliases[strings.ToLower(t)]
	return c, ok
}

// KnownTypes lists the canonical types, for error messages.
func KnownTypes() []string {
	return []string{TypeNamespace, TypeDeployment, TypePod, TypeService, TypeAuthority}
}

// OwnerNames returns the names of the resources of type t that own p
// (authority is not a pod owner and returns nil).
func (p Pod) OwnerNames(t string) []string {
	switch t {
	case TypeNamespace:
		return []string{p.Namespace}
	case TypePod:
		return []string{p.Name}
	case TypeDeployment:
		if d := p.Labels["deployment"]; d != "" {
			return []string{d}
		}
	case TypeService:
		var out []string
		for _, s := range strings.Split(p.Labels["service"], ",") {
			if s = strings.TrimSpace(s); s != "" && !slices.Contains(out, s) {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
