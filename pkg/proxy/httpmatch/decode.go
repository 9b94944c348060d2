package httpmatch

import (
	"errors"
	"fmt"
	"net/textproto"
	"regexp"
	"regexp/syntax"
	"slices"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
)

// The match messages are decoded by hand with protowire, as the rest of the
// proxy's control-plane messages (pkg/api's generated code would link
// grpc-go and the protobuf runtime). Fields repeated where one is expected
// merge as protobuf merges them, oneofs take the last case; the fuzz
// targets of authz and route check this against the generated code.

// MaxRegex bounds a regular expression's source (Gateway API allows 1024
// characters for a path and 4096 for a header value).
const MaxRegex = 4096

// Ref names the resource a match, a decision or a route came from
// (conduit.policy.v1.Ref): Kind is e.g. "server", "authorizationpolicy",
// "httproute", "grpcroute", "default" or "probe".
type Ref struct {
	Kind, Name, Namespace string
}

// String is "kind name", as reasons name resources ("server web-http",
// "default deny"); "" for the zero Ref.
func (r Ref) String() string {
	switch {
	case r.Kind == "" && r.Name == "":
		return ""
	case r.Kind == "":
		return r.Name
	case r.Name == "":
		return r.Kind
	}
	return r.Kind + " " + r.Name
}

// DecodeRef decodes a conduit.policy.v1.Ref into r, over what r holds (a
// message field that occurs twice merges).
func DecodeRef(b []byte, r *Ref) error {
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

// Matches collects the matches of one route (or rule) as its
// conduit.policy.v1.HttpMatch fields are decoded.
type Matches struct {
	// Index is set on every match (Match.Index).
	Index int
	list  []Match
	n     int // HttpMatch fields decoded, known or not
}

// Decode compiles one HttpMatch. A regular expression that does not
// compile (or is longer than MaxRegex) or a header or query parameter
// match without a name is an error; a header or query parameter match
// without a value matches when the header or parameter is present. An
// HttpMatch holding a field the proxy does not know (a condition of a newer
// controller, at any depth) is dropped: it must not be ignored, so it
// never matches.
func (ms *Matches) Decode(b []byte) error {
	m, known, err := decodeMatch(b)
	if err != nil {
		return fmt.Errorf("match %d: %w", ms.n, err)
	}
	ms.n++
	if known {
		m.Index = ms.Index
		ms.list = append(ms.list, m)
	}
	return nil
}

// List returns the matches decoded, unsorted; when none was given, one that
// matches every request (a route without matches matches everything, and
// one whose matches the proxy all dropped matches nothing).
func (ms *Matches) List() []Match {
	if ms.n == 0 {
		return []Match{{Index: ms.Index}}
	}
	return ms.list
}

// pathSpec accumulates a PathMatch (merged over repeated occurrences).
type pathSpec struct {
	kind  pathKind
	value string
}

// decodeMatch decodes an HttpMatch; known is false when it holds a field
// the proxy does not know.
func decodeMatch(b []byte) (m Match, known bool, err error) {
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
		return Match{}, false, err
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
			return Match{}, false, fmt.Errorf("path: %w", err)
		}
	}
	if m.headers, err = compileValues(headers, true); err != nil {
		return Match{}, false, fmt.Errorf("header: %w", err)
	}
	if m.query, err = compileValues(query, false); err != nil {
		return Match{}, false, fmt.Errorf("query parameter: %w", err)
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
			m.name = ASCIILower(v.name) // as EqualFoldLower compares
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
				return nil, fmt.Errorf("%s: %w", Truncate(v.name), err)
			}
		}
		out = append(out, m)
	}
	return out, nil
}

// ASCIILower lowers the ASCII letters of s (header names: HTTP/2's form,
// and what EqualFoldLower compares with).
func ASCIILower(s string) string {
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
	if len(src) > MaxRegex {
		return nil, fmt.Errorf("regular expression of %d bytes, longer than %d", len(src), MaxRegex)
	}
	// Parse alone first: anchoring must not change what src means (as
	// "a)|(b" would, wrapped).
	if _, err := syntax.Parse(src, syntax.Perl); err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", Truncate(src), err)
	}
	re, err := regexp.Compile(`^(?:` + src + `)$`)
	if err != nil {
		return nil, fmt.Errorf("invalid regular expression %q: %w", Truncate(src), err)
	}
	return re, nil
}

// Truncate bounds a peer's string quoted in an error.
func Truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
