package local

import (
	"cmp"
	"context"
	"maps"
	"reflect"
	"slices"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/tools/cache"

	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// Outbound routing (package routes) reads the discovery backend's
// Services. The local backend gives the registry's services as Kubernetes
// Services — every port listed for a name, its annotations — and tells
// the handlers added with AddServiceHandler, as an informer would, which
// Services a reload added, changed or removed.

// WaitSynced is for routes.Services: the registry is read by New, so the
// Services are there from the start.
func (b *Backend) WaitSynced(context.Context) error { return nil }

// Resolve says what an authority names, as Subscribe resolves it: a
// service's extra authority, else an IP address, else a service name
// (short names in the namespace of ctxToken), else an external name. An
// extra authority is resolved once, with the registry of the moment.
func (b *Backend) Resolve(authority, ctxToken string) (discovery.Target, error) {
	a, err := discovery.ParseAuthority(authority)
	if err != nil {
		return discovery.Target{}, err
	}
	b.mu.RLock()
	alias := b.ix.aliases[a.String()]
	b.mu.RUnlock()
	name, isName := discovery.ParseServiceHost(a.Host, b.opts.ClusterDomain, discovery.ParseContextToken(ctxToken).Namespace)
	switch {
	case alias != nil:
		return discovery.Target{Namespace: alias.key.namespace, Name: alias.key.name, Port: alias.key.port}, nil
	case a.IP.IsValid():
		return discovery.Target{IP: a.IP, Port: a.Port}, nil
	case isName:
		return discovery.Target{Namespace: name.Namespace, Name: name.Name, Hostname: name.Hostname, Port: a.Port}, nil
	}
	return discovery.Target{External: a.Host, Port: a.Port}, nil
}

// Service returns the Service a target names, nil when the registry has
// none (and for IP addresses: the registry has no cluster IPs). The
// object is shared: it must not be modified.
func (b *Backend) Service(t discovery.Target) *corev1.Service {
	if t.Name == "" {
		return nil
	}
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.ix.kube[types.NamespacedName{Namespace: t.Namespace, Name: t.Name}]
}

// AddServiceHandler adds h to the handlers told of the Services' changes:
// at once, every Service as an addition (in the initial list), then each
// reload's additions, updates and deletions. h must not block.
func (b *Backend) AddServiceHandler(h cache.ResourceEventHandler) error {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	b.handlers = append(b.handlers, h)
	b.mu.RLock()
	ix := b.ix
	b.mu.RUnlock()
	for _, name := range slices.SortedFunc(maps.Keys(ix.kube), compareNames) {
		h.OnAdd(ix.kube[name], true)
	}
	return nil
}

func compareNames(a, b types.NamespacedName) int {
	return cmp.Or(cmp.Compare(a.Namespace, b.Namespace), cmp.Compare(a.Name, b.Name))
}

// serviceChange is a Service before and after a reload (nil when absent).
type serviceChange struct{ old, new *corev1.Service }

// inheritServices makes next's Services that are unchanged since prev the
// same objects, gives the others a new resourceVersion, and returns the
// changes. prev is nil for the first registry. b.reloadMu is held (or b
// is not yet shared).
func (b *Backend) inheritServices(prev, next *index) []serviceChange {
	b.serviceGen++
	rv := strconv.FormatUint(b.serviceGen, 10)
	var changes []serviceChange
	for _, name := range slices.SortedFunc(maps.Keys(next.kube), compareNames) {
		svc := next.kube[name]
		var old *corev1.Service
		if prev != nil {
			old = prev.kube[name]
		}
		if old != nil && maps.Equal(old.Annotations, svc.Annotations) && reflect.DeepEqual(old.Spec, svc.Spec) {
			next.kube[name] = old
			continue
		}
		svc.ResourceVersion = rv
		changes = append(changes, serviceChange{old, svc})
	}
	if prev != nil {
		for _, name := range slices.SortedFunc(maps.Keys(prev.kube), compareNames) {
			if next.kube[name] == nil {
				changes = append(changes, serviceChange{prev.kube[name], nil})
			}
		}
	}
	return changes
}

// notifyServices tells the handlers of a reload's changes. b.reloadMu is held.
func (b *Backend) notifyServices(changes []serviceChange) {
	for _, h := range b.handlers {
		for _, c := range changes {
			switch {
			case c.old == nil:
				h.OnAdd(c.new, false)
			case c.new == nil:
				h.OnDelete(c.old)
			default:
				h.OnUpdate(c.old, c.new)
			}
		}
	}
}
