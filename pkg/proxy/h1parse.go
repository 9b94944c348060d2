package proxy

import (
	"bytes"
	"errors"
	"strconv"
)

// h1Head is a parsed HTTP/1.1 request or response head. Slices point into
// the connection's head buffer and are valid until the next head is read.
type h1Head struct {
	// Request: method, target. Response: status.
	method, target []byte
	status         int
	headers        []h1Header
	contentLength  int64 // -1 when absent
	chunked        bool
	close          bool // Connection: close
	// codings is set when Transfer-Encoding has codings other than a single
	// chunked: the header is then forwarded as it is.
	codings bool
	host    []byte
	// odd is set for anything the fast path leaves to net/http: Upgrade,
	// Expect, a Transfer-Encoding other than chunked, HTTP/1.0, obs-fold...
	odd bool
}

type h1Header struct {
	name, value []byte
	hop         bool // hop-by-hop: not forwarded
}

var (
	errBadHead   = errors.New("malformed message head")
	errBadLength = errors.New("bad or conflicting message length")
)

// hopByHop are the RFC 9110 section 7.6.1 connection-specific fields, plus
// the legacy Proxy-Connection; lowercased.
var hopByHop = [][]byte{
	[]byte("connection"), []byte("proxy-connection"), []byte("keep-alive"), []byte("te"),
	[]byte("trailer"), []byte("transfer-encoding"), []byte("upgrade"), []byte("proxy-authenticate"),
	[]byte("proxy-authorization"),
}

// parseH1Head parses a complete head (ending in an empty line). isRequest
// selects the start line's grammar.
func parseH1Head(b []byte, isRequest bool, h *h1Head) error {
	*h = h1Head{headers: h.headers[:0], contentLength: -1}
	line, rest, ok := cutLine(b)
	if !ok {
		return errBadHead
	}
	if isRequest {
		sp1 := bytes.IndexByte(line, ' ')
		if sp1 <= 0 {
			return errBadHead
		}
		h.method = line[:sp1]
		for _, c := range h.method {
			if !isToken(c) {
				return errBadHead
			}
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
			h.odd = true // keep-alive rules differ: net/http handles it
		default:
			return errBadHead
		}
		if h.target[0] != '/' {
			h.odd = true // absolute-form, authority-form (CONNECT), asterisk
		}
	} else {
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return errBadHead
		}
		if line[7] != '1' {
			h.close = true // an HTTP/1.0 server: no keep-alive
		}
		code, err := strconv.Atoi(string(line[9:12]))
		if err != nil || code < 100 || code > 999 || (len(line) > 12 && line[12] != ' ') {
			return errBadHead
		}
		h.status = code
	}
	var connTokens [][]byte
	for {
		line, rest, ok = cutLine(rest)
		if !ok {
			return errBadHead
		}
		if len(line) == 0 {
			break
		}
		if line[0] == ' ' || line[0] == '\t' {
			return errBadHead // obs-fold is rejected (RFC 9112 5.2)
		}
		colon := bytes.IndexByte(line, ':')
		if colon <= 0 {
			return errBadHead
		}
		name := line[:colon]
		for _, c := range name {
			if !isToken(c) {
				return errBadHead
			}
		}
		value := bytes.Trim(line[colon+1:], " \t")
		for _, c := range value {
			if c == 0 || c == '\r' || c == '\n' {
				return errBadHead
			}
		}
		hdr := h1Header{name: name, value: value}
		switch {
		case asciiEqualFold(name, "content-length"):
			n, err := strconv.ParseInt(string(value), 10, 64)
			if err != nil || n < 0 || (h.contentLength >= 0 && h.contentLength != n) {
				return errBadLength
			}
			h.contentLength = n
		case asciiEqualFold(name, "transfer-encoding"):
			if asciiEqualFold(value, "chunked") && !h.chunked && !h.codings {
				hdr.hop = true // re-added by the writer when the body is chunked
				h.chunked = true
				break
			}
			// Other codings (gzip, chunked): forwarded verbatim; the final
			// coding decides the framing (RFC 9112 6.3).
			h.odd, h.codings = true, true
			for i := range h.headers {
				if asciiEqualFold(h.headers[i].name, "transfer-encoding") {
					h.headers[i].hop = false
				}
			}
			last := value
			if i := bytes.LastIndexByte(value, ','); i >= 0 {
				last = bytes.TrimSpace(value[i+1:])
			}
			h.chunked = asciiEqualFold(last, "chunked")
		case asciiEqualFold(name, "connection"):
			hdr.hop = true
			for _, tok := range bytes.Split(value, []byte(",")) {
				tok = bytes.TrimSpace(tok)
				if asciiEqualFold(tok, "close") {
					h.close = true
				} else if asciiEqualFold(tok, "upgrade") {
					h.odd = true
				}
				connTokens = append(connTokens, tok)
			}
		case asciiEqualFold(name, "host"):
			if h.host != nil {
				return errBadHead
			}
			h.host = value
		case asciiEqualFold(name, "upgrade"):
			hdr.hop = true
			h.odd = true
		case asciiEqualFold(name, "expect"):
			h.odd = true
		case asciiEqualFold(name, "trailer"):
			h.odd = true // declared trailers: leave to net/http
		default:
			for _, hb := range hopByHop {
				if asciiEqualFold(name, string(hb)) {
					hdr.hop = true
				}
			}
		}
		if len(h.headers) == maxHeaderFields {
			return errTooManyHeaders
		}
		h.headers = append(h.headers, hdr)
	}
	if len(rest) != 0 {
		return errBadHead
	}
	if h.chunked && h.contentLength >= 0 {
		return errBadLength // a smuggling attempt (RFC 9112 6.3)
	}
	for _, tok := range connTokens {
		for i := range h.headers {
			if bytes.EqualFold(h.headers[i].name, tok) {
				h.headers[i].hop = true
			}
		}
	}
	if isRequest && h.host == nil {
		h.odd = true // net/http answers 400
	}
	return nil
}

// cutLine splits off one line ending in CRLF (or a bare LF).
func cutLine(b []byte) (line, rest []byte, ok bool) {
	i := bytes.IndexByte(b, '\n')
	if i < 0 {
		return nil, nil, false
	}
	line = b[:i]
	if len(line) > 0 && line[len(line)-1] == '\r' {
		line = line[:len(line)-1]
	}
	return line, b[i+1:], true
}

func isToken(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
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
