package route

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
)

// The proxy decodes conduit.destination.v1.OutboundRoutes by hand with
// protowire, as every control-plane message (pkg/api's generated code
// would link grpc-go and the protobuf runtime); the HttpMatch and Ref
// messages it embeds are decoded by httpmatch, as for inbound policy.
// decode_test.go checks the decoder against the generated types, and
// FuzzDecodeOutboundRoutes checks that it agrees with them on any input:
// fields repeated where one is expected merge as protobuf merges them,
// oneofs take the last case.

// ErrMalformed wraps every error of Decode.
var ErrMalformed = errors.New("malformed outbound routes")

// Decode compiles an OutboundRoutes message for authority (the rules
// without backends send to it). Malformed protobuf, or a match the proxy
// cannot compile (an invalid regular expression, a header or query
// parameter match without a name), is an error wrapping ErrMalformed.
// What the proxy does not know is never ignored where ignoring it would
// change what a request gets: a match holding a condition it does not know
// never matches, and a rule (or backend) with a filter it does not know or
// cannot apply safely — a header name that is not a token, or one the
// proxy owns (Host, Content-Length, Transfer-Encoding and the hop-by-hop
// fields), a value with a control character, a redirect to a scheme other
// than http and https, an invalid hostname, port, path or status — answers
// its requests 500 with the reason, as the Gateway API requires of filters
// that cannot be applied. Unknown fields elsewhere are skipped.
func Decode(authority string, b []byte) (*Table, error) {
	t, err := decodeTable(authority, b)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return t, nil
}

// routeSpec and ruleSpec are a route and a rule as received.
type routeSpec struct {
	ref     Ref
	created int64
	rules   []ruleSpec
}

type ruleSpec struct {
	matches  httpmatch.Matches
	filters  []filterSpec
	backends []backendSpec
	policy   Policy
}

type backendSpec struct {
	authority, invalid string
	weight             uint32
	filters            []filterSpec
}

func decodeTable(authority string, b []byte) (*Table, error) {
	t := &Table{authority: authority}
	var routes []routeSpec
	var service Policy
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.VarintType:
			t.found = f.Varint != 0
		case f.Num == 2 && f.Type == protowire.BytesType:
			rt, err := decodeRoute(f.Bytes)
			if err != nil {
				return fmt.Errorf("route %d: %w", len(routes), err)
			}
			routes = append(routes, rt)
		case f.Num == 3 && f.Type == protowire.BytesType:
			return decodePolicy(f.Bytes, &service)
		case f.Num == 4 && f.Type == protowire.BytesType:
			t.hasAccrual = true
			return decodeAccrual(f.Bytes, &t.accrual)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !t.found {
		return &Table{authority: authority}, nil
	}
	t.service = service
	// The Gateway API's tie-breaks: the oldest route, then the first by
	// "namespace/name"; then (Sort is stable) the first rule, and a
	// rule's matches in order.
	slices.SortStableFunc(routes, func(a, b routeSpec) int {
		if a.created != b.created {
			if a.created < b.created {
				return -1
			}
			return 1
		}
		an, bn := a.ref.Namespace+"/"+a.ref.Name, b.ref.Namespace+"/"+b.ref.Name
		switch {
		case an < bn:
			return -1
		case an > bn:
			return 1
		}
		return 0
	})
	t.routes = len(routes)
	for _, rt := range routes {
		for i := range rt.rules {
			spec := &rt.rules[i]
			index := len(t.rules)
			for _, m := range spec.matches.List() {
				m.Index = index
				t.matches = append(t.matches, m)
			}
			t.rules = append(t.rules, buildRule(authority, rt.ref, i, spec, service))
		}
	}
	httpmatch.Sort(t.matches)
	return t, nil
}

func decodeRoute(b []byte) (routeSpec, error) {
	var rt routeSpec
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType:
			return httpmatch.DecodeRef(f.Bytes, &rt.ref)
		case f.Num == 2 && f.Type == protowire.BytesType:
			rule, err := decodeRule(f.Bytes)
			if err != nil {
				return fmt.Errorf("rule %d: %w", len(rt.rules), err)
			}
			rt.rules = append(rt.rules, rule)
		case f.Num == 3 && f.Type == protowire.VarintType:
			rt.created = int64(f.Varint)
		}
		return nil
	})
	return rt, err
}

func decodeRule(b []byte) (ruleSpec, error) {
	var r ruleSpec
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			return r.matches.Decode(f.Bytes)
		case 2:
			fs, err := decodeFilter(f.Bytes)
			r.filters = append(r.filters, fs)
			return err
		case 3:
			be, err := decodeBackend(f.Bytes)
			if err != nil {
				return fmt.Errorf("backend %d: %w", len(r.backends), err)
			}
			r.backends = append(r.backends, be)
		case 4:
			return decodePolicy(f.Bytes, &r.policy)
		}
		return nil
	})
	return r, err
}

func decodeBackend(b []byte) (backendSpec, error) {
	var be backendSpec
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType:
			be.authority = string(f.Bytes)
		case f.Num == 2 && f.Type == protowire.VarintType:
			be.weight = uint32(f.Varint)
		case f.Num == 3 && f.Type == protowire.BytesType:
			fs, err := decodeFilter(f.Bytes)
			be.filters = append(be.filters, fs)
			return err
		case f.Num == 4 && f.Type == protowire.BytesType:
			be.invalid = string(f.Bytes)
		}
		return nil
	})
	return be, err
}

