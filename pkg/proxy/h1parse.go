package proxy

import (
	"bytes"
	"errors"
)

// The HTTP/1.1 framing rules the proxy enforces (RFC 9110, RFC 9112). A
// proxy that reads a message's length differently from the peer behind it
// lets a client smuggle requests past it, so every head and chunked body
// the proxy forwards is parsed strictly, on the fast path (h1fast.go) and,
// through h1Guard (h1guard.go), before net/http's lenient parser sees it:
// lines end in CRLF, no bare CR, no obs-fold, no whitespace before a
// colon, no control characters in values; Content-Length is digits only
// and appears once; a request's Transfer-Encoding is exactly "chunked" and
// comes without Content-Length; a Connection option may not name a field
// that frames or routes the message; chunk sizes are hex digits only and
// chunk extensions follow the grammar. Violations are answered 400 (a
// client's) or 502 (an upstream's), and the connection is closed.

// h1Head is a parsed HTTP/1.1 request or response head. Slices point into
// the connection's head buffer and are valid until the next head is read.
type h1Head struct {
	// Request: method, target. Response: status.
	method, target []byte
	status         int
	headers        []h1Header
	contentLength  int64 // -1 when absent (or overridden by Transfer-Encoding)
	chunked        bool
	// close is set when the connection cannot carry another message after
	// this one: Connection: close, an HTTP/1.0 response, or a response
	// framed by Transfer-Encoding despite a Content-Length.
	close bool
	// codings is set when a response's Transfer-Encoding has codings other
	// than a single chunked: the header is then forwarded as it is.
	codings bool
	host    []byte
	// upgrade is set for Upgrade requests and CONNECT: the connection may
	// stop carrying HTTP/1.1 after the response.
	upgrade bool
	http10  bool
	// odd is set for anything the fast path leaves to net/http: Upgrade,
	// Expect, chunked request bodies, HTTP/1.0, no Host...
	odd bool
}

type h1Header struct {
	name, value []byte
	hop         bool // hop-by-hop: not forwarded
}

var (
	errBadHead       = errors.New("malformed message head")
	errBadLength     = errors.New("bad or conflicting message length")
	errBadConnection = errors.New("Connection header names Content-Length, Transfer-Encoding or Host")
	errBadChunk      = errors.New("malformed chunked body")
	errBadTarget     = errors.New("request target is not origin-form, an http(s) absolute URI, CONNECT's host:port or OPTIONS' *")
	// errVersion: an HTTP/1 minor version after 1.1, which the proxy does
	// not forward (an application might read it other than the proxy).
	errVersion = errors.New("HTTP version not supported: the proxy serves HTTP/1.0, HTTP/1.1 and HTTP/2")
)

// hopByHop are the RFC 9110 section 7.6.1 connection-specific fields, plus
// the legacy Proxy-Connection; lowercased.
var hopByHop = []string{
	"connection", "proxy-connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
	"proxy-authenticate", "proxy-authorization",
}

// framingFields may not be named by a Connection option: a proxy that
// honoured it would strip the field and change how the next hop frames or
// routes the message.
var framingFields = []string{"content-length", "transfer-encoding", "host"}

// parseH1Head parses a complete head (ending in an empty line). isRequest
// selects the start line's grammar.
var comma = []byte(",")

