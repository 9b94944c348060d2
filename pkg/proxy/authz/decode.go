package authz

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
)

// The proxy decodes conduit.policy.v1 by hand with protowire instead of
// linking pkg/api's generated code (grpc-go and the protobuf runtime would
// cost megabytes of RSS in every pod). decode_test.go checks the decoder
// against the generated types, and FuzzDecodeInboundServer checks that it
// agrees with them on any input: fields repeated where one is expected
// merge as protobuf merges them, oneofs take the last case. HTTP route
// matches and refs are httpmatch's, which outbound routing shares.

// ErrMalformed wraps every error of Decode.
var ErrMalformed = errors.New("malformed inbound policy")

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
	var matches []httpmatch.Match
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType:
			return httpmatch.DecodeRef(f.Bytes, &s.ref)
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
	httpmatch.Sort(matches)
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

func decodeAuthorization(b []byte) (authorization, error) {
	var a authorization
	var prefixes []string
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			return httpmatch.DecodeRef(f.Bytes, &a.ref)
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
			return netip.Prefix{}, fmt.Errorf("invalid CIDR %q", httpmatch.Truncate(s))
		}
		p = netip.PrefixFrom(a, a.BitLen())
	}
	if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
		p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
	}
	return p.Masked(), nil
}

// decodeRoute decodes route number index and its matches.
func decodeRoute(b []byte, index int) (route, []httpmatch.Match, error) {
	var rt route
	var authz []authorization
	matches := httpmatch.Matches{Index: index}
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			return httpmatch.DecodeRef(f.Bytes, &rt.ref)
		case 2:
			return matches.Decode(f.Bytes)
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
	return rt, matches.List(), nil
}
