package authz

import (
	"net/http"
	"net/netip"
	"strconv"
	"strings"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
)

// Ref names the resource a decision came from: Kind is e.g. "server",
// "authorizationpolicy", "httproute", "default" (Name is then the default
// policy, such as "all-authenticated") or "probe".
type Ref = httpmatch.Ref

// Protocol is what a port speaks, as its policy says.
type Protocol uint8

// The protocols of conduit.policy.v1.Protocol; values the proxy does not
// know decode as ProtocolDetect.
const (
	// ProtocolDetect: HTTP/1, HTTP/2 or opaque, as protocol detection finds.
	ProtocolDetect Protocol = iota
	ProtocolHTTP1
	ProtocolHTTP2
	ProtocolGRPC
	// ProtocolOpaque: a TCP stream; only AllowConn applies.
	ProtocolOpaque
)

// HTTP reports whether p is an HTTP protocol (HTTP/1, HTTP/2 or gRPC): a
// port that declares one takes HTTP only, never a connection relayed as
// opaque TCP.
func (p Protocol) HTTP() bool {
	return p == ProtocolHTTP1 || p == ProtocolHTTP2 || p == ProtocolGRPC
}

// String is p as a Server's proxyProtocol spells it.
func (p Protocol) String() string {
	switch p {
	case ProtocolHTTP1:
		return "HTTP/1"
	case ProtocolHTTP2:
		return "HTTP/2"
	case ProtocolGRPC:
		return "gRPC"
	case ProtocolOpaque:
		return "opaque"
	}
	return "unknown"
}

// Conn is what a decision needs of the client's connection.
type Conn struct {
	// Client is the client's address (an IPv4-mapped IPv6 address counts
	// as IPv4).
	Client netip.Addr
	// TLS is set for mesh TLS connections.
	TLS bool
	// Identity is the client's verified mesh identity (its SPIFFE ID) when
	// TLS; a client without one is unauthenticated.
	Identity string
}

// Decision is the outcome of AllowConn or AllowRequest.
type Decision struct {
	Allowed bool
	// Status is 0 when allowed, else the HTTP status to answer with: 403
	// for an unauthorized client, 404 for a request that matches no route.
	Status int
	// Server is the port's server (or default policy); Authz the
	// authorization that admitted the client (zero when denied); Route the
	// request's route (zero for connections and 404s; {default, default}
	// when the port has no routes).
	Server, Authz, Route Ref
	// Reason explains a denial in one short line for a response header,
	// e.g. "unauthorized: server web-http requires mesh TLS (client
	// 10.0.0.7 came in plaintext: ...)"; it never holds request bytes and the client
	// identity it may name is sanitized. "" when allowed.
	Reason string
}

// Server is one port's compiled policy. It is immutable and safe for
// concurrent use; build it with Decode or Pending.
type Server struct {
	ref        Ref
	protocol   Protocol
	failClosed bool
	pending    bool
	authz      authzSet
	// routes in the order received; empty means the default route.
	routes []route
	// matches are every route's matches, by precedence (httpmatch.Sort);
	// their Index is the route's.
	matches  []httpmatch.Match
	notFound string // the 404 reason
}

// route is one HTTP route of a port.
type route struct {
	ref   Ref
	authz authzSet
}

// defaultRoute is the route of a port without routes.
var defaultRoute = route{ref: Ref{Kind: "default", Name: "default"}}

// Ref names the Server that selects the port, or {default, <policy>}.
func (s *Server) Ref() Ref { return s.ref }

// Protocol is the protocol the port's policy declares.
// A nil Server (no policy enforced) declares none: ProtocolDetect.
func (s *Server) Protocol() Protocol {
	if s == nil {
		return ProtocolDetect
	}
	return s.protocol
}

// FailClosed reports that the port is under a policy other than
// all-unauthenticated (informational once a policy has arrived).
func (s *Server) FailClosed() bool { return s.failClosed }

// Pending reports that s stands in for a policy that has not arrived.
func (s *Server) Pending() bool { return s.pending }

// String summarizes s for logs.
func (s *Server) String() string {
	var b strings.Builder
	b.WriteString(s.ref.String())
	if s.pending {
		b.WriteString(" (pending)")
		return b.String()
	}
	b.WriteString(" (")
	b.WriteString(s.protocol.String())
	b.WriteString(", ")
	b.WriteString(strconv.Itoa(len(s.authz.list)))
	b.WriteString(" authorizations, ")
	b.WriteString(strconv.Itoa(len(s.routes)))
	b.WriteString(" routes)")
	return b.String()
}

