package stats

import (
	"cmp"
	"fmt"
	"slices"
	"time"
)

// DefaultRoute names the requests to a parent authority that matched none
// of its routes (their series have no route labels), as Linkerd's `viz
// routes` does. Kubernetes names cannot contain brackets, so no route is
// named so.
const DefaultRoute = "[default]"

// RouteQuery is a Routes request after validation.
type RouteQuery struct {
	// Selector is one resource (Name set) of any type but authority.
	Selector Ref
	Window   time.Duration
}

// RouteResult is one row of a Routes answer: the outbound HTTP traffic of
// the selected resource to one backend through one route of a parent
// authority.
type RouteResult struct {
	// Parent is the authority label of the requests (the route's parent
	// service, with its port).
	Parent string
	// RouteKind is "httproute" or "grpcroute", "" for DefaultRoute.
	RouteKind, RouteName string
	// Backend is the service of the endpoints the requests went to, else
	// their deployment, else their pod; zero when unknown.
	Backend                       Ref
	Successes, Failures, Timeouts float64
	// Retries, RetryLimitExceeded and RetryOverflow are the route's, all
	// backends together: proxies count retries per route.
	Retries, RetryLimitExceeded, RetryOverflow float64
	// Share is the backend's share of the route's responses, 0 to 1.
	Share         float64
	RPS           float64
	P50, P95, P99 float64 // milliseconds, 0 without traffic
	Window        time.Duration
}

// CheckRouteSelector validates the resource of a Routes query.
func CheckRouteSelector(r Ref) error {
	if r.Type == TypeAuthority {
		return fmt.Errorf("%w: routes are counted for the resource that sends the requests, not for an authority; give a namespace, deployment, pod or service", ErrInvalidQuery)
	}
	if r.Name == "" {
		return fmt.Errorf("%w: routes are counted for one resource; give %s/NAME", ErrInvalidQuery, r.Type)
	}
	return nil
}

// routeKey names a route of a parent authority.
type routeKey struct{ parent, kind, name string }

// route is the route of an outbound or retry group.
func (g *group) route() routeKey {
	k := routeKey{g.authority, g.routeKind, g.routeName}
	if k.kind == "" && k.name == "" {
		k.name = DefaultRoute
	}
	return k
}

// backend names where an outbound group's requests went.
func (g *group) backend() Ref {
	switch {
	case g.dstSvc != "":
		return Ref{Namespace: g.dstNs, Type: TypeService, Name: g.dstSvc}
	case g.dstDeploy != "":
		return Ref{Namespace: g.dstNs, Type: TypeDeployment, Name: g.dstDeploy}
	case g.dstPod != "":
		return Ref{Namespace: g.dstNs, Type: TypePod, Name: g.dstPod}
	}
	return Ref{}
}

// isHTTP reports whether a group has HTTP series (TCP, error and panic
// series have groups of their own: they carry no authority).
func (g *group) isHTTP() bool {
	return g.ctr[slotRequests] >= 0 || g.ctr[slotSuccess] >= 0 || g.ctr[slotFailure] >= 0
}

// Routes answers a routes query from the store: the selected resource's
// outbound HTTP traffic in the window per parent authority, route and
// backend, sorted so.
func (s *Store) Routes(now time.Time, q RouteQuery) []RouteResult {
	type rowKey struct {
		routeKey
		backend Ref
	}
	rows := map[rowKey]*rowAgg{}
	type retryAgg struct {
		n    [3]float64 // requests, limit exceeded, overflow
		span time.Duration
	}
	retries := map[routeKey]*retryAgg{}
	s.eachWindow(now, q.Window, func(w *podWindow) {
		if !Owns(w.pod, q.Selector) {
			return
		}
		for i := range w.pd.groups {
			g := &w.pd.groups[i]
			if !g.present {
				continue
			}
			switch {
			case g.dir == dirOutbound && g.isHTTP():
				k := rowKey{g.route(), g.backend()}
				r := rows[k]
				if r == nil {
					r = &rowAgg{}
					rows[k] = r
				}
				r.addGroup(w, g)
				r.span = max(r.span, w.span)
			case g.dir == dirRetry:
				k := g.route()
				r := retries[k]
				if r == nil {
					r = &retryAgg{}
					retries[k] = r
				}
				for j, sl := range [...]slot{slotRetries, slotRetryLimit, slotRetryOverflow} {
					r.n[j] += w.sum(g.ctr[sl])
				}
				r.span = max(r.span, w.span)
			}
		}
	})
	total := map[routeKey]float64{}
	for k, r := range rows {
		if r.contributed {
			total[k.routeKey] += r.succ + r.fail
		}
	}
	out := make([]RouteResult, 0, len(rows))
	for k, r := range rows {
		if !r.contributed {
			continue
		}
		res := RouteResult{Parent: k.parent, RouteKind: k.kind, RouteName: k.name, Backend: k.backend,
			Successes: r.succ, Failures: r.fail, Timeouts: r.timeouts, Window: r.span}
		if t := total[k.routeKey]; t > 0 {
			res.Share = (r.succ + r.fail) / t
		}
		if r.span > 0 {
			res.RPS = (r.succ + r.fail) / r.span.Seconds()
		}
		res.P50, res.P95, res.P99 = quantile(0.5, r.buckets), quantile(0.95, r.buckets), quantile(0.99, r.buckets)
		out = append(out, res)
	}
	// Retries go to every row of their route; a route with retries but no
	// response in the window gets a row without a backend.
	for k, r := range retries {
		if r.n == [3]float64{} {
			continue
		}
		found := false
		for i := range out {
			if o := &out[i]; o.Parent == k.parent && o.RouteKind == k.kind && o.RouteName == k.name {
				o.Retries, o.RetryLimitExceeded, o.RetryOverflow = r.n[0], r.n[1], r.n[2]
				found = true
			}
		}
		if !found {
			out = append(out, RouteResult{Parent: k.parent, RouteKind: k.kind, RouteName: k.name,
				Retries: r.n[0], RetryLimitExceeded: r.n[1], RetryOverflow: r.n[2], Window: r.span})
		}
	}
	slices.SortFunc(out, func(a, b RouteResult) int {
		return cmp.Or(cmp.Compare(a.Parent, b.Parent), cmp.Compare(a.RouteName, b.RouteName), cmp.Compare(a.RouteKind, b.RouteKind),
			cmp.Compare(a.Backend.Namespace, b.Backend.Namespace), cmp.Compare(a.Backend.Type, b.Backend.Type), cmp.Compare(a.Backend.Name, b.Backend.Name))
	})
	return out
}