// decodePolicy decodes a RoutePolicy into p, over what p holds.
func decodePolicy(b []byte, p *Policy) error {
	return grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.VarintType:
			p.RequestTimeout = millis(f.Varint)
		case f.Num == 2 && f.Type == protowire.VarintType:
			p.BackendRequestTimeout = millis(f.Varint)
		case f.Num == 3 && f.Type == protowire.BytesType:
			return decodeRetry(f.Bytes, &p.Retry)
		}
		return nil
	})
}

func decodeRetry(b []byte, r *Retry) error {
	return grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.VarintType:
			r.Limit = uint32(f.Varint)
		case f.Num == 2 && f.Type == protowire.BytesType:
			var s StatusRange
			err := grpcwire.RangeFields(f.Bytes, func(f grpcwire.Field) error {
				switch {
				case f.Num == 1 && f.Type == protowire.VarintType:
					s.Min = uint32(f.Varint)
				case f.Num == 2 && f.Type == protowire.VarintType:
					s.Max = uint32(f.Varint)
				}
				return nil
			})
			r.HTTPStatuses = append(r.HTTPStatuses, s)
			return err
		case f.Num == 3 && f.Type == protowire.VarintType:
			r.GRPCCodes = append(r.GRPCCodes, uint32(f.Varint))
		case f.Num == 3 && f.Type == protowire.BytesType: // packed
			for p := f.Bytes; len(p) > 0; {
				v, n := protowire.ConsumeVarint(p)
				if n < 0 {
					return fmt.Errorf("grpc_codes: %w", protowire.ParseError(n))
				}
				r.GRPCCodes = append(r.GRPCCodes, uint32(v))
				p = p[n:]
			}
		case f.Num == 4 && f.Type == protowire.VarintType:
			r.Timeout = millis(f.Varint)
		}
		return nil
	})
}

func decodeAccrual(b []byte, a *FailureAccrual) error {
	return grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.VarintType:
			a.ConsecutiveMaxFailures = uint32(f.Varint)
		case f.Num == 2 && f.Type == protowire.VarintType:
			a.MinPenalty = millis(f.Varint)
		case f.Num == 3 && f.Type == protowire.VarintType:
			a.MaxPenalty = millis(f.Varint)
		case f.Num == 4 && f.Type == protowire.Fixed64Type:
			a.JitterRatio = math.Float64frombits(f.Varint)
		}
		return nil
	})
}

// millis converts milliseconds, saturating.
func millis(ms uint64) time.Duration {
	if ms > math.MaxInt64/uint64(time.Millisecond) {
		return math.MaxInt64
	}
	return time.Duration(ms) * time.Millisecond
}

// filterSpec is a Filter as received: kind is the oneof's field number (0:
// none), unknown is set when it (or the case it holds) has a field the
// proxy does not know.
type filterSpec struct {
	kind     protowire.Number
	modifier modifierSpec
	redirect redirectSpec
	unknown  bool
}

const (
	requestHeaderModifier  = 1
	requestRedirect        = 2
	responseHeaderModifier = 3
)

type modifierSpec struct {
	set, add []headerSpec
	remove   []string
}

type headerSpec struct{ name, value string }

type redirectSpec struct {
	scheme, hostname string
	port, status     uint32
	pathKind         redirectPath
	path             string
}

func decodeFilter(b []byte) (filterSpec, error) {
	var fs filterSpec
	outer := false // a field of Filter itself the proxy does not know
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType || f.Num < requestHeaderModifier || f.Num > responseHeaderModifier {
			outer = true
			return nil
		}
		if f.Num != fs.kind { // another case replaces the oneof's
			fs = filterSpec{kind: f.Num}
		}
		if f.Num == requestRedirect {
			return decodeRedirect(f.Bytes, &fs.redirect, &fs.unknown)
		}
		return decodeModifier(f.Bytes, &fs.modifier, &fs.unknown)
	})
	fs.unknown = fs.unknown || outer || fs.kind == 0
	return fs, err
}

func decodeModifier(b []byte, m *modifierSpec, unknown *bool) error {
	return grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType || f.Num < 1 || f.Num > 3 {
			*unknown = true
			return nil
		}
		if f.Num == 3 {
			m.remove = append(m.remove, string(f.Bytes))
			return nil
		}
		var h headerSpec
		err := grpcwire.RangeFields(f.Bytes, func(f grpcwire.Field) error {
			switch {
			case f.Num == 1 && f.Type == protowire.BytesType:
				h.name = string(f.Bytes)
			case f.Num == 2 && f.Type == protowire.BytesType:
				h.value = string(f.Bytes)
			default:
				*unknown = true
			}
			return nil
		})
		if f.Num == 1 {
			m.set = append(m.set, h)
		} else {
			m.add = append(m.add, h)
		}
		return err
	})
}

func decodeRedirect(b []byte, r *redirectSpec, unknown *bool) error {
	return grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType:
			r.scheme = string(f.Bytes)
		case f.Num == 2 && f.Type == protowire.BytesType:
			r.hostname = string(f.Bytes)
		case f.Num == 3 && f.Type == protowire.VarintType:
			r.port = uint32(f.Varint)
		case f.Num == 4 && f.Type == protowire.BytesType:
			return grpcwire.RangeFields(f.Bytes, func(f grpcwire.Field) error {
				switch {
				case f.Num == 1 && f.Type == protowire.BytesType:
					r.pathKind, r.path = fullPath, string(f.Bytes)
				case f.Num == 2 && f.Type == protowire.BytesType:
					r.pathKind, r.path = prefixPath, string(f.Bytes)
				default:
					*unknown = true
				}
				return nil
			})
		case f.Num == 5 && f.Type == protowire.VarintType:
			r.status = uint32(f.Varint)
		default:
			*unknown = true
		}
		return nil
	})
}