// AllowConn decides a connection to an opaque port (or one detected as
// opaque): only the port's own authorizations apply, never its routes'.
func (s *Server) AllowConn(c Conn) Decision {
	addr := c.Client.Unmap()
	if i := s.authz.admit(&c, addr); i >= 0 {
		return Decision{Allowed: true, Server: s.ref, Authz: s.authz.list[i].ref}
	}
	return s.deny(&c, addr, nil)
}

// AllowRequest decides an HTTP request: it picks the request's route (404
// when the port has routes and none matches), then admits the client by the
// port's authorizations, then by the route's.
func (s *Server) AllowRequest(c Conn, r Request) Decision {
	rt := &defaultRoute
	if len(s.routes) > 0 {
		i := httpmatch.Pick(s.matches, &r)
		if i < 0 {
			return Decision{Status: http.StatusNotFound, Server: s.ref, Reason: s.notFound}
		}
		rt = &s.routes[s.matches[i].Index]
	}
	addr := c.Client.Unmap()
	if i := s.authz.admit(&c, addr); i >= 0 {
		return Decision{Allowed: true, Server: s.ref, Authz: s.authz.list[i].ref, Route: rt.ref}
	}
	if i := rt.authz.admit(&c, addr); i >= 0 {
		return Decision{Allowed: true, Server: s.ref, Authz: rt.authz.list[i].ref, Route: rt.ref}
	}
	return s.deny(&c, addr, rt)
}

// deny builds a 403; rt is nil for connections.
func (s *Server) deny(c *Conn, addr netip.Addr, rt *route) Decision {
	d := Decision{Status: http.StatusForbidden, Server: s.ref, Reason: s.reason(c, addr, rt)}
	if rt != nil {
		d.Route = rt.ref
	}
	return d
}

// reason explains why no authorization admitted c.
func (s *Server) reason(c *Conn, addr netip.Addr, rt *route) string {
	where := s.ref.String()
	if where == "" {
		where = "the port's policy"
	}
	// A route is named unless it is a default one (the port's implicit
	// route, or the catch-all the controller adds beside probe routes).
	if rt != nil && rt.ref.Kind != "default" {
		if r := rt.ref.String(); r != "" {
			where = r + " of " + where
		}
	}
	if s.pending {
		return "unauthorized: " + where + " fails closed until the controller sends this port's policy"
	}
	var routeAuthz []authorization
	if rt != nil {
		routeAuthz = rt.authz.list
	}
	if len(s.authz.list)+len(routeAuthz) == 0 {
		return "unauthorized: " + where + " admits no client"
	}
	inNetwork := false
	for _, list := range [][]authorization{s.authz.list, routeAuthz} {
		for i := range list {
			inNetwork = inNetwork || (list[i].authn != authnNone && list[i].networkOK(addr))
		}
	}
	client := "an invalid address"
	if addr.IsValid() {
		client = addr.String()
	}
	switch {
	case !inNetwork:
		return "unauthorized: " + where + " admits no client from " + client
	case !c.TLS || c.Identity == "":
		// A meshed client's proxy sends plaintext when it could not learn
		// the server's identity (its controller unreachable): say so, as
		// that client's operator will read this.
		return "unauthorized: " + where + " requires mesh TLS (client " + client + " came in plaintext: not meshed, or its proxy cannot reach its controller)"
	}
	return "unauthorized: " + where + " does not admit client " + sanitize(c.Identity)
}

// maxReasonIdentity bounds the identity a reason repeats.
const maxReasonIdentity = 256

// sanitize makes s safe for a header value: printable ASCII, bounded.
func sanitize(s string) string {
	clean := len(s) <= maxReasonIdentity
	for i := 0; clean && i < len(s); i++ {
		clean = s[i] >= 0x20 && s[i] < 0x7f
	}
	if clean {
		return s
	}
	b := make([]byte, 0, min(len(s), maxReasonIdentity)+3)
	for i := 0; i < len(s) && len(b) < maxReasonIdentity; i++ {
		if c := s[i]; c >= 0x20 && c < 0x7f {
			b = append(b, c)
		} else {
			b = append(b, '?')
		}
	}
	if len(s) > maxReasonIdentity {
		b = append(b, "..."...)
	}
	return string(b)
}