func parseH1Head(b []byte, isRequest bool, h *h1Head) error {
	*h = h1Head{headers: h.headers[:0], contentLength: -1}
	line, rest, ok := cutLine(b)
	if !ok {
		return errBadHead
	}
	if isRequest {
		if err := h.parseRequestLine(line); err != nil {
			return err
		}
	} else if err := h.parseStatusLine(line); err != nil {
		return err
	}
	var connBuf [8][]byte // Connection options other than close, keep-alive and upgrade
	connTokens := connBuf[:0]
	teSeen, tooMany := false, false
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return errBadHead
		}
		if len(line) == 0 {
			break
		}
		name, value, ok := splitField(line)
		if !ok {
			return errBadHead
		}
		hdr := h1Header{name: name, value: value}
		switch {
		case asciiEqualFold(name, "content-length"):
			n, ok := parseDigits(value)
			if !ok || h.contentLength >= 0 {
				return errBadLength // not 1*DIGIT, or repeated (RFC 9112 6.3)
			}
			h.contentLength = n
		case asciiEqualFold(name, "transfer-encoding"):
			if err := h.parseTransferEncoding(value, isRequest, teSeen); err != nil {
				return err
			}
			teSeen = true
			hdr.hop = !h.codings // a lone chunked is re-added by the writer
		case asciiEqualFold(name, "connection"):
			hdr.hop = true
			// A plain loop: a range-over-func body would make its
			// captured variables (connTokens, the head) escape.
			for v, more := value, true; more; {
				var tok []byte
				tok, v, more = bytes.Cut(v, comma)
				tok = bytes.Trim(tok, " \t")
				if len(tok) == 0 {
					continue
				}
				if !isTokenString(tok) {
					return errBadHead
				}
				for _, f := range framingFields {
					if asciiEqualFold(tok, f) {
						return errBadConnection
					}
				}
				switch {
				case asciiEqualFold(tok, "close"):
					h.close = true
				case asciiEqualFold(tok, "upgrade"):
					h.odd = true // Upgrade is hop-by-hop anyway
				case !asciiEqualFold(tok, "keep-alive"): // as is Keep-Alive
					connTokens = append(connTokens, tok)
				}
			}
		case asciiEqualFold(name, "host"):
			if h.host != nil || !validHost(value) {
				return errBadHead
			}
			h.host = value
		case asciiEqualFold(name, "upgrade"):
			hdr.hop = true
			h.odd, h.upgrade = true, true
		case asciiEqualFold(name, "expect"):
			h.odd = true
		case asciiEqualFold(name, "trailer"):
			h.odd = true // declared trailers: leave to net/http
		default:
			for _, hb := range hopByHop {
				if asciiEqualFold(name, hb) {
					hdr.hop = true
				}
			}
		}
		if len(h.headers) == maxHeaderFields {
			// Not kept, but still checked: h1Guard lets net/http answer
			// 431 to a head that is otherwise well framed.
			tooMany = true
			continue
		}
		h.headers = append(h.headers, hdr)
	}
	if len(rest) != 0 {
		return errBadHead
	}
	if teSeen {
		switch {
		case h.http10:
			// RFC 9112 6.1: an HTTP/1.0 message's framing is then faulty.
			return errBadLength
		case h.contentLength >= 0 && isRequest:
			return errBadLength // CL.TE / TE.CL smuggling (RFC 9112 6.3)
		case h.contentLength >= 0:
			// A response: Transfer-Encoding frames it, Content-Length is
			// dropped and the connection is not reused (RFC 9112 6.3).
			h.contentLength, h.close = -1, true
			for i := range h.headers {
				if asciiEqualFold(h.headers[i].name, "content-length") {
					h.headers[i].hop = true
				}
			}
		}
		if !h.chunked && !isRequest {
			h.close = true // read until the connection closes
		}
	}
	for _, tok := range connTokens {
		for i := range h.headers {
			if bytes.EqualFold(h.headers[i].name, tok) {
				h.headers[i].hop = true
			}
		}
	}
	if isRequest && h.host == nil {
		h.odd = true // net/http answers 400 (HTTP/1.1) or serves it (HTTP/1.0)
	}
	if tooMany {
		return errTooManyHeaders
	}
	return nil
}

