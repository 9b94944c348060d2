// Package detect classifies a new connection from its first bytes: the HTTP/2
// client preface, an HTTP/1.x request line, a TLS ClientHello (with its SNI
// and ALPN), or anything else, which the proxy then treats as opaque TCP.
//
// Classify is a pure function over the bytes read so far so that it can be
// fuzzed; Peek drives it over a real connection with a deadline.
package detect

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"time"
)

// Protocol is what a connection's first bytes look like.
type Protocol uint8

const (
	// Unknown means more bytes are needed to decide.
	Unknown Protocol = iota
	// Opaque is anything the proxy does not parse: relayed as raw TCP.
	Opaque
	// HTTP1 is an HTTP/1.x request line (HTTP/1.0 and HTTP/1.1; later
	// minor versions too, which the HTTP path refuses).
	HTTP1
	// HTTP2 is the HTTP/2 prior-knowledge client preface (h2c).
	HTTP2
	// TLS is a TLS ClientHello.
	TLS
)

func (p Protocol) String() string {
	switch p {
	case Opaque:
		return "opaque"
	case HTTP1:
		return "http/1"
	case HTTP2:
		return "h2"
	case TLS:
		return "tls"
	}
	return "unknown"
}

// Result is the outcome of detection.
type Result struct {
	Protocol Protocol
	// SNI and ALPN are set for TLS when the ClientHello could be parsed.
	SNI  string
	ALPN []string
}

// MaxPeek bounds how many bytes detection reads before it gives up and
// decides with what it has. It covers large ClientHellos (post-quantum key
// shares) and long request lines.
const MaxPeek = 16 << 10

// h2Preface is the HTTP/2 client connection preface (RFC 9113, section 3.4).
const h2Preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// Classify decides what b, the first bytes of a connection, are. It returns
// Unknown when b is a proper prefix of something recognisable and more bytes
// could change the answer; callers that cannot read more (timeout, EOF,
// MaxPeek) should call Final instead.
func Classify(b []byte) Result {
	return classify(b, false)
}

// Final is Classify for the last bytes a caller will get: it never returns
// Unknown.
func Final(b []byte) Result {
	return classify(b, true)
}

func classify(b []byte, final bool) Result {
	if len(b) == 0 {
		if final {
			return Result{Protocol: Opaque}
		}
		return Result{}
	}
	// HTTP/2 preface.
	if n := min(len(b), len(h2Preface)); string(b[:n]) == h2Preface[:n] {
		if n == len(h2Preface) {
			return Result{Protocol: HTTP2}
		}
		if !final {
			return Result{}
		}
		// A truncated preface may still be a request line with method PRI.
	}
	if b[0] == 0x16 {
		return classifyTLS(b, final)
	}
	// Empty lines before a request line (RFC 9112 2.2), which the HTTP/1.1
	// path ignores as many servers do: no opaque relay past them.
	line := b
	for len(line) >= 2 && line[0] == '\r' && line[1] == '\n' {
		line = line[2:]
	}
	if len(line) == 0 || len(line) == 1 && line[0] == '\r' {
		switch {
		case final && len(b) >= MaxPeek:
			return Result{Protocol: HTTP1} // the HTTP path reads on
		case final:
			return Result{Protocol: Opaque}
		}
		return Result{}
	}
	return classifyHTTP1(line, final, len(b))
}

func classifyTLS(b []byte, final bool) Result {
	hello, err := parseClientHello(b)
	switch {
	case err == nil:
		return Result{Protocol: TLS, SNI: hello.sni, ALPN: hello.alpn}
	case errors.Is(err, errShort):
		if final {
			// Looks like TLS so far; without a whole hello there is no SNI.
			if len(b) >= 3 && b[1] == 3 {
				return Result{Protocol: TLS}
			}
			return Result{Protocol: Opaque}
		}
		return Result{}
	case errors.Is(err, errNotHandshake):
		return Result{Protocol: Opaque}
	default:
		// A TLS record that is not a ClientHello we understand: still TLS,
		// passed through untouched.
		return Result{Protocol: TLS}
	}
}

