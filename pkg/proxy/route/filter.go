package route

import (
	"net"
	"net/http"
	"strconv"
	"strings"

	"golang.org/x/net/http2/hpack"

	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
)

// Headers is a header block that header modifiers edit, in one of the
// proxy's representations: HTTPHeader (net/http's), Fields (the HTTP/1.1
// fast path's end-to-end fields) or HPACKFields (the HTTP/2 fast path's
// decoded header list). The modifiers' logic (what set, add and remove
// mean, in which order) is HeaderModifier.Apply's alone; an adapter only
// deletes and appends.
type Headers interface {
	// Del removes every field named h.Name (compared without case).
	Del(h *Header)
	// Add appends the field h.
	Add(h *Header)
}

// Header is one header of a modifier, prepared for every representation;
// read-only, as the table that holds it. Its name is a valid field name the proxy does not own (see
// HeaderModifier) and its value holds no control character but HTAB.
type Header struct {
	// Name is lower case (HTTP/2's form); Canonical is http.Header's key.
	Name, Canonical string
	Value           string
	name, value     []byte
}

// NameBytes and ValueBytes are Name and Value as bytes, shared: callers
// must not modify them.
func (h *Header) NameBytes() []byte  { return h.name }
func (h *Header) ValueBytes() []byte { return h.value }

func newHeader(name, value string) Header {
	lower := httpmatch.ASCIILower(name)
	return Header{Name: lower, Canonical: http.CanonicalHeaderKey(name), Value: value,
		name: []byte(lower), value: []byte(value)}
}

// HeaderModifier is a RequestHeaderModifier or ResponseHeaderModifier.
type HeaderModifier struct {
	set, add, remove []Header
}

// Apply edits h: every set header replaces the values of its name, every
// add header is appended, then every remove name is deleted, in that
// order.
func (m *HeaderModifier) Apply(h Headers) {
	for i := range m.set {
		h.Del(&m.set[i])
		h.Add(&m.set[i])
	}
	for i := range m.add {
		h.Add(&m.add[i])
	}
	for i := range m.remove {
		h.Del(&m.remove[i])
	}
}

// headers are the header modifiers of a rule or a backend.
type headers struct {
	request, response []HeaderModifier
}

// ModifiesRequest reports whether ModifyRequest has anything to do (so a
// caller need not build an adapter when it has not).
func (f *headers) ModifiesRequest() bool { return len(f.request) > 0 }

// ModifiesResponse reports whether ModifyResponse has anything to do.
func (f *headers) ModifiesResponse() bool { return len(f.response) > 0 }

// ModifyRequest applies the RequestHeaderModifiers to the request's
// header, in order.
func (f *headers) ModifyRequest(h Headers) {
	for i := range f.request {
		f.request[i].Apply(h)
	}
}

// ModifyResponse applies the ResponseHeaderModifiers to the response's
// header, in order.
func (f *headers) ModifyResponse(h Headers) {
	for i := range f.response {
		f.response[i].Apply(h)
	}
}

// HTTPHeader adapts net/http's header (a request's, a ResponseWriter's,
// an upstream Response's) to Headers.
type HTTPHeader http.Header

func (h HTTPHeader) Del(f *Header) { delete(h, f.Canonical) }
func (h HTTPHeader) Add(f *Header) { h[f.Canonical] = append(h[f.Canonical], f.Value) }

// Fields adapts a fast path's list of end-to-end fields (pkg/proxy's
// []Field: on the HTTP/1.1 fast path what fieldsOf lists of a head's
// h1Headers, which is what writeHeaders writes) to Headers. Added fields
// share the Header's bytes.
type Fields []httpmatch.Field

func (fs *Fields) Del(h *Header) {
	out := (*fs)[:0]
	for _, f := range *fs {
		if !httpmatch.EqualFoldLower(f.Name, h.Name) {
			out = append(out, f)
		}
	}
	clear((*fs)[len(out):])
	*fs = out
}

func (fs *Fields) Add(h *Header) { *fs = append(*fs, httpmatch.Field{Name: h.name, Value: h.value}) }