// parseRequestLine parses "METHOD SP request-target SP HTTP/1.x".
func (h *h1Head) parseRequestLine(line []byte) error {
	sp1 := bytes.IndexByte(line, ' ')
	if sp1 <= 0 {
		return errBadHead
	}
	h.method = line[:sp1]
	if !isTokenString(h.method) {
		return errBadHead
	}
	r := line[sp1+1:]
	sp2 := bytes.IndexByte(r, ' ')
	if sp2 <= 0 {
		return errBadHead
	}
	h.target = r[:sp2]
	for _, c := range h.target {
		if c <= ' ' || c == 0x7f {
			return errBadHead
		}
	}
	switch string(r[sp2+1:]) {
	case "HTTP/1.1":
	case "HTTP/1.0":
		h.http10 = true
		h.odd = true // keep-alive rules differ: net/http handles it
	default:
		if bytes.HasPrefix(r[sp2+1:], []byte("HTTP/1.")) {
			return errVersion
		}
		return errBadHead
	}
	if string(h.method) == "CONNECT" {
		h.upgrade = true
	}
	if h.target[0] != '/' {
		h.odd = true // absolute-form, authority-form (CONNECT), asterisk
		if !h.upgrade && !validTargetForm(h.target, h.method) {
			return errBadTarget
		}
	}
	return nil
}

// validTargetForm reports whether target, not in origin-form, is in a form
// RFC 9112 3.2 gives a request other than CONNECT: absolute-form with an
// http or https scheme and an authority, or "*" for OPTIONS. net/http
// serves more ("a:", "*" for GET) and forwards it as "/", which is not
// what the client asked nor what metrics and tap would show.
func validTargetForm(target, method []byte) bool {
	if string(target) == "*" {
		return string(method) == "OPTIONS"
	}
	for _, scheme := range []string{"http://", "https://"} {
		if len(target) > len(scheme) && bytes.EqualFold(target[:len(scheme)], []byte(scheme)) {
			return target[len(scheme)] != '/' && target[len(scheme)] != '?' && target[len(scheme)] != '#'
		}
	}
	return false
}

// parseStatusLine parses "HTTP/1.x SP 3DIGIT SP reason-phrase".
func (h *h1Head) parseStatusLine(line []byte) error {
	if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' ||
		(line[7] != '0' && line[7] != '1') || (len(line) > 12 && line[12] != ' ') {
		return errBadHead
	}
	if line[7] == '0' {
		h.close, h.http10 = true, true // an HTTP/1.0 server: no keep-alive
	}
	code, ok := parseDigits(line[9:12])
	if !ok || code < 100 {
		return errBadHead
	}
	h.status = int(code)
	if len(line) > 12 && !validFieldValue(line[13:]) {
		return errBadHead
	}
	return nil
}

// parseTransferEncoding records a Transfer-Encoding field. A request's is
// exactly one "chunked" (anything else is a smuggling attempt or a coding
// no application expects); a response's is a list of codings of which only
// the last may be chunked.
func (h *h1Head) parseTransferEncoding(value []byte, isRequest, seen bool) error {
	if isRequest {
		if seen || !asciiEqualFold(value, "chunked") {
			return errBadLength
		}
		h.chunked, h.odd = true, true
		return nil
	}
	if !seen && asciiEqualFold(value, "chunked") {
		h.chunked = true
		return nil
	}
	// Other codings (gzip, chunked): forwarded verbatim; the final coding
	// decides the framing (RFC 9112 6.3).
	h.codings = true
	for tok := range bytes.SplitSeq(value, []byte(",")) {
		tok = bytes.Trim(tok, " \t")
		if len(tok) == 0 {
			continue
		}
		if h.chunked || !isTokenString(tok) {
			return errBadLength // chunked applied before another coding
		}
		h.chunked = asciiEqualFold(tok, "chunked")
	}
	return nil
}

// splitField splits a field line into its name and its value without
// surrounding whitespace, checking both.
func splitField(line []byte) (name, value []byte, ok bool) {
	colon := bytes.IndexByte(line, ':')
	if colon <= 0 {
		return nil, nil, false // also obs-fold: a line starting with SP or HTAB
	}
	name = line[:colon]
	value = bytes.Trim(line[colon+1:], " \t")
	return name, value, isTokenString(name) && validFieldValue(value)
}

