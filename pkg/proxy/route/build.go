package route

import (
	"fmt"

	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
)

// buildRule compiles rule number index of route ref.
func buildRule(authority string, ref Ref, index int, spec *ruleSpec, service Policy) Rule {
	r := Rule{Route: ref, Index: index, Policy: spec.policy.orElse(service)}
	hs, redirect, invalid := compileFilters(spec.filters, true)
	if invalid == "" {
		r.headers, r.redirect = hs, redirect
	}
	for _, be := range spec.backends {
		b := Backend{Authority: be.authority, Weight: be.weight, Invalid: be.invalid}
		hs, _, bad := compileFilters(be.filters, false)
		switch {
		case b.Invalid != "":
		case bad != "":
			b.Invalid = "backend " + be.authority + ": " + bad
		case b.Authority == "":
			b.Invalid = "a backend without an authority"
		default:
			b.headers = hs
		}
		r.backends = append(r.backends, b)
	}
	switch {
	case invalid != "":
		r.only = &Backend{Invalid: r.String() + ": " + invalid}
	case len(r.backends) == 0:
		r.only = &Backend{Authority: authority, Weight: 1}
	default:
		var total uint64
		weighted, last := 0, 0
		r.cumulative = make([]uint64, len(r.backends))
		for i, b := range r.backends {
			if b.Weight > 0 {
				weighted, last = weighted+1, i
			}
			total += uint64(b.Weight)
			r.cumulative[i] = total
		}
		switch weighted {
		case 0:
			r.only = &Backend{Invalid: r.String() + ": every backend has weight 0"}
		case 1:
			r.only = &r.backends[last]
		}
		if r.only != nil {
			r.cumulative = nil
		}
	}
	return r
}

// compileFilters compiles the filters of a rule (or, when !rule, of a
// backend, which may not redirect); invalid says why they cannot be
// applied.
func compileFilters(specs []filterSpec, rule bool) (hs headers, redirect *Redirect, invalid string) {
	for _, f := range specs {
		if f.unknown {
			return headers{}, nil, "a filter this proxy does not support"
		}
		switch f.kind {
		case requestRedirect:
			if !rule {
				return headers{}, nil, "a redirect filter on a backend"
			}
			if redirect, invalid = compileRedirect(&f.redirect); invalid != "" {
				return headers{}, nil, invalid
			}
		default:
			m, bad := compileModifier(&f.modifier)
			if bad != "" {
				return headers{}, nil, bad
			}
			if f.kind == requestHeaderModifier {
				hs.request = append(hs.request, m)
			} else {
				hs.response = append(hs.response, m)
			}
		}
	}
	return hs, redirect, ""
}

// ownedHeaders are the fields the proxy frames, routes or hops by: filters
// may not touch them (lower case).
var ownedHeaders = map[string]bool{
	"host": true, "content-length": true, "transfer-encoding": true, "connection": true,
	"keep-alive": true, "proxy-connection": true, "te": true, "trailer": true, "upgrade": true,
}

func compileModifier(spec *modifierSpec) (HeaderModifier, string) {
	var m HeaderModifier
	for _, list := range []struct {
		specs []headerSpec
		dst   *[]Header
	}{{spec.set, &m.set}, {spec.add, &m.add}} {
		for _, h := range list.specs {
			if bad := checkName(h.name); bad != "" {
				return HeaderModifier{}, bad
			}
			if !validValue(h.value) {
				return HeaderModifier{}, fmt.Sprintf("a control character in the value of header %q", httpmatch.Truncate(h.name))
			}
			*list.dst = append(*list.dst, newHeader(h.name, h.value))
		}
	}
	for _, name := range spec.remove {
		if bad := checkName(name); bad != "" {
			return HeaderModifier{}, bad
		}
		m.remove = append(m.remove, newHeader(name, ""))
	}
	return m, ""
}

// checkName says why a header modifier may not use name ("" when it may).
func checkName(name string) string {
	if !isToken(name) {
		return fmt.Sprintf("invalid header name %q in a filter", httpmatch.Truncate(name))
	}
	if ownedHeaders[httpmatch.ASCIILower(name)] {
		return fmt.Sprintf("a filter may not modify header %s", name)
	}
	return ""
}

// isToken reports whether s is an RFC 9110 token (a valid field name).
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case c < 0x80 && c > ' ' && c != 0x7f && !isDelimiter(c):
		default:
			return false
		}
	}
	return true
}

func isDelimiter(c byte) bool {
	for i := 0; i < len(`"(),/:;<=>?@[\]{}`); i++ {
		if c == `"(),/:;<=>?@[\]{}`[i] {
			return true
		}
	}
	return false
}

// validValue reports whether v may be written as a field value: no control
// character but HTAB.
func validValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

func compileRedirect(spec *redirectSpec) (*Redirect, string) {
	rd := &Redirect{Scheme: spec.scheme, Hostname: spec.hostname, pathKind: spec.pathKind, path: spec.path}
	switch spec.scheme {
	case "", "http", "https":
	default:
		return nil, fmt.Sprintf("redirect to scheme %q", httpmatch.Truncate(spec.scheme))
	}
	for i := 0; i < len(spec.hostname); i++ {
		c := spec.hostname[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.') {
			return nil, fmt.Sprintf("redirect to hostname %q", httpmatch.Truncate(spec.hostname))
		}
	}
	if spec.port > 65535 {
		return nil, fmt.Sprintf("redirect to port %d", spec.port)
	}
	rd.Port = spec.port
	if p := spec.path; p != "" && p[0] != '/' || !validPath(p) {
		return nil, fmt.Sprintf("redirect to path %q", httpmatch.Truncate(p))
	}
	switch spec.status {
	case 0:
		rd.Status = 302
	case 301, 302, 303, 307, 308:
		rd.Status = int(spec.status)
	default:
		return nil, fmt.Sprintf("redirect with status %d", spec.status)
	}
	return rd, ""
}

// validPath reports whether p may stand as a Location's path: no space,
// control character, '?' or '#'.
func validPath(p string) bool {
	for i := 0; i < len(p); i++ {
		if c := p[i]; c <= ' ' || c == 0x7f || c == '?' || c == '#' {
			return false
		}
	}
	return true
}
