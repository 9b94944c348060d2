package policy

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// serverRoutes are the HTTPRoutes and GRPCRoutes whose parentRef is srv,
// oldest first, each with the policies that target it. A route whose
// matches cannot be translated (an invalid regular expression) is left
// out: its requests then match no route and are denied.
func serverRoutes(c *Cluster, v *view, srv *Server) []*policyv1.HttpRoute {
	type route struct {
		meta *metav1.ObjectMeta
		r    *policyv1.HttpRoute
	}
	var routes []route
	add := func(meta *metav1.ObjectMeta, kind, refKind string, matches []*policyv1.HttpMatch) {
		r := &policyv1.HttpRoute{Ref: &policyv1.Ref{Kind: refKind, Name: meta.Name, Namespace: meta.Namespace}, Matches: matches}
		r.Authorizations = policyAuthorizations(c, v, func(t LocalRef) bool {
			return isKind(t.Group, t.Kind, GatewayGroup, kind) && t.Name == meta.Name
		})
		routes = append(routes, route{meta, r})
	}
	for _, hr := range v.httpRoutes {
		if !ParentIsServer(hr.Spec.ParentRefs, hr.Namespace, srv) {
			continue
		}
		matches, err := httpMatches(hr.Spec.Rules)
		if err != nil {
			v.skipped("httproute "+hr.Namespace+"/"+hr.Name, err)
			continue
		}
		add(&hr.ObjectMeta, KindHTTPRoute, "httproute", matches)
	}
	for _, gr := range v.grpcRoutes {
		if !ParentIsServer(gr.Spec.ParentRefs, gr.Namespace, srv) {
			continue
		}
		matches, err := grpcMatches(gr.Spec.Rules)
		if err != nil {
			v.skipped("grpcroute "+gr.Namespace+"/"+gr.Name, err)
			continue
		}
		add(&gr.ObjectMeta, KindGRPCRoute, "grpcroute", matches)
	}
	slices.SortFunc(routes, func(a, b route) int {
		if d := olderFirst(a.meta, b.meta); d != 0 {
			return d
		}
		return strings.Compare(a.r.Ref.Kind, b.r.Ref.Kind)
	})
	out := make([]*policyv1.HttpRoute, len(routes))
	for i, r := range routes {
		out[i] = r.r
	}
	return out
}

// ParentIsServer reports whether a route in namespace ns names srv as a
// parent (a route binds to Servers of its own namespace only).
func ParentIsServer(parents []ParentRef, ns string, srv *Server) bool {
	for _, p := range parents {
		if p.Group == nil || *p.Group != Group || p.Kind == nil || *p.Kind != KindServer || p.Name != srv.Name {
			continue
		}
		if p.Namespace != nil && *p.Namespace != ns {
			continue
		}
		if ns == srv.Namespace {
			return true
		}
	}
	return false
}

// Gateway API match types.
const (
	matchExact      = "Exact"
	matchPathPrefix = "PathPrefix"
	matchRegex      = "RegularExpression"
)

func orDefault(s *string, def string) string {
	if s == nil {
		return def
	}
	return *s
}

// httpMatches flattens the rules' matches: a request matches the route
// when it matches any. A rule without matches matches every request, and
// so does the route then (no matches).
func httpMatches(rules []HTTPRouteRules) ([]*policyv1.HttpMatch, error) {
	var out []*policyv1.HttpMatch
	for _, rule := range rules {
		if len(rule.Matches) == 0 {
			return nil, nil
		}
		ms, err := HTTPMatches(rule.Matches)
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
	}
	return out, nil
}

