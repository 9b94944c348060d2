package cmd

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// The result of `conduit authz`, as -o json and -o yaml print it and the
// table is drawn from: one entry per pod that stands for its template.

// authzEntry is the effective policy of one pod's ports.
type authzEntry struct {
	Namespace string `json:"namespace"`
	// Resource is the workload as TYPE/NAME (pod/NAME for a bare pod).
	Resource string `json:"resource"`
	// Pod is the pod whose policy was computed; Pods are all the pods of
	// its template (Template, e.g. pod-template-hash=5d8f7c9b), which have
	// the same policy.
	Pod      string   `json:"pod"`
	Template string   `json:"template,omitempty"`
	Pods     []string `json:"pods"`
	// Meshed is false when the pod has no proxy: nothing enforces the
	// policy.
	Meshed bool        `json:"meshed"`
	Ports  []authzPort `json:"ports"`
}

// authzPort is the policy of one port.
type authzPort struct {
	Port uint32 `json:"port"`
	// Server is the Server that selects the port, or kind default with the
	// default policy as its name.
	Server   authzRef `json:"server"`
	Protocol string   `json:"protocol"`
	// FailClosed: the port is under a policy other than
	// all-unauthenticated, so clients it does not name are refused.
	FailClosed bool `json:"failClosed"`
	// Authorizations admit clients to every route of the port.
	Authorizations []authzRule `json:"authorizations"`
	// Routes, when any, are the only requests the port serves (others get
	// 404), each admitted by the port's authorizations or its own.
	Routes []authzRoute `json:"routes,omitempty"`
}

type authzRef struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

func refOf(r *policyv1.Ref) authzRef {
	return authzRef{Kind: r.GetKind(), Name: r.GetName(), Namespace: r.GetNamespace()}
}

// String is kind/name, or default:NAME for the default policies and probes.
func (r authzRef) String() string {
	if r.Kind == "default" {
		return "default:" + r.Name
	}
	return r.Kind + "/" + r.Name
}

type authzRoute struct {
	authzRef
	// Matches are the requests the route matches, e.g. "GET /healthz";
	// none means every request.
	Matches        []string    `json:"matches,omitempty"`
	Authorizations []authzRule `json:"authorizations"`
}

// authzRule is one authorization: who it admits.
type authzRule struct {
	authzRef
	// Allowed says it in words, as the table shows it.
	Allowed string `json:"allowed"`
	// Unauthenticated admits any client; AnyAuthenticated any meshed one;
	// else Identities (SPIFFE IDs), of which ServiceAccounts are those of
	// this cluster's trust domain as namespace/name, and IdentityPrefixes,
	// of which Namespaces are those admitting every ServiceAccount of a
	// namespace.
	Unauthenticated  bool     `json:"unauthenticated,omitempty"`
	AnyAuthenticated bool     `json:"anyAuthenticated,omitempty"`
	Identities       []string `json:"identities,omitempty"`
	ServiceAccounts  []string `json:"serviceAccounts,omitempty"`
	IdentityPrefixes []string `json:"identityPrefixes,omitempty"`
	Namespaces       []string `json:"namespaces,omitempty"`
	// Networks are the client addresses admitted; absent means any.
	Networks []authzNetwork `json:"networks,omitempty"`
}

type authzNetwork struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// portOf converts the controller's policy of a port.
func portOf(port uint32, s *policyv1.InboundServer, trustDomain string) authzPort {
	p := authzPort{
		Port:           port,
		Server:         refOf(s.GetServer()),
		Protocol:       protocolName(s.GetProtocol()),
		FailClosed:     s.GetFailClosed(),
		Authorizations: rulesOf(s.GetAuthorizations(), trustDomain),
	}
	for _, r := range s.GetHttpRoutes() {
		if r.GetRef().GetKind() == "default" && len(r.GetMatches()) == 0 && len(r.GetAuthorizations()) == 0 {
			continue // the catch-all next to probe routes: the port's authorizations, as without routes
		}
		route := authzRoute{authzRef: refOf(r.GetRef()), Authorizations: rulesOf(r.GetAuthorizations(), trustDomain)}
		for _, m := range r.GetMatches() {
			route.Matches = append(route.Matches, matchString(m))
		}
		p.Routes = append(p.Routes, route)
	}
	return p
}