// Pending returns the policy of a port whose policy has not arrived from the
// controller, given the cluster's default inbound policy: all-unauthenticated
// (or "", the default when none is configured) admits every client, as a
// proxy without policy always did; any other default denies every client —
// fail closed — until the port's policy arrives.
func Pending(defaultPolicy string) *Server {
	if defaultPolicy == "" {
		defaultPolicy = contract.PolicyAllUnauthenticated
	}
	ref := Ref{Kind: "default", Name: defaultPolicy}
	s := &Server{ref: ref, pending: true}
	if defaultPolicy == contract.PolicyAllUnauthenticated {
		s.authz = newAuthzSet([]authorization{{ref: ref, authn: authnAny}})
	} else {
		s.failClosed = true
	}
	return s
}

// authnKind is an authorization's authentication.
type authnKind uint8

const (
	// authnNone: no authentication the proxy knows; admits nobody.
	authnNone authnKind = iota
	authnAny
	authnMeshTLS
)

// authorization is one compiled conduit.policy.v1.Authorization.
type authorization struct {
	ref         Ref
	networks    []network // empty: any address
	authn       authnKind
	anyIdentity bool     // mesh TLS with the empty prefix
	identities  []string // mesh TLS: exact identities
	prefixes    []string // mesh TLS: identity prefixes, without ""
}

// network is a prefix without its excepts.
type network struct {
	prefix netip.Prefix
	except []netip.Prefix
}

func (a *authorization) networkOK(addr netip.Addr) bool {
	if len(a.networks) == 0 {
		return true
	}
	for i := range a.networks {
		n := &a.networks[i]
		if !n.prefix.Contains(addr) {
			continue
		}
		excepted := false
		for _, e := range n.except {
			if e.Contains(addr) {
				excepted = true
				break
			}
		}
		if !excepted {
			return true
		}
	}
	return false
}

// authnOK reports whether a's authentication admits c; exact identities
// are compared only when withExact (else the set's index has done it).
func (a *authorization) authnOK(c *Conn, withExact bool) bool {
	switch a.authn {
	case authnAny:
		return true
	case authnMeshTLS:
		if !c.TLS || c.Identity == "" {
			return false
		}
		if a.anyIdentity {
			return true
		}
		if withExact {
			for _, id := range a.identities {
				if id == c.Identity {
					return true
				}
			}
		}
		for _, pfx := range a.prefixes {
			if strings.HasPrefix(c.Identity, pfx) {
				return true
			}
		}
	}
	return false
}

// indexAbove is the number of exact identities in a set above which they
// are looked up in a map rather than compared one by one.
const indexAbove = 8

// authzSet is a list of authorizations, any one of which admits.
type authzSet struct {
	list []authorization
	// exact, when not nil, maps each exact identity to the indexes of the
	// authorizations that name it (ascending); other lists the indexes of
	// those that can admit otherwise (unauthenticated, prefixes).
	exact map[string][]int32
	other []int32
}

func newAuthzSet(list []authorization) authzSet {
	s := authzSet{list: list}
	n := 0
	for i := range list {
		n += len(list[i].identities)
	}
	if n <= indexAbove {
		return s
	}
	s.exact = make(map[string][]int32, n)
	for i := range list {
		a := &list[i]
		for _, id := range a.identities {
			if ix := s.exact[id]; len(ix) == 0 || ix[len(ix)-1] != int32(i) {
				s.exact[id] = append(ix, int32(i))
			}
		}
		if a.authn == authnAny || a.anyIdentity || len(a.prefixes) > 0 {
			s.other = append(s.other, int32(i))
		}
	}
	return s
}

// admit returns the index of the first authorization (in the order
// received) that admits c from addr, or -1.
func (s *authzSet) admit(c *Conn, addr netip.Addr) int {
	if s.exact == nil {
		for i := range s.list {
			if a := &s.list[i]; a.authnOK(c, true) && a.networkOK(addr) {
				return i
			}
		}
		return -1
	}
	var hits []int32
	if c.TLS && c.Identity != "" {
		hits = s.exact[c.Identity]
	}
	other := s.other
	for len(hits) > 0 || len(other) > 0 {
		var i int32
		exact := false
		if len(other) == 0 || (len(hits) > 0 && hits[0] <= other[0]) {
			i, exact, hits = hits[0], true, hits[1:]
			if len(other) > 0 && other[0] == i {
				other = other[1:]
			}
		} else {
			i, other = other[0], other[1:]
		}
		if a := &s.list[i]; (exact || a.authnOK(c, false)) && a.networkOK(addr) {
			return int(i)
		}
	}
	return -1
}