// HPACKFields adapts the HTTP/2 fast path's decoded header list
// (MetaHeadersFrame.Fields, or the list a response is encoded from) to
// Headers. Pseudo-header fields are never touched; added names are lower
// case, as HTTP/2 requires.
type HPACKFields []hpack.HeaderField

func (fs *HPACKFields) Del(h *Header) {
	out := (*fs)[:0]
	for _, f := range *fs {
		if f.IsPseudo() || !httpmatch.EqualFoldLower(f.Name, h.Name) {
			out = append(out, f)
		}
	}
	clear((*fs)[len(out):])
	*fs = out
}

func (fs *HPACKFields) Add(h *Header) {
	*fs = append(*fs, hpack.HeaderField{Name: h.Name, Value: h.Value})
}

// Redirect is a RequestRedirect: the rule's requests are answered with
// Status and a Location built from the request, never forwarded. Its
// fields are read-only.
type Redirect struct {
	// Scheme, Hostname and Port replace the request's when set.
	Scheme, Hostname string
	Port             uint32
	pathKind         redirectPath
	path             string
	// Status is 301, 302 (the default), 303, 307 or 308.
	Status int
}

type redirectPath uint8

const (
	keepPath redirectPath = iota
	fullPath
	prefixPath
)

// Location is the redirect's Location for r (the request, as routed),
// which arrived with scheme ("http" when empty) and authority (its Host or
// :authority), and was routed by m (Table.Route's match). As the Gateway
// API specifies: an unset scheme or hostname keeps the request's; an unset
// port is the well-known port of a scheme the redirect sets, else the
// request's; the port is left out when it is the scheme's well-known one
// (or unknown); a full path replaces the path, a prefix replaces the
// prefix m matched (the whole path when m's path match was not a prefix);
// the query is kept.
func (rd *Redirect) Location(r *httpmatch.Request, m *httpmatch.Match, scheme, authority string) string {
	if scheme == "" {
		scheme = "http"
	}
	host, port := splitAuthority(authority)
	if rd.Scheme != "" {
		scheme = rd.Scheme
		if p := wellKnownPort(scheme); p != "" {
			port = p
		}
	}
	if rd.Hostname != "" {
		host = rd.Hostname
	}
	if rd.Port != 0 {
		port = strconv.FormatUint(uint64(rd.Port), 10)
	}
	hostport := host
	if port != "" && port != wellKnownPort(scheme) {
		hostport = net.JoinHostPort(host, port)
	} else if strings.Contains(host, ":") {
		hostport = "[" + host + "]"
	}
	path := r.Path()
	switch rd.pathKind {
	case fullPath:
		path = rd.path
	case prefixPath:
		path = replacePrefix(path, m, rd.path)
	}
	if path == "" || path[0] != '/' {
		path = "/" + path
	}
	loc := scheme + "://" + hostport + path
	if q := r.Query(); q != "" {
		loc += "?" + q
	}
	return loc
}

// replacePrefix replaces the prefix m matched of path with prefix
// (Gateway API's ReplacePrefixMatch: "/foo" → "/xyz" turns "/foo/bar" into
// "/xyz/bar" and "/foo" into "/xyz"; "/foo" → "" turns "/foo/bar" into
// "/bar").
func replacePrefix(path string, m *httpmatch.Match, prefix string) string {
	var matched string
	ok := m != nil
	if ok {
		matched, ok = m.PathPrefix()
	}
	if !ok || !strings.HasPrefix(path, matched) {
		return prefix
	}
	return strings.TrimRight(prefix, "/") + path[len(matched):]
}

// splitAuthority splits host[:port] (an IPv6 host in brackets); the port is
// "" when absent.
func splitAuthority(a string) (host, port string) {
	if h, p, err := net.SplitHostPort(a); err == nil {
		return h, p
	}
	return strings.TrimSuffix(strings.TrimPrefix(a, "["), "]"), ""
}

func wellKnownPort(scheme string) string {
	switch scheme {
	case "http":
		return "80"
	case "https":
		return "443"
	}
	return ""
}
