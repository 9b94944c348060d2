package metrics

import (
	"strconv"
	"strings"
	"sync/atomic"
)

// AuthzLabels identify the series of inbound authorization decisions, with
// Linkerd's metric and label names (inbound_{http,tcp}_authz_{allow,deny}_total;
// srv_*, route_*, authz_*). The kinds and names come from the policy the
// controller served, so the number of series is bounded by the policies, not
// by peers; ClientID is a verified identity.
type AuthzLabels struct {
	TCP     bool // inbound_tcp_* rather than inbound_http_*
	Allowed bool
	// TargetAddr is the inbound port's address.
	TargetAddr string
	TLS        bool
	ClientID   string
	// Server: the Server that selected the port or, for a default policy,
	// kind "default" and the policy's name.
	SrvKind, SrvName string
	// Route (HTTP only); empty when the port has no routes.
	RouteKind, RouteName string
	// Authz is the authorization that admitted the client (allow only).
	AuthzKind, AuthzName string
}

func (l AuthzLabels) name() string {
	proto, verdict := "http", "deny"
	if l.TCP {
		proto = "tcp"
	}
	if l.Allowed {
		verdict = "allow"
	}
	return "inbound_" + proto + "_authz_" + verdict + "_total"
}

func (l AuthzLabels) render() string {
	var b strings.Builder
	if l.TargetAddr != "" {
		label(&b, "target_addr", l.TargetAddr)
	}
	label(&b, "tls", strconv.FormatBool(l.TLS))
	if l.ClientID != "" {
		label(&b, "client_id", l.ClientID)
	}
	group := func(kind string) string {
		switch kind {
		case "", "default", "probe":
			return ""
		case "httproute", "grpcroute":
			return "gateway.networking.k8s.io"
		}
		return "policy.conduit.io"
	}
	label(&b, "srv_group", group(l.SrvKind))
	label(&b, "srv_kind", l.SrvKind)
	label(&b, "srv_name", l.SrvName)
	if !l.TCP {
		label(&b, "route_group", group(l.RouteKind))
		label(&b, "route_kind", l.RouteKind)
		label(&b, "route_name", l.RouteName)
	}
	if l.Allowed {
		label(&b, "authz_group", group(l.AuthzKind))
		label(&b, "authz_kind", l.AuthzKind)
		label(&b, "authz_name", l.AuthzName)
	}
	return b.String()
}

// authzSeries is one decision series.
type authzSeries struct {
	name, labels string
	n            atomic.Uint64
}

// Authz counts one authorization decision.
func (r *Registry) Authz(l AuthzLabels) {
	r.mu.Lock()
	s, ok := r.authz[l]
	if !ok {
		if len(r.authz) >= MaxSeries {
			// Policies are the controller's, but identities are many:
			// past the bound, decisions are counted without the client.
			l.ClientID = Overflow
			s, ok = r.authz[l]
		}
		if !ok {
			s = &authzSeries{name: l.name(), labels: l.render()}
			r.authz[l] = s
			r.authzOrd = append(r.authzOrd, s)
		}
	}
	r.mu.Unlock()
	s.n.Add(1)
}
