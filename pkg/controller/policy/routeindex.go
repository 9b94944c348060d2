package policy

import (
	"slices"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/tools/cache"
)

// The Index's informers of HTTPRoutes and GRPCRoutes are also those of
// outbound routing (package routes): one watch of each resource. These
// indexes find the routes that name a Service, as a parent or as a
// backend; the keys are "namespace/name".
const (
	indexParentService  = "parentService"
	indexBackendService = "backendService"
)

// RouteResources are the Gateway API route resources the Index watches when
// the API server serves them.
var RouteResources = []schema.GroupVersionResource{HTTPRoutesResource, GRPCRoutesResource}

var routeIndexers = cache.Indexers{
	indexParentService: func(obj any) ([]string, error) {
		return ServiceParents(obj), nil
	},
	indexBackendService: func(obj any) ([]string, error) {
		return serviceBackends(obj), nil
	},
}

// ServiceParents returns the "namespace/name" of the Services a route
// (an unstructured HTTPRoute or GRPCRoute) names as parents.
func ServiceParents(obj any) []string {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil
	}
	refs, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")
	// A parentRef's group defaults to the Gateway API's, its kind to Gateway.
	return serviceKeys(u.GetNamespace(), refs, func(m map[string]any) bool {
		group, hasGroup := m["group"].(string)
		kind, _ := m["kind"].(string)
		return hasGroup && isCoreGroup(group) && kind == KindService
	}, nil)
}

// serviceBackends returns the "namespace/name" of the Services a route's
// rules name as backends.
func serviceBackends(obj any) []string {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil
	}
	rules, _, _ := unstructured.NestedSlice(u.Object, "spec", "rules")
	var out []string
	for _, r := range rules {
		rule, _ := r.(map[string]any)
		refs, _ := rule["backendRefs"].([]any)
		// A backendRef's group defaults to core, its kind to Service.
		out = serviceKeys(u.GetNamespace(), refs, func(m map[string]any) bool {
			group, _ := m["group"].(string)
			kind, hasKind := m["kind"].(string)
			return isCoreGroup(group) && (!hasKind || kind == KindService)
		}, out)
	}
	return out
}

// serviceKeys appends to out the "namespace/name" of the references (in a
// route of namespace ns) that name a Service, once each.
func serviceKeys(ns string, refs []any, isService func(map[string]any) bool, out []string) []string {
	for _, r := range refs {
		m, _ := r.(map[string]any)
		name, _ := m["name"].(string)
		if m == nil || name == "" || !isService(m) {
			continue
		}
		refNS, _ := m["namespace"].(string)
		if refNS == "" {
			refNS = ns
		}
		if k := refNS + "/" + name; !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out
}

// AddRouteHandler adds h to the informers of the route resources, now for
// those already watched and later for those the API server starts serving
// (h then sees every existing route added). Call it before Run or while it
// runs; h must not block.
func (x *Index) AddRouteHandler(h cache.ResourceEventHandler) error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.routeHandlers = append(x.routeHandlers, h)
	for _, inf := range x.routeInformers {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	return nil
}

// addRouteInformer prepares a route resource's informer before it starts:
// its indexes and the handlers added so far.
func (x *Index) addRouteInformer(gvr schema.GroupVersionResource, inf cache.SharedIndexInformer) error {
	if err := inf.AddIndexers(routeIndexers); err != nil {
		return err
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	for _, h := range x.routeHandlers {
		if _, err := inf.AddEventHandler(h); err != nil {
			return err
		}
	}
	if x.routeInformers == nil {
		x.routeInformers = map[schema.GroupVersionResource]cache.SharedIndexInformer{}
	}
	x.routeInformers[gvr] = inf
	return nil
}

// routeInformer is the informer of a watched route resource, nil when the
// resource is not watched. Its cache may still be filling: a handler that
// looks routes up as their additions arrive sees those added so far.
func (x *Index) routeInformer(gvr schema.GroupVersionResource) cache.SharedIndexInformer {
	x.mu.RLock()
	defer x.mu.RUnlock()
	return x.routeInformers[gvr]
}

// RoutesOfService returns the routes of resource gvr that name the Service
// namespace/name as a parent (none while the resource is not served or
// its cache is not filled).
func (x *Index) RoutesOfService(gvr schema.GroupVersionResource, namespace, name string) []*unstructured.Unstructured {
	return x.routesBy(gvr, indexParentService, namespace+"/"+name)
}

// RoutesWithBackend returns the routes of resource gvr whose rules name
// the Service namespace/name as a backend.
func (x *Index) RoutesWithBackend(gvr schema.GroupVersionResource, namespace, name string) []*unstructured.Unstructured {
	return x.routesBy(gvr, indexBackendService, namespace+"/"+name)
}

func (x *Index) routesBy(gvr schema.GroupVersionResource, index, key string) []*unstructured.Unstructured {
	inf := x.routeInformer(gvr)
	if inf == nil {
		return nil
	}
	objs, err := inf.GetIndexer().ByIndex(index, key)
	if err != nil {
		return nil
	}
	out := make([]*unstructured.Unstructured, 0, len(objs))
	for _, o := range objs {
		if u, ok := o.(*unstructured.Unstructured); ok {
			out = append(out, u)
		}
	}
	return out
}

// Route returns a route from the cache (nil when unknown).
func (x *Index) Route(gvr schema.GroupVersionResource, namespace, name string) *unstructured.Unstructured {
	inf := x.routeInformer(gvr)
	if inf == nil {
		return nil
	}
	o, ok, err := inf.GetIndexer().GetByKey(namespace + "/" + name)
	if err != nil || !ok {
		return nil
	}
	u, _ := o.(*unstructured.Unstructured)
	return u
}

// RoutesWatched reports whether the route resource is watched (the API
// server serves it).
func (x *Index) RoutesWatched(gvr schema.GroupVersionResource) bool {
	return x.routeInformer(gvr) != nil
}