// validFieldValue: VCHAR, obs-text, SP and HTAB only (RFC 9110 5.5).
func validFieldValue(v []byte) bool {
	for _, c := range v {
		if (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validHost accepts the characters of a uri-host and port (RFC 3986), as
// net/http does.
func validHost(v []byte) bool {
	for _, c := range v {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case bytes.IndexByte([]byte("-._~!$&'()*+,;=:[]%"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// parseDigits parses 1*DIGIT (at most 18 digits: no overflow, no sign).
func parseDigits(v []byte) (int64, bool) {
	if len(v) == 0 || len(v) > 18 {
		return 0, false
	}
	var n int64
	for _, c := range v {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int64(c-'0')
	}
	return n, true
}

// cutLine splits off one line ending in CRLF; a bare LF is malformed.
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 1 || b[i-1] != '\r' {
		return nil, nil, false
	}
	return b[:i-1], b[i+1:], true
}

// parseChunkSize parses a chunk-size line with its CRLF (RFC 9112 7.1):
// hex digits, then extensions that follow the grammar.
func parseChunkSize(line []byte) (int64, error) {
	l, rest, ok := cutLine(line)
	if !ok || len(rest) != 0 {
		return 0, errBadChunk
	}
	var n int64
	i := 0
	for ; i < len(l); i++ {
		d := unhex(l[i])
		if d < 0 {
			break
		}
		if i == 15 {
			return 0, errBadChunk // too large
		}
		n = n<<4 | int64(d)
	}
	if i == 0 || !validChunkExt(l[i:]) {
		return 0, errBadChunk
	}
	return n, nil
}

// validChunkExt checks *( BWS ";" BWS name [ BWS "=" BWS value ] ), where
// a value is a token or a quoted-string.
func validChunkExt(b []byte) bool {
	for len(b) > 0 {
		b = trimBWS(b)
		if len(b) == 0 || b[0] != ';' {
			return false
		}
		var tok []byte
		if tok, b = cutToken(trimBWS(b[1:])); len(tok) == 0 {
			return false
		}
		if v := trimBWS(b); len(v) > 0 && v[0] == '=' {
			v = trimBWS(v[1:])
			if len(v) > 0 && v[0] == '"' {
				if b = cutQuoted(v); b == nil {
					return false
				}
			} else if tok, b = cutToken(v); len(tok) == 0 {
				return false
			}
		}
	}
	return true
}

func trimBWS(b []byte) []byte {
	for len(b) > 0 && (b[0] == ' ' || b[0] == '\t') {
		b = b[1:]
	}
	return b
}

func cutToken(b []byte) (tok, rest []byte) {
	i := 0
	for i < len(b) && isToken(b[i]) {
		i++
	}
	return b[:i], b[i:]
}

// cutQuoted returns what follows the quoted-string b starts with, or nil
// if it is malformed (a non-nil empty slice when nothing follows).
func cutQuoted(b []byte) []byte {
	for i := 1; i < len(b); i++ {
		switch c := b[i]; {
		case c == '"':
			return b[i+1:]
		case c == '\\' && i+1 < len(b) && (b[i+1] == '\t' || b[i+1] >= ' ') && b[i+1] != 0x7f:
			i++
		case c == '\t' || (c >= ' ' && c != 0x7f && c != '\\'):
		default:
			return nil
		}
	}
	return nil
}

// validTrailerLine checks a trailer field line with its CRLF, or the
// final empty line.
func validTrailerLine(line []byte) bool {
	l, rest, ok := cutLine(line)
	if !ok || len(rest) != 0 {
		return false
	}
	if len(l) == 0 {
		return true
	}
	_, _, ok = splitField(l)
	return ok
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'a' && c <= 'f':
		return int(c-'a') + 10
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

func isToken(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

func isTokenString(b []byte) bool {
	if len(b) == 0 {
		return false
	}
	for _, c := range b {
		if !isToken(c) {
			return false
		}
	}
	return true
}

// asciiEqualFold compares b with the lowercase ASCII string s.
func asciiEqualFold[T []byte | string](b T, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := b[i]
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != s[i] {
			return false
		}
	}
	return true
}
