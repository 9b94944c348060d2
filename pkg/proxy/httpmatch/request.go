package httpmatch

import (
	"net/http"
)

// Field is one header field as a fast path received it, the name as sent.
// pkg/proxy's Field is an alias of this one (through authz.Field), so the
// fast paths hand their fields over as they are.
type Field struct{ Name, Value []byte }

// Request is what matching needs of an HTTP request. Build it with
// FieldsRequest (the fast paths) or HTTPRequest (net/http); neither copies
// anything, and matching keeps nothing of the request, so the buffers may
// be reused once Pick (or the decision built on it) returns.
type Request struct {
	// From FieldsRequest.
	method, path, query []byte
	fields              []Field
	// From HTTPRequest (std set).
	std                    bool
	sMethod, sPath, sQuery string
	host                   string
	header                 http.Header
}

// FieldsRequest wraps a request as a fast path parsed it: its method,
// request target (origin form "/path?query", absolute form
// "http://host/path?query", or "*"; HTTP/2's :path) and end-to-end header
// fields. Matches see the target's path as received (percent-encoding
// kept), without the query.
func FieldsRequest(method, target []byte, fields []Field) Request {
	path, query := splitTarget(target)
	return Request{method: method, path: path, query: query, fields: fields}
}

// HTTPRequest wraps a request net/http parsed (either protocol). Its path
// and query are split from RequestURI as FieldsRequest splits a target (the
// URL's escaped path and raw query when RequestURI is empty); the Host
// header is r.Host.
func HTTPRequest(r *http.Request) Request {
	req := Request{std: true, sMethod: r.Method, header: r.Header, host: r.Host}
	if r.RequestURI != "" {
		req.sPath, req.sQuery = splitTarget(r.RequestURI)
	} else if r.URL != nil {
		req.sPath, req.sQuery = r.URL.EscapedPath(), r.URL.RawQuery
	}
	return req
}

// Path is the request's path, as matches see it (a copy on the fast paths).
func (r *Request) Path() string {
	if r.std {
		return r.sPath
	}
	return string(r.path)
}

// Query is the request's raw query, without the '?' (a copy on the fast
// paths).
func (r *Request) Query() string {
	if r.std {
		return r.sQuery
	}
	return string(r.query)
}

// splitTarget returns the path and query of a request target: origin form
// "/p?q", absolute form "http://host/p?q" (path "/" when it has none),
// or "*" and CONNECT's authority, which are all path.
func splitTarget[S text](t S) (path, query S) {
	if len(t) > 0 && t[0] != '/' {
		i := indexOf(t, "://")
		if i < 0 {
			return t, t[:0]
		}
		t = t[i+3:]
		end := 0
		for end < len(t) && t[end] != '/' && t[end] != '?' {
			end++
		}
		t = t[end:]
		if len(t) == 0 || t[0] == '?' {
			if len(t) > 0 {
				query = t[1:]
			}
			return rootPath[S](), query
		}
	}
	for i := 0; i < len(t); i++ {
		if t[i] == '?' {
			return t[:i], t[i+1:]
		}
	}
	return t, t[:0]
}

// rootPath is "/" as an S.
func rootPath[S text]() S {
	var s S
	switch p := any(&s).(type) {
	case *string:
		*p = "/"
	case *[]byte:
		*p = slash
	}
	return s
}

var slash = []byte("/")

func indexOf[S text](b S, s string) int {
	for i := 0; i+len(s) <= len(b); i++ {
		if string(b[i:i+len(s)]) == s {
			return i
		}
	}
	return -1
}

// text is what request strings come as: net/http's strings or the fast
// path's bytes. Matching is generic over both so that neither is copied.
type text interface{ ~string | ~[]byte }

// headerMatches reports whether any value of the header m names matches.
func (r *Request) headerMatches(m *valueMatch) bool {
	if r.std {
		if m.canon == "Host" && r.host != "" {
			return matchValue(m, r.host)
		}
		for _, v := range r.header[m.canon] {
			if matchValue(m, v) {
				return true
			}
		}
		return false
	}
	for i := range r.fields {
		if f := &r.fields[i]; EqualFoldLower(f.Name, m.name) && matchValue(m, f.Value) {
			return true
		}
	}
	return false
}

// EqualFoldLower reports whether b equals the lower-case ASCII lower,
// ignoring ASCII case.
func EqualFoldLower[S text](b S, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i := 0; i < len(b); i++ {
		c := b[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// queryMatches matches the first parameter of the raw query named m.name
// (names and values are compared percent-decoded, '+' as a space).
func queryMatches[S text](m *valueMatch, query S) bool {
	for len(query) > 0 {
		seg := query
		query = query[:0]
		for i := 0; i < len(seg); i++ {
			if seg[i] == '&' {
				seg, query = seg[:i], seg[i+1:]
				break
			}
		}
		name, value := seg, seg[:0]
		for i := 0; i < len(seg); i++ {
			if seg[i] == '=' {
				name, value = seg[:i], seg[i+1:]
				break
			}
		}
		if !unescapedEqual(name, m.name) {
			continue
		}
		switch m.kind {
		case valueExact:
			return unescapedEqual(value, m.exact)
		case valueRegex:
			if needsUnescape(value) {
				return m.re.Match(unescape(value))
			}
			return reMatch(m.re, value)
		}
		return true
	}
	return false
}

func needsUnescape[S text](s S) bool {
	for i := 0; i < len(s); i++ {
		if s[i] == '%' || s[i] == '+' {
			return true
		}
	}
	return false
}

// unescapeAt decodes the query character at s[i]: it returns the byte and
// the length it took ("%41" is 'A' in 3; a '%' not followed by two hex
// digits stands for itself).
func unescapeAt[S text](s S, i int) (byte, int) {
	switch c := s[i]; c {
	case '+':
		return ' ', 1
	case '%':
		if i+2 < len(s) {
			if h, ok := unhex(s[i+1]); ok {
				if l, ok := unhex(s[i+2]); ok {
					return h<<4 | l, 3
				}
			}
		}
		return c, 1
	default:
		return c, 1
	}
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unescapedEqual reports whether the decoded s equals want, decoding
// without allocating.
func unescapedEqual[S text](s S, want string) bool {
	j := 0
	for i := 0; i < len(s); {
		c, n := unescapeAt(s, i)
		if j >= len(want) || want[j] != c {
			return false
		}
		i, j = i+n, j+1
	}
	return j == len(want)
}

// unescape decodes s into a new slice (regex matches on escaped values only).
func unescape[S text](s S) []byte {
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); {
		c, n := unescapeAt(s, i)
		b = append(b, c)
		i += n
	}
	return b
}
