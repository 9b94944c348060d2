// Package routes is outbound routing (GAMMA): Gateway API HTTPRoutes and
// GRPCRoutes whose parentRef is a Service, translated into the route table
// proxies get from Destination.GetRoutes (conduit.destination.v1), together
// with the Service's own policy from its annotations; and the status
// (Accepted, ResolvedRefs) the controller writes on those routes.
//
// The routes come from the policy index's informers (one watch of each
// resource for inbound policy and outbound routing) and the Services from
// the discovery backend: the Kubernetes one's informer, or in local mode
// (`conduit demo`) the registry's Services, whose routes are the
// registry's policy objects. Route status is written in Kubernetes only.
package routes

import (
	"errors"
	"fmt"
	"net"
	"strconv"

	"google.golang.org/protobuf/proto"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// Route kinds as OutboundRoute.ref names them (the route_kind metric label).
const (
	RefKindHTTPRoute = "httproute"
	RefKindGRPCRoute = "grpcroute"
)

// Gateway API condition reasons of a route's status.parents[] entry.
const (
	ReasonAccepted         = "Accepted"
	ReasonNoMatchingParent = "NoMatchingParent"
	ReasonUnsupportedValue = "UnsupportedValue"
	ReasonResolvedRefs     = "ResolvedRefs"
	ReasonBackendNotFound  = "BackendNotFound"
	ReasonInvalidKind      = "InvalidKind"
)

// The Gateway API filter types the proxy implements.
const (
	filterRequestHeaderModifier  = "RequestHeaderModifier"
	filterResponseHeaderModifier = "ResponseHeaderModifier"
	filterRequestRedirect        = "RequestRedirect"
)

// ServiceLookup returns a Service from the controller's cache, nil when it
// does not exist.
type ServiceLookup func(namespace, name string) *corev1.Service

// translator turns routes into OutboundRoutes.
type translator struct {
	clusterDomain string
	service       ServiceLookup
}

// translated is a route as the proxy gets it, and what is wrong with it.
type translated struct {
	// route is nil when the route is not accepted (unsupported says why).
	route       *destinationv1.OutboundRoute
	unsupported error
	// ignored are the annotations ignored, one line each.
	ignored []string
}

// refProblem is one backendRef that cannot be resolved.
type refProblem struct{ reason, message string }

// rule is one rule of an HTTPRoute or a GRPCRoute, its matches
// translated (or why they could not be).
type rule struct {
	matches  []*policyv1.HttpMatch
	matchErr error
	filters  []policy.HTTPRouteFilter
	refs     []policy.BackendRef
	timeouts *policy.HTTPRouteTimeouts // HTTPRoutes only
}

func (t *translator) httpRoute(hr *policy.HTTPRoute) translated {
	rules := make([]rule, len(hr.Spec.Rules))
	for i, r := range hr.Spec.Rules {
		rules[i] = rule{filters: r.Filters, refs: r.BackendRefs, timeouts: r.Timeouts}
		rules[i].matches, rules[i].matchErr = policy.HTTPMatches(r.Matches)
	}
	return t.route(&policyv1.Ref{Kind: RefKindHTTPRoute, Name: hr.Name, Namespace: hr.Namespace}, &hr.ObjectMeta, onHTTPRoute, rules)
}

func (t *translator) grpcRoute(gr *policy.GRPCRoute) translated {
	rules := make([]rule, len(gr.Spec.Rules))
	for i, r := range gr.Spec.Rules {
		rules[i] = rule{filters: r.Filters, refs: r.BackendRefs}
		rules[i].matches, rules[i].matchErr = policy.GRPCMatches(r.Matches)
	}
	return t.route(&policyv1.Ref{Kind: RefKindGRPCRoute, Name: gr.Name, Namespace: gr.Namespace}, &gr.ObjectMeta, onGRPCRoute, rules)
}

// route translates a route's rules; on says which retry conditions its
// annotations may set (and whether its filters may redirect: HTTPRoutes').
func (t *translator) route(ref *policyv1.Ref, meta *metav1.ObjectMeta, on conditions, rules []rule) translated {
	var out translated
	retry, ignored := parseRetry(meta.Annotations, on)
	timeout, more := requestTimeout(meta.Annotations)
	out.ignored = append(ignored, more...)
	r := &destinationv1.OutboundRoute{Ref: ref, CreatedUnixNano: unixNano(meta.CreationTimestamp)}
	for i, in := range rules {
		or, err := t.rule(in, meta.Namespace, on.http, timeout, retry)
		if err != nil {
			out.unsupported = fmt.Errorf("rule %d: %w", i+1, err)
			return out
		}
		r.Rules = append(r.Rules, or)
	}
	out.route = r
	return out
}

// rule translates one rule, with the route's request timeout annotation
// (for a rule without timeouts.request) and retry.
func (t *translator) rule(in rule, routeNS string, redirects bool, timeout uint64, retry *destinationv1.Retry) (*destinationv1.OutboundRule, error) {
	if in.matchErr != nil {
		return nil, in.matchErr
	}
	filters, err := httpFilters(in.filters, in.matches, redirects)
	if err != nil {
		return nil, err
	}
	backends, err := t.backends(routeNS, in.refs, in.matches, redirects)
	if err != nil {
		return nil, err
	}
	p := &destinationv1.RoutePolicy{RequestTimeoutMs: timeout}
	if to := in.timeouts; to != nil {
		if to.Request != nil {
			if p.RequestTimeoutMs, err = parseGatewayDuration(*to.Request); err != nil {
				return nil, fmt.Errorf("timeouts.request: %w", err)
			}
		}
		if to.BackendRequest != nil {
			if p.BackendRequestTimeoutMs, err = parseGatewayDuration(*to.BackendRequest); err != nil {
				return nil, fmt.Errorf("timeouts.backendRequest: %w", err)
			}
		}
		if p.RequestTimeoutMs != 0 && p.BackendRequestTimeoutMs > p.RequestTimeoutMs {
			return nil, fmt.Errorf("timeouts.backendRequest (%s) exceeds timeouts.request (%s)", *to.BackendRequest, *to.Request)
		}
	}
	if retry != nil {
		p.Retry = proto.Clone(retry).(*destinationv1.Retry)
	}
	return &destinationv1.OutboundRule{Matches: in.matches, Filters: filters, Backends: backends, Policy: orNil(p)}, nil
}

// unixNano is a creationTimestamp in nanoseconds, 0 when unset.
func unixNano(t metav1.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func orNil(p *destinationv1.RoutePolicy) *destinationv1.RoutePolicy {
	if p.RequestTimeoutMs == 0 && p.BackendRequestTimeoutMs == 0 && p.Retry == nil {
		return nil
	}
	return p
}

// backends translates a rule's backendRefs. A backendRef that cannot be
// resolved is an invalid backend (answered 500); an unsupported filter is
// an error.
func (t *translator) backends(routeNS string, refs []policy.BackendRef, matches []*policyv1.HttpMatch, redirects bool) ([]*destinationv1.Backend, error) {
	var out []*destinationv1.Backend
	for _, ref := range refs {
		b := &destinationv1.Backend{Weight: 1}
		if ref.Weight != nil {
			if *ref.Weight < 0 {
				return nil, fmt.Errorf("backendRef %s: weight %d is negative", ref.Name, *ref.Weight)
			}
			b.Weight = uint32(*ref.Weight)
		}
		filters, err := httpFilters(ref.Filters, matches, redirects)
		if err != nil {
			return nil, fmt.Errorf("backendRef %s: %w", ref.Name, err)
		}
		b.Filters = filters
		if problem := t.resolve(routeNS, ref, b); problem != nil {
			b.Invalid = problem.message
		}
		out = append(out, b)
	}
	return out, nil
}

// refProblems are the backendRefs of rules that cannot be resolved, for
// the ResolvedRefs condition.
func (t *translator) refProblems(routeNS string, rules [][]policy.BackendRef) []refProblem {
	var out []refProblem
	for _, refs := range rules {
		for _, ref := range refs {
			if p := t.resolve(routeNS, ref, &destinationv1.Backend{}); p != nil {
				out = append(out, *p)
			}
		}
	}
	return out
}

// resolve sets b's authority from a Service backendRef, or says why it
// cannot be used.
func (t *translator) resolve(routeNS string, ref policy.BackendRef, b *destinationv1.Backend) *refProblem {
	if !ref.IsService() {
		group, kind := "", policy.KindService
		if ref.Group != nil {
			group = *ref.Group
		}
		if ref.Kind != nil {
			kind = *ref.Kind
		}
		return &refProblem{ReasonInvalidKind, fmt.Sprintf("backendRef %s is a %s (group %q): only Services are supported", ref.Name, kind, group)}
	}
	ns := ref.ServiceNamespace(routeNS)
	if ref.Port != nil {
		b.Authority = t.authority(ns, ref.Name, *ref.Port)
	}
	svc := t.service(ns, ref.Name)
	switch {
	case svc == nil:
		return &refProblem{ReasonBackendNotFound, fmt.Sprintf("backendRef Service %s/%s not found", ns, ref.Name)}
	case ref.Port == nil:
		return &refProblem{ReasonBackendNotFound, fmt.Sprintf("backendRef Service %s/%s has no port: a Service backendRef needs one", ns, ref.Name)}
	case !hasPort(svc, *ref.Port):
		return &refProblem{ReasonBackendNotFound, fmt.Sprintf("backendRef Service %s/%s has no port %d", ns, ref.Name, *ref.Port)}
	}
	return nil
}

func hasPort(svc *corev1.Service, port int32) bool {
	for _, p := range svc.Spec.Ports {
		if p.Port == port {
			return true
		}
	}
	return false
}

// authority is a Service port's fully qualified host:port.
func (t *translator) authority(ns, name string, port int32) string {
	return net.JoinHostPort(name+"."+ns+".svc."+t.clusterDomain, strconv.Itoa(int(port)))
}

// httpFilters translates filters; redirects is false for GRPCRoutes, which
// have none. A prefix replacement needs the rule's path matches to be
// prefixes.
func httpFilters(filters []policy.HTTPRouteFilter, matches []*policyv1.HttpMatch, redirects bool) ([]*destinationv1.Filter, error) {
	var out []*destinationv1.Filter
	for _, f := range filters {
		switch {
		case f.Type == filterRequestHeaderModifier && f.RequestHeaderModifier != nil:
			out = append(out, &destinationv1.Filter{Kind: &destinationv1.Filter_RequestHeaderModifier{RequestHeaderModifier: headerModifier(f.RequestHeaderModifier)}})
		case f.Type == filterResponseHeaderModifier && f.ResponseHeaderModifier != nil:
			out = append(out, &destinationv1.Filter{Kind: &destinationv1.Filter_ResponseHeaderModifier{ResponseHeaderModifier: headerModifier(f.ResponseHeaderModifier)}})
		case f.Type == filterRequestRedirect && f.RequestRedirect != nil && redirects:
			r, err := redirect(f.RequestRedirect, matches)
			if err != nil {
				return nil, err
			}
			out = append(out, &destinationv1.Filter{Kind: &destinationv1.Filter_RequestRedirect{RequestRedirect: r}})
		case f.Type == filterRequestHeaderModifier || f.Type == filterResponseHeaderModifier || f.Type == filterRequestRedirect && redirects:
			return nil, fmt.Errorf("filter %s without its %s field", f.Type, lowerFirst(f.Type))
		default:
			supported := filterRequestHeaderModifier + ", " + filterResponseHeaderModifier
			if redirects {
				supported += ", " + filterRequestRedirect
			}
			return nil, fmt.Errorf("filter type %q is not supported (supported: %s)", f.Type, supported)
		}
	}
	return out, nil
}

func lowerFirst(s string) string {
	if s == "" {
		return s
	}
	return string(s[0]+'a'-'A') + s[1:]
}

func headerModifier(h *policy.HTTPHeaderFilter) *destinationv1.HeaderModifier {
	m := &destinationv1.HeaderModifier{Remove: h.Remove}
	for _, s := range h.Set {
		m.Set = append(m.Set, &destinationv1.Header{Name: s.Name, Value: s.Value})
	}
	for _, a := range h.Add {
		m.Add = append(m.Add, &destinationv1.Header{Name: a.Name, Value: a.Value})
	}
	return m
}

// Path modifier types of a redirect.
const (
	replaceFullPath    = "ReplaceFullPath"
	replacePrefixMatch = "ReplacePrefixMatch"
)

func redirect(f *policy.HTTPRequestRedirectFilter, matches []*policyv1.HttpMatch) (*destinationv1.Redirect, error) {
	r := &destinationv1.Redirect{StatusCode: 302}
	if f.Scheme != nil {
		r.Scheme = *f.Scheme
	}
	if f.Hostname != nil {
		r.Hostname = *f.Hostname
	}
	if f.Port != nil {
		if *f.Port < 1 || *f.Port > 65535 {
			return nil, fmt.Errorf("redirect port %d is not in 1-65535", *f.Port)
		}
		r.Port = uint32(*f.Port)
	}
	if f.StatusCode != nil {
		if *f.StatusCode != 301 && *f.StatusCode != 302 {
			return nil, fmt.Errorf("redirect statusCode %d is not supported (301 or 302)", *f.StatusCode)
		}
		r.StatusCode = uint32(*f.StatusCode)
	}
	if p := f.Path; p != nil {
		switch {
		case p.Type == replaceFullPath && p.ReplaceFullPath != nil:
			r.Path = &destinationv1.PathModifier{Kind: &destinationv1.PathModifier_Full{Full: *p.ReplaceFullPath}}
		case p.Type == replacePrefixMatch && p.ReplacePrefixMatch != nil:
			for _, m := range matches {
				if m.GetPath().GetPrefix() == "" {
					return nil, errors.New("redirect path ReplacePrefixMatch needs every match of the rule to be a PathPrefix match")
				}
			}
			r.Path = &destinationv1.PathModifier{Kind: &destinationv1.PathModifier_Prefix{Prefix: *p.ReplacePrefixMatch}}
		default:
			return nil, fmt.Errorf("redirect path type %q is not supported (ReplaceFullPath with replaceFullPath, or ReplacePrefixMatch with replacePrefixMatch)", p.Type)
		}
	}
	return r, nil
}