func protocolName(p policyv1.Protocol) string {
	switch p {
	case policyv1.Protocol_HTTP1:
		return "HTTP/1"
	case policyv1.Protocol_HTTP2:
		return "HTTP/2"
	case policyv1.Protocol_GRPC:
		return "gRPC"
	case policyv1.Protocol_OPAQUE:
		return "opaque"
	}
	return "detect"
}

func rulesOf(as []*policyv1.Authorization, trustDomain string) []authzRule {
	out := make([]authzRule, 0, len(as))
	for _, a := range as {
		out = append(out, ruleOf(a, trustDomain))
	}
	return out
}

func ruleOf(a *policyv1.Authorization, trustDomain string) authzRule {
	r := authzRule{authzRef: refOf(a.GetRef())}
	saPrefix := "spiffe://" + trustDomain + "/ns/"
	var who []string
	switch {
	case a.GetUnauthenticated() != nil:
		r.Unauthenticated = true
		who = append(who, "unauthenticated")
	case a.GetMeshTls() != nil:
		m := a.GetMeshTls()
		for _, p := range m.GetPrefixes() {
			if p == "" {
				r.AnyAuthenticated = true
				continue
			}
			r.IdentityPrefixes = append(r.IdentityPrefixes, p)
			if ns, ok := strings.CutSuffix(strings.TrimPrefix(p, saPrefix), "/sa/"); ok && strings.HasPrefix(p, saPrefix) && !strings.Contains(ns, "/") {
				r.Namespaces = append(r.Namespaces, ns)
				who = append(who, "any serviceaccount of "+ns)
			} else {
				who = append(who, "identity "+p+"*")
			}
		}
		for _, id := range m.GetIdentities() {
			r.Identities = append(r.Identities, id)
			if ns, sa, ok := strings.Cut(strings.TrimPrefix(id, saPrefix), "/sa/"); ok && strings.HasPrefix(id, saPrefix) && !strings.Contains(ns, "/") && !strings.Contains(sa, "/") {
				r.ServiceAccounts = append(r.ServiceAccounts, ns+"/"+sa)
				who = append(who, "serviceaccount "+ns+"/"+sa)
			} else {
				who = append(who, "identity "+id)
			}
		}
		if r.AnyAuthenticated {
			who = []string{"any authenticated"}
		}
	default:
		who = append(who, "no one")
	}
	r.Allowed = strings.Join(who, ", ")
	if !anyNetwork(a.GetNetworks()) {
		var nets []string
		for _, n := range a.GetNetworks() {
			r.Networks = append(r.Networks, authzNetwork{CIDR: n.GetCidr(), Except: n.GetExcept()})
			s := n.GetCidr()
			if len(n.GetExcept()) > 0 {
				s += " except " + strings.Join(n.GetExcept(), ", ")
			}
			nets = append(nets, s)
		}
		r.Allowed += " from " + strings.Join(nets, ", ")
	}
	return r
}

// anyNetwork: no networks, or every IPv4 and IPv6 address.
func anyNetwork(nets []*policyv1.Network) bool {
	if len(nets) == 0 {
		return true
	}
	v4, v6 := false, false
	for _, n := range nets {
		if len(n.GetExcept()) > 0 {
			continue
		}
		v4 = v4 || n.GetCidr() == "0.0.0.0/0"
		v6 = v6 || n.GetCidr() == "::/0"
	}
	return v4 && v6
}

