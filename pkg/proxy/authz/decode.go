package authz

import (
	"errors"
	"fmt"
	"net/netip"
	"net/textproto"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
)

// The proxy decodes conduit.policy.v1 by hand with protowire instead of
// linking pkg/api's generated code (grpc-go and the protobuf runtime would
// cost megabytes of RSS in every pod). decode_test.go checks the decoder
// against the generated types, and FuzzDecodeInboundServer checks that it
// agrees with them on any input: fields repeated where one is expected
// merge as protobuf merges them, oneofs take the last case.

// ErrMalformed wraps every error of Decode.
var ErrMalformed = errors.New("malformed inbound policy")

// maxRegex bounds a regular expression's source (Gateway API allows 1024
// characters for a path and 4096 for a header value).
const maxRegex = 4096

// Decode compiles a conduit.policy.v1.InboundServer message. Malformed
// protobuf, an invalid network or regular expression, or a header or query
// parameter match without a name is an error (wrapping ErrMalformed);
// protocol values the proxy does not know are ProtocolDetect, an
// authorization whose authentication it does not know admits nobody, and a
// header or query parameter match without a value matches when the header
// or parameter is present. An HttpMatch holding a field the proxy does not
// know (a condition it cannot check, at any depth) never matches.
func Decode(b []byte) (*Server, error) {
	s, err := decodeServer(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return s, nil
}

func decodeServer(b []byte) (*Server, error) {
	s := &Server{}
	var authz []authorization
	var matches []routeMatch
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType:
			return decodeRef(f.Bytes, &s.ref)
		case f.Num == 2 && f.Type == protowire.VarintType:
			s.protocol = protocolOf(f.Varint)
		case f.Num == 3 && f.Type == protowire.BytesType:
			a, err := decodeAuthorization(f.Bytes)
			if err != nil {
				return fmt.Errorf("authorization %d: %w", len(authz), err)
			}
			authz = append(authz, a)
		case f.Num == 4 && f.Type == protowire.BytesType:
			rt, ms, err := decodeRoute(f.Bytes, len(s.routes))
			if err != nil {
				return fmt.Errorf("route %d: %w", len(s.routes), err)
			}
			s.routes = append(s.routes, rt)
			matches = append(matches, ms...)
		case f.Num == 5 && f.Type == protowire.VarintType:
			s.failClosed = f.Varint != 0
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.authz = newAuthzSet(authz)
	slices.SortStableFunc(matches, byPrecedence)
	s.matches = matches
	where := s.ref.String()
	if where == "" {
		where = "the port's policy"
	}
	s.notFound = "not found: no route of " + where + " matches the request"
	return s, nil
}

// protocolOf maps the enum (an int32 on the wire, as protobuf truncates it).
func protocolOf(v uint64) Protocol {
	switch int32(v) {
	case 1:
		return ProtocolHTTP1
	case 2:
		return ProtocolHTTP2
	case 3:
		return ProtocolGRPC
	case 4:
		return ProtocolOpaque
	}
	return ProtocolDetect
}

// decodeRef decodes a Ref into r, over what r holds (a message field
// that occurs twice merges).
func decodeRef(b []byte, r *Ref) error {
	return grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			r.Kind = string(f.Bytes)
		case 2:
			r.Name = string(f.Bytes)
		case 3:
			r.Namespace = string(f.Bytes)
		}
		return nil
	})
}

func decodeAuthorization(b []byte) (authorization, error) {
	var a authorization
	var prefixes []string
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			return decodeRef(f.Bytes, &a.ref)
		case 2:
			n, err := decodeNetwork(f.Bytes)
			if err != nil {
				return fmt.Errorf("network %d: %w", len(a.networks), err)
			}
			a.networks = append(a.networks, n)
		case 3: // unauthenticated: an empty message
			a.authn, a.identities, prefixes = authnAny, nil, nil
			return grpcwire.RangeFields(f.Bytes, func(grpcwire.Field) error { return nil })
		case 4: // mesh_tls
			if a.authn != authnMeshTLS {
				a.authn, a.identities, prefixes = authnMeshTLS, nil, nil
			}
			return grpcwire.RangeFields(f.Bytes, func(f grpcwire.Field) error {
				switch {
				case f.Num == 1 && f.Type == protowire.BytesType:
					a.identities = append(a.identities, string(f.Bytes))
				case f.Num == 2 && f.Type == protowire.BytesType:
					prefixes = append(prefixes, string(f.Bytes))
				}
				return nil
			})
		}
		return nil
	})
	for _, pfx := range prefixes {
		if pfx == "" {
			a.anyIdentity = true
		} else if !slices.Contains(a.prefixes, pfx) {
			a.prefixes = append(a.prefixes, pfx)
		}
	}
	if a.anyIdentity {
		a.identities, a.prefixes = nil, nil
	}
	return a, err
}