// HTTPMatches translates one HTTPRoute rule's matches (a path match
// defaults to the prefix "/"); an invalid regular expression or an
// unknown match type is an error.
func HTTPMatches(matches []HTTPRouteMatch) ([]*policyv1.HttpMatch, error) {
	var out []*policyv1.HttpMatch
	for _, m := range matches {
		hm := &policyv1.HttpMatch{Method: orDefault(m.Method, "")}
		var path, value string
		if m.Path != nil {
			path, value = orDefault(m.Path.Type, matchPathPrefix), orDefault(m.Path.Value, "/")
		} else {
			path, value = matchPathPrefix, "/"
		}
		switch path {
		case matchExact:
			hm.Path = &policyv1.PathMatch{Kind: &policyv1.PathMatch_Exact{Exact: value}}
		case matchPathPrefix:
			hm.Path = &policyv1.PathMatch{Kind: &policyv1.PathMatch_Prefix{Prefix: value}}
		case matchRegex:
			if _, err := regexp.Compile(value); err != nil {
				return nil, fmt.Errorf("path regular expression %q: %w", value, err)
			}
			hm.Path = &policyv1.PathMatch{Kind: &policyv1.PathMatch_Regex{Regex: value}}
		default:
			return nil, fmt.Errorf("unsupported path match type %q", path)
		}
		var err error
		if hm.Headers, err = headerMatches(m.Headers); err != nil {
			return nil, err
		}
		for _, q := range m.QueryParams {
			qm := &policyv1.QueryParamMatch{Name: q.Name}
			switch t := orDefault(q.Type, matchExact); t {
			case matchExact:
				qm.Value = &policyv1.QueryParamMatch_Exact{Exact: q.Value}
			case matchRegex:
				if _, err := regexp.Compile(q.Value); err != nil {
					return nil, fmt.Errorf("query parameter %s regular expression %q: %w", q.Name, q.Value, err)
				}
				qm.Value = &policyv1.QueryParamMatch_Regex{Regex: q.Value}
			default:
				return nil, fmt.Errorf("unsupported query parameter match type %q", t)
			}
			hm.QueryParams = append(hm.QueryParams, qm)
		}
		out = append(out, hm)
	}
	return out, nil
}

func headerMatches(headers []HTTPValueMatch) ([]*policyv1.HeaderMatch, error) {
	var out []*policyv1.HeaderMatch
	for _, h := range headers {
		m := &policyv1.HeaderMatch{Name: h.Name}
		switch t := orDefault(h.Type, matchExact); t {
		case matchExact:
			m.Value = &policyv1.HeaderMatch_Exact{Exact: h.Value}
		case matchRegex:
			if _, err := regexp.Compile(h.Value); err != nil {
				return nil, fmt.Errorf("header %s regular expression %q: %w", h.Name, h.Value, err)
			}
			m.Value = &policyv1.HeaderMatch_Regex{Regex: h.Value}
		default:
			return nil, fmt.Errorf("unsupported header match type %q", t)
		}
		out = append(out, m)
	}
	return out, nil
}

// grpcMatches translates GRPCRoute matches into paths: service and method
// exactly give the exact path /service/method, a service alone the prefix
// /service/, a method alone (or regular expressions) a path regular
// expression.
func grpcMatches(rules []GRPCRouteRules) ([]*policyv1.HttpMatch, error) {
	var out []*policyv1.HttpMatch
	for _, rule := range rules {
		if len(rule.Matches) == 0 {
			return nil, nil
		}
		ms, err := GRPCMatches(rule.Matches)
		if err != nil {
			return nil, err
		}
		out = append(out, ms...)
	}
	return out, nil
}

// GRPCMatches translates one GRPCRoute rule's matches into HTTP matches
// (see grpcMatches).
func GRPCMatches(matches []GRPCRouteMatch) ([]*policyv1.HttpMatch, error) {
	var out []*policyv1.HttpMatch
	for _, m := range matches {
		hm := &policyv1.HttpMatch{}
		if mm := m.Method; mm != nil && (mm.Service != nil || mm.Method != nil) {
			svc, method := orDefault(mm.Service, ""), orDefault(mm.Method, "")
			switch t := orDefault(mm.Type, matchExact); t {
			case matchExact:
				switch {
				case svc != "" && method != "":
					hm.Path = &policyv1.PathMatch{Kind: &policyv1.PathMatch_Exact{Exact: "/" + svc + "/" + method}}
				case svc != "":
					hm.Path = &policyv1.PathMatch{Kind: &policyv1.PathMatch_Prefix{Prefix: "/" + svc + "/"}}
				default:
					hm.Path = &policyv1.PathMatch{Kind: &policyv1.PathMatch_Regex{Regex: "/[^/]+/" + regexp.QuoteMeta(method)}}
				}
			case matchRegex:
				re := "/" + regexOrAny(svc) + "/" + regexOrAny(method)
				if _, err := regexp.Compile(re); err != nil {
					return nil, fmt.Errorf("method regular expression %q: %w", re, err)
				}
				hm.Path = &policyv1.PathMatch{Kind: &policyv1.PathMatch_Regex{Regex: re}}
			default:
				return nil, fmt.Errorf("unsupported method match type %q", t)
			}
		}
		var err error
		if hm.Headers, err = headerMatches(m.Headers); err != nil {
			return nil, err
		}
		out = append(out, hm)
	}
	return out, nil
}

func regexOrAny(re string) string {
	if re == "" {
		return "[^/]+"
	}
	return "(?:" + re + ")"
}