// matchString is a route match as one short phrase: "GET /healthz",
// "/api/*", "~^/v[0-9]+/" with headers and query parameters after.
func matchString(m *policyv1.HttpMatch) string {
	var parts []string
	if m.GetMethod() != "" {
		parts = append(parts, m.GetMethod())
	}
	switch p := m.GetPath(); {
	case p == nil:
	case p.GetExact() != "":
		parts = append(parts, p.GetExact())
	case p.GetPrefix() != "":
		parts = append(parts, strings.TrimSuffix(p.GetPrefix(), "/")+"/*")
	case p.GetRegex() != "":
		parts = append(parts, "~"+p.GetRegex())
	}
	for _, h := range m.GetHeaders() {
		if h.GetRegex() != "" {
			parts = append(parts, h.GetName()+"~"+h.GetRegex())
		} else {
			parts = append(parts, h.GetName()+"="+h.GetExact())
		}
	}
	for _, q := range m.GetQueryParams() {
		if q.GetRegex() != "" {
			parts = append(parts, "?"+q.GetName()+"~"+q.GetRegex())
		} else {
			parts = append(parts, "?"+q.GetName()+"="+q.GetExact())
		}
	}
	if len(parts) == 0 {
		return "*"
	}
	return strings.Join(parts, " ")
}

// writeAuthzTable draws one table per entry, under a line naming the
// workload and the pods it stands for, with a line under it naming the
// ports that refuse the clients their policy does not name.
func writeAuthzTable(w io.Writer, entries []authzEntry) error {
	var b strings.Builder
	for i, e := range entries {
		if i > 0 {
			b.WriteString("\n")
		}
		title := e.Resource
		if e.Resource != "pod/"+e.Pod {
			title += ", pod " + e.Pod
		}
		if len(e.Pods) > 1 {
			title += fmt.Sprintf(" (and %d more of %s)", len(e.Pods)-1, e.Template)
		}
		if !e.Meshed {
			title += ": not meshed, no proxy enforces this policy"
		}
		b.WriteString(title + "\n")
		if len(e.Ports) == 0 {
			b.WriteString("no TCP port declared, and no Server selects one by number\n")
			continue
		}
		tw := tabwriter.NewWriter(&b, 0, 8, 3, ' ', 0)
		fmt.Fprintln(tw, "PORT\tSERVER\tPROTOCOL\tROUTE\tAUTHORIZATION\tALLOWED")
		for _, p := range e.Ports {
			server := p.Server.Name
			if p.Server.Kind != "server" {
				server = p.Server.String()
			}
			row := func(route, authz, allowed string) {
				fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\n", p.Port, server, p.Protocol, route, authz, allowed)
			}
			if len(p.Authorizations) == 0 {
				row("*", "-", "no one")
			}
			for _, a := range p.Authorizations {
				row("*", a.String(), a.Allowed)
			}
			for _, r := range p.Routes {
				name := r.authzRef.String()
				if r.Kind == "probe" {
					name = "probe"
				}
				if len(r.Authorizations) == 0 {
					row(name, "-", "as every route (*)")
				}
				for _, a := range r.Authorizations {
					row(name, a.String(), a.Allowed)
				}
			}
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		var closed []string
		for _, p := range e.Ports {
			if p.FailClosed {
				closed = append(closed, fmt.Sprint(p.Port))
			}
		}
		switch n := len(closed); n {
		case 0:
		case 1:
			fmt.Fprintf(&b, "Port %s refuses every client its policy does not name.\n", closed[0])
		default:
			fmt.Fprintf(&b, "Ports %s and %s refuse every client their policy does not name.\n",
				strings.Join(closed[:n-1], ", "), closed[n-1])
		}
		for _, p := range e.Ports {
			writePassableRoutes(&b, p)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// writePassableRoutes says when a connection can pass the port's routes
// (HTTPRoutes, GRPCRoutes): the port detects, and relays what is not HTTP
// to detection under its own authorizations, or it is opaque and never
// reads requests. conduit check --proxy warns of the same Servers.
func writePassableRoutes(b *strings.Builder, p authzPort) {
	var routes []string
	for _, r := range p.Routes {
		if r.Kind == "httproute" || r.Kind == "grpcroute" {
			routes = append(routes, r.authzRef.String())
		}
	}
	if len(routes) == 0 {
		return
	}
	switch p.Protocol {
	case "detect":
		fmt.Fprintf(b, "Port %d detects its protocol: a connection that is not HTTP to detection passes its routes (%s) under the port's authorizations; declare Server %s's proxyProtocol.\n",
			p.Port, strings.Join(routes, ", "), p.Server.Name)
	case "opaque":
		fmt.Fprintf(b, "Port %d is opaque: its routes (%s) never apply.\n", p.Port, strings.Join(routes, ", "))
	}
}