func decodeNetwork(b []byte) (network, error) {
	var cidr string
	var except []string
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType:
			cidr = string(f.Bytes)
		case f.Num == 2 && f.Type == protowire.BytesType:
			except = append(except, string(f.Bytes))
		}
		return nil
	})
	if err != nil {
		return network{}, err
	}
	var n network
	if n.prefix, err = parsePrefix(cidr); err != nil {
		return network{}, err
	}
	for _, e := range except {
		p, err := parsePrefix(e)
		if err != nil {
			return network{}, fmt.Errorf("except: %w", err)
		}
		n.except = append(n.except, p)
	}
	return n, nil
}

// parsePrefix parses a CIDR (or a single address), masked, IPv4-mapped
// IPv6 prefixes as IPv4 since clients' addresses are unmapped.
func parsePrefix(s string) (netip.Prefix, error) {
	p, err := netip.ParsePrefix(s)
	if err != nil {
		a, aerr := netip.ParseAddr(s)
		if aerr != nil || a.Zone() != "" {
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", truncate(s))
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// truncate bounds a peer's string quoted in an error.
func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// decodeRoute decodes route number index and its matches.
func decodeRoute(b []byte, index int) (route, []routeMatch, error) {
	var rt route
	var authz []authorization
	var matches, unknown []routeMatch
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			return decodeRef(f.Bytes, &rt.ref)
		case 2:
			m, known, err := decodeMatch(f.Bytes)
			if err != nil {
				return fmt.Errorf("match %d: %w", len(matches)+len(unknown), err)
			}
			m.route = index
			if known {
				matches = append(matches, m)
			} else {
				unknown = append(unknown, m)
			}
		case 3:
			a, err := decodeAuthorization(f.Bytes)
			if err != nil {
				return fmt.Errorf("authorization %d: %w", len(authz), err)
			}
			authz = append(authz, a)
		}
		return nil
	})
	if err != nil {
		return route{}, nil, err
	}
	rt.authz = newAuthzSet(authz)
	if len(matches)+len(unknown) == 0 {
		// No matches: the route matches every request.
		matches = append(matches, routeMatch{route: index})
	}
	return rt, matches, nil
}

// pathSpec accumulates a PathMatch (merged over repeated occurrences).
type pathSpec struct {
	kind  pathKind
	value string
}

// decodeMatch decodes an HttpMatch; known is false when it holds a field
// the proxy does not know (a condition of a newer controller, which must
// not be ignored: such a match never matches).
func decodeMatch(b []byte) (m routeMatch, known bool, err error) {
	var path pathSpec
	var headers, query []valueSpec
	known = true
	err = grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType || f.Num < 1 || f.Num > 4 {
			known = false
			return nil
		}
		switch f.Num {
		case 1:
			return grpcwire.RangeFields(f.Bytes, func(f grpcwire.Field) error {
				if f.Type != protowire.BytesType || f.Num < 1 || f.Num > 3 {
					known = false
					return nil
				}
				path = pathSpec{[...]pathKind{1: pathExact, 2: pathPrefix, 3: pathRegex}[f.Num], string(f.Bytes)}
				return nil
			})
		case 2:
			v, err := decodeValueMatch(f.Bytes)
			headers = append(headers, v)
			known = known && v.known
			return err
		case 3:
			v, err := decodeValueMatch(f.Bytes)
			query = append(query, v)
			known = known && v.known
			return err
		case 4:
			m.method = string(f.Bytes)
		}
		return nil
	})
	if err != nil {
		return routeMatch{}, false, err
	}
	m.path.kind = path.kind
	switch path.kind {
	case pathExact:
		m.path.value = path.value
	case pathPrefix:
		// A trailing slash is ignored; "/" matches every path.
		if m.path.value = strings.TrimRight(path.value, "/"); m.path.value == "" {
			m.path.kind = pathAny
		}
	case pathRegex:
		if m.path.re, err = compileRegex(path.value); err != nil {
			return routeMatch{}, false, fmt.Errorf("path: %w", err)
		}
	}
	if m.headers, err = compileValues(headers, true); err != nil {
		return routeMatch{}, false, fmt.Errorf("header: %w", err)
	}
	if m.query, err = compileValues(query, false); err != nil {
		return routeMatch{}, false, fmt.Errorf("query parameter: %w", err)
	}
	return m, known, nil
}