// classifyHTTP1 recognises "METHOD SP request-target SP HTTP/1.x CRLF" at
// the start of b, the last of the peeked bytes.
func classifyHTTP1(b []byte, final bool, peeked int) Result {
	more := Result{}
	if final {
		more = Result{Protocol: Opaque}
	}
	// Method: a token.
	i := 0
	for i < len(b) && isTokenChar(b[i]) {
		i++
	}
	if i == len(b) {
		if i > 20 {
			return Result{Protocol: Opaque}
		}
		return more
	}
	if i == 0 || i > 20 || b[i] != ' ' {
		return Result{Protocol: Opaque}
	}
	i++
	// Request target: visible ASCII (and obs-text) up to the next space.
	start := i
	for i < len(b) && b[i] != ' ' {
		if b[i] <= ' ' || b[i] == 0x7f {
			return Result{Protocol: Opaque}
		}
		i++
	}
	if i == len(b) {
		if final && peeked >= MaxPeek {
			// A request line longer than we peek: let the HTTP server
			// reject it with a proper status.
			return Result{Protocol: HTTP1}
		}
		return more
	}
	if i == start {
		return Result{Protocol: Opaque}
	}
	i++
	const version = "HTTP/1."
	rest := b[i:]
	n := min(len(rest), len(version))
	if !bytes.Equal(rest[:n], []byte(version)[:n]) {
		return Result{Protocol: Opaque}
	}
	if n < len(version) {
		return more
	}
	rest = rest[n:]
	// The minor version: any number. HTTP/1.2 and later are HTTP/1
	// (RFC 9110 2.5), which the HTTP path answers (505) rather than a
	// relay passing them to an application that may serve them.
	digits := 0
	for digits < len(rest) && digits < 3 && rest[digits] >= '0' && rest[digits] <= '9' {
		digits++
	}
	if digits == len(rest) {
		return more
	}
	if digits == 0 {
		return Result{Protocol: Opaque}
	}
	rest = rest[digits:]
	if rest[0] == '\n' {
		return Result{Protocol: HTTP1}
	}
	if rest[0] != '\r' {
		return Result{Protocol: Opaque}
	}
	if len(rest) == 1 {
		return more
	}
	if rest[1] != '\n' {
		return Result{Protocol: Opaque}
	}
	return Result{Protocol: HTTP1}
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110 5.6.2).
func isTokenChar(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0
}

// Peek reads from c until Classify decides, timeout passes, the peer stops
// sending, or MaxPeek bytes have arrived. It returns buf's bytes (those an
// earlier Peek read and left undecided; usually none) followed by the bytes
// read, which the caller must replay before further reads from c, and the
// result. A timeout is not an error: the connection is opaque (the peer may
// be waiting for the server to speak first). err is set only when the
// connection failed before any byte arrived.
func Peek(c net.Conn, timeout time.Duration, buf []byte) ([]byte, Result, error) {
	if err := c.SetReadDeadline(time.Now().Add(timeout)); err != nil {
		return nil, Result{}, err
	}
	defer c.SetReadDeadline(time.Time{})
	b := buf
	for {
		if len(b) == cap(b) {
			if cap(b) >= MaxPeek {
				return b, Final(b), nil
			}
			nb := make([]byte, len(b), min(max(2*cap(b), 1024), MaxPeek))
			copy(nb, b)
			b = nb
		}
		n, err := c.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if n > 0 {
			if r := Classify(b); r.Protocol != Unknown {
				return b, r, nil
			}
		}
		if err != nil {
			if len(b) == 0 && !errors.Is(err, os.ErrDeadlineExceeded) && !errors.Is(err, io.EOF) {
				return b, Result{}, err
			}
			return b, Final(b), nil
		}
	}
}