// valueSpec is a HeaderMatch or QueryParamMatch as received.
type valueSpec struct {
	name  string
	kind  valueKind
	value string
	known bool // no field the proxy does not know
}

func decodeValueMatch(b []byte) (valueSpec, error) {
	v := valueSpec{known: true}
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			v.known = false
			return nil
		}
		switch f.Num {
		default:
			v.known = false
		case 1:
			v.name = string(f.Bytes)
		case 2:
			v.kind, v.value = valueExact, string(f.Bytes)
		case 3:
			v.kind, v.value = valueRegex, string(f.Bytes)
		}
		return nil
	})
	return v, err
}

// compileValues compiles header (case-insensitive names) or query
// parameter matches; of several with the same name only the first counts,
// as Gateway API specifies.
func compileValues(specs []valueSpec, header bool) ([]valueMatch, error) {
	var out []valueMatch
	for _, v := range specs {
		if v.name == "" {
			return nil, errors.New("match without a name")
		}
		m := valueMatch{name: v.name, kind: v.kind}
		if header {
			m.name = asciiLower(v.name) // as equalFoldLower compares
			m.canon = textproto.CanonicalMIMEHeaderKey(v.name)
		}
		if slices.ContainsFunc(out, func(o valueMatch) bool { return o.name == m.name }) {
			continue
		}
		switch v.kind {
		case valueExact:
			m.exact = v.value
		case valueRegex:
			var err error
			if m.re, err = compileRegex(v.value); err != nil {
				return nil, fmt.Errorf("%s: %w", truncate(v.name), err)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}

// compileRegex compiles RE2 source to match whole values.
func compileRegex(src string) (*regexp.Regexp, error) {
	if len(src) > maxRegex {
		return nil, fmt.Errorf("regular expression of %d bytes, longer than %d", len(src), maxRegex)
	}
	// Parse alone first: anchoring must not change what src means (as
	// "a)|(b" would, wrapped).
	if _, err := syntax.Parse(src, syntax.Perl); err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", truncate(src), err)
	}
	re, err := regexp.Compile(`^(?:` + src + `)$`)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", truncate(src), err)
	}
	return re, nil
}

// byPrecedence orders matches by Gateway API's HTTPRoute precedence: an
// exact path, then (implementation-specific there) a regular expression
// path, which spans the whole path, then the longest prefix; then a method;
// then the most header matches; then the most query parameter matches. Ties
// keep the order received (routes in the controller's order, then their
// matches).
func byPrecedence(a, b routeMatch) int {
	if ra, rb := rank(a.path.kind), rank(b.path.kind); ra != rb {
		return rb - ra
	}
	if rank(a.path.kind) == rank(pathPrefix) && len(a.path.value) != len(b.path.value) {
		return len(b.path.value) - len(a.path.value) // pathAny's value is ""
	}
	if (a.method != "") != (b.method != "") {
		if a.method != "" {
			return -1
		}
		return 1
	}
	if len(a.headers) != len(b.headers) {
		return len(b.headers) - len(a.headers)
	}
	return len(b.query) - len(a.query)
}

// rank orders path kinds; no path match is the prefix "/", shorter than
// any other prefix.
func rank(k pathKind) int {
	switch k {
	case pathExact:
		return 3
	case pathRegex:
		return 2
	}
	return 1
}
