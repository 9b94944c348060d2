package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// h1Guard holds the net/http path to the framing rules of h1parse.go.
// net/http's parser is more lenient than a proxy may be (bare LF, obs-fold,
// a repeated Content-Length, Content-Length with chunked, control
// characters in chunk extensions, HTTP/1.2...): the guard sits under it on
// the connection, holds each message head back until parseH1Head accepts
// it and follows the body's framing to the next head, so that net/http
// only reads messages the fast path would accept too. On a violation its
// Read fails for good with a framing error. net/http's server closes on a
// malformed request head, after the guard's own answer (failHead), and
// answers a malformed body with 400 (framedBody); its Transport turns the
// error into a failed request (502) on a closed connection.
//
// On a client connection (isRequest) it stops checking after CONNECT, and
// after an Upgrade request it waits for the response the server writes:
// 101 turns the connection into a tunnel, anything else resumes checking.
// On an upstream connection it learns from what the Transport writes
// whether a request is outstanding and is HEAD (its response has no body),
// refuses bytes that arrive when none is, and rewrites a response framed
// both by Transfer-Encoding and Content-Length: Content-Length is dropped
// and "Connection: close" added, so that the Transport frames it by
// Transfer-Encoding and does not reuse the connection (RFC 9112 6.3).
type h1Guard struct {
	net.Conn
	isRequest bool
	maxHead   int

	// The read side, used by one goroutine at a time. buf[r:c] has been
	// checked and not yet returned, buf[c:] has been received and not
	// yet checked.
	buf      []byte
	r, c     int
	state    guardState
	left     int64 // bytes left in a body or chunk; trailer bytes seen
	err      error // a framing error: every later Read fails with it
	head     h1Head
	upgrade  bool // the current request asks for an Upgrade
	headResp bool // the current response answers HEAD (copied from mu's)
	refused  bool // a request head failed: Close answers it
	// background: the last read deadline set was none, as net/http sets
	// for its background read while a handler runs (a request's head is
	// read under ReadHeaderTimeout, the wait for the next under
	// IdleTimeout; the proxy sets both).
	background atomic.Bool

	mu sync.Mutex // guards the fields below, shared with Write
	// waiting: the server has not yet answered an Upgrade request;
	// resume is the state to go on with once it has.
	waiting bool
	resume  guardState
	wbuf    []byte // response bytes written while waiting
	// idle: no request outstanding on an upstream connection; head: the
	// outstanding one is HEAD.
	idle, headReq bool
	// answer is the answer to a malformed request head, which Close
	// writes.
	answer []byte
}

type guardState uint8

const (
	gHead      guardState = iota
	gBody                 // left bytes of a Content-Length body
	gChunkSize            // a chunk-size line
	gChunkData            // left bytes of chunk data
	gChunkEnd             // the CRLF after chunk data
	gTrailer              // trailer lines up to the empty line
	gWait                 // after an Upgrade request, until its response
	gPass                 // a tunnel, or a body read until the close
)

// errFraming marks the guard's errors; errors.Is finds the cause as well.
var (
	errFraming      = errors.New("HTTP/1.1 framing")
	errUnsolicited  = errors.New("bytes from the upstream with no request outstanding")
	errGuardTooLong = errors.New("message head too large")
)

// newH1Guard guards c; isRequest selects a client connection (requests are
// read) over an upstream one (responses are read).
func newH1Guard(c net.Conn, isRequest bool, maxHead int) *h1Guard {
	return &h1Guard{Conn: c, isRequest: isRequest, maxHead: maxHead, idle: !isRequest}
}

// guardH1 wraps a client connection classified as HTTP/1.x for net/http.
func (s *side) guardH1(sc *servedConn) *servedConn {
	return &servedConn{Conn: newH1Guard(sc, true, s.p.cfg.MaxHeaderBytes+4096), info: sc.info}
}

func (g *h1Guard) Read(p []byte) (int, error) {
	for {
		if g.r < g.c {
			n := copy(p, g.buf[g.r:g.c])
			g.r += n
			if g.r == len(g.buf) {
				g.buf, g.r, g.c = g.buf[:0], 0, 0
			}
			return n, nil
		}
		if g.err != nil {
			if g.refused && g.background.Load() {
				// net/http's background read, while it serves the request
				// before the refused head: an error would cancel that
				// request. Wait as for more bytes, until net/http ends
				// this read (a deadline) or the client closes.
				if _, err := g.Conn.Read(p); err != nil {
					return 0, err
				}
				continue
			}
			return 0, g.err
		}
		if g.advance(); g.r < g.c || g.err != nil {
			continue
		}
		if g.r > 0 && cap(g.buf)-len(g.buf) < 4096 {
			g.buf = append(g.buf[:0], g.buf[g.r:]...) // r == c: drop what was returned
			g.r, g.c = 0, 0
		}
		g.buf = slices.Grow(g.buf, 4096)
		n, err := g.Conn.Read(g.buf[len(g.buf):cap(g.buf)])
		if n > 0 && !g.isRequest {
			g.mu.Lock()
			if g.idle {
				g.fail(errUnsolicited)
			}
			g.mu.Unlock()
		}
		g.buf = g.buf[:len(g.buf)+n]
		if n == 0 && err != nil {
			return 0, err // not sticky: a deadline may be moved
		}
	}
}

// advance checks what it can of the unchecked bytes, moving g.c; it sets
// g.err on a violation.
func (g *h1Guard) advance() {
	for g.c < len(g.buf) && g.err == nil {
		in := g.buf[g.c:]
		var n int
		switch g.state {
		case gHead:
			if !g.isRequest {
				g.mu.Lock()
				idle := g.idle
				g.mu.Unlock()
				if idle {
					g.fail(errUnsolicited) // bytes after the response's end
					return
				}
			}
			n = g.checkHead(in)
		case gBody, gChunkData:
			n = int(min(g.left, int64(len(in))))
			if g.left -= int64(n); g.left == 0 {
				if g.state == gBody {
					g.endMessage()
				} else {
					g.state = gChunkEnd
				}
			}
		case gChunkSize, gTrailer:
			n = g.checkChunkLine(in)
		case gChunkEnd:
			if len(in) < 2 {
				return
			}
			if string(in[:2]) != "\r\n" {
				g.fail(errBadChunk)
				return
			}
			n, g.state = 2, gChunkSize
		case gWait:
			g.mu.Lock()
			waiting, resume := g.waiting, g.resume
			g.mu.Unlock()
			if waiting {
				return
			}
			g.state = resume
			continue
		case gPass:
			n = len(in)
		}
		if n == 0 {
			return
		}
		g.c += n
	}
}

// checkHead checks the head at the start of in and returns its length
// once it is complete and accepted (0 otherwise).
func (g *h1Guard) checkHead(in []byte) int {
	for g.isRequest && bytes.HasPrefix(in, []byte("\r\n")) {
		// RFC 9112 2.2: empty lines before a request are ignored; drop
		// them so that net/http does too.
		g.buf = append(g.buf[:g.c], in[2:]...)
		in = g.buf[g.c:]
	}
	end := bytes.Index(in, []byte("\n\r\n"))
	if lf := bytes.Index(in, []byte("\n\n")); lf >= 0 && (end < 0 || lf < end) {
		g.failHead(in, errBadHead) // a bare LF
		return 0
	}
	if end < 0 {
		if len(in) > g.maxHead {
			// net/http refuses it too (431): let it read up to its limit.
			g.c += g.maxHead + 1
			g.fail(errGuardTooLong)
		}
		return 0
	}
	n := end + 3
	raw := in[:n]
	// Too many fields is not a framing error: net/http answers 431.
	if err := parseH1Head(raw, g.isRequest, &g.head); err != nil && !errors.Is(err, errTooManyHeaders) {
		g.failHead(in, err)
		return 0
	}
	h := &g.head
	if g.isRequest {
		g.upgrade = h.upgrade
		switch {
		case string(h.method) == "CONNECT":
			g.state = gPass
		case h.chunked:
			g.state = gChunkSize
		case h.contentLength > 0:
			g.state, g.left = gBody, h.contentLength
		default:
			g.endMessage()
		}
		return n
	}
	g.mu.Lock()
	g.headResp = g.headReq
	g.mu.Unlock()
	switch {
	case h.status == 101:
		g.state = gPass
	case h.status < 200:
		// An interim response: the final one follows.
	case g.headResp || h.status == 204 || h.status == 304:
		g.endMessage()
	case h.chunked:
		g.state = gChunkSize
	case h.contentLength >= 0:
		g.state, g.left = gBody, h.contentLength
		if h.contentLength == 0 {
			g.endMessage()
		}
	default:
		g.state = gPass // read until the connection closes
	}
	if h.close && h.chunked && !h.http10 {
		// Perhaps Transfer-Encoding overrode a Content-Length: make the
		// Transport frame the response as the proxy does.
		if b := dropLengthAndClose(h, raw); b != nil {
			g.buf = slices.Concat(g.buf[:g.c], b, in[n:])
			return len(b)
		}
	}
	return n
}

// checkChunkLine checks a chunk-size or trailer line at the start of in.
func (g *h1Guard) checkChunkLine(in []byte) int {
	i := bytes.IndexByte(in, '\n')
	if i < 0 {
		if len(in) > 4096 {
			g.fail(errBadChunk)
		}
		return 0
	}
	line := in[:i+1]
	if g.state == gTrailer {
		if g.left += int64(len(line)); g.left > 64<<10 || !validTrailerLine(line) {
			g.fail(errBadChunk)
			return 0
		}
		if len(line) == 2 {
			g.endMessage()
		}
		return len(line)
	}
	size, err := parseChunkSize(line)
	if err != nil {
		g.fail(err)
		return 0
	}
	g.state, g.left = gChunkData, size
	if size == 0 {
		g.state = gTrailer
	}
	return len(line)
}

// endMessage moves on after a message's last byte.
func (g *h1Guard) endMessage() {
	g.state, g.left = gHead, 0
	if g.isRequest {
		if g.upgrade {
			g.mu.Lock()
			g.waiting, g.resume, g.wbuf = true, gHead, g.wbuf[:0]
			g.mu.Unlock()
			g.state = gWait
		}
		return
	}
	g.mu.Lock()
	g.idle = true
	g.mu.Unlock()
}

// failHead fails on a malformed head.
//
// On a client connection the proxy answers it as the fast path does
// (headAnswer: 400, 431 or 505), not net/http: Read fails with a
// *net.OpError, on which net/http's server closes without writing (once
// it has served the requests before it: see background), and Close writes
// the answer after what net/http wrote (it flushes before it closes).
//
// On an upstream connection it passes the head's first bytes on (too few
// to complete any message): net/http's Transport replays a request whose
// response fails before its first byte.
func (g *h1Guard) failHead(in []byte, err error) {
	if !g.isRequest {
		g.c += min(4, len(in))
		g.fail(err)
		return
	}
	g.fail(err)
	g.refused = true
	var b bytes.Buffer
	status, body := headAnswer(err)
	writeSimple(bufio.NewWriter(&b), status, "", body)
	g.mu.Lock()
	g.answer = b.Bytes()
	g.mu.Unlock()
	g.err = &net.OpError{Op: "read", Net: "tcp", Source: g.LocalAddr(), Addr: g.RemoteAddr(), Err: g.err}
}

// Close writes the answer to a malformed request head, if any, and closes
// as the fast path does (lingerClose), the lingering off the caller's
// goroutine: net/http may close an idle connection under its server's lock.
func (g *h1Guard) Close() error {
	g.mu.Lock()
	answer := g.answer
	g.answer = nil
	g.mu.Unlock()
	sc, ok := g.Conn.(*servedConn)
	if answer == nil || !ok {
		return g.Conn.Close()
	}
	sc.SetWriteDeadline(time.Now().Add(lingerTimeout))
	sc.Write(answer)
	go lingerClose(sc)
	return nil
}

func (g *h1Guard) fail(err error) {
	g.err = errors.Join(errFraming, err)
}

func (g *h1Guard) SetReadDeadline(t time.Time) error {
	g.background.Store(t.IsZero())
	return g.Conn.SetReadDeadline(t)
}

func (g *h1Guard) SetDeadline(t time.Time) error {
	g.background.Store(t.IsZero())
	return g.Conn.SetDeadline(t)
}

func (g *h1Guard) Write(b []byte) (int, error) {
	g.mu.Lock()
	switch {
	case !g.isRequest && g.idle:
		// The Transport starts a request (it does not pipeline).
		g.idle, g.headReq = false, bytes.HasPrefix(b, []byte("HEAD "))
	case g.isRequest && g.waiting:
		g.watchResponse(b)
	}
	g.mu.Unlock()
	return g.Conn.Write(b)
}

// watchResponse reads the status of the response to an Upgrade request
// (after any interim ones) from what the server writes. Called with mu.
func (g *h1Guard) watchResponse(b []byte) {
	g.wbuf = append(g.wbuf, b...)
	for len(g.wbuf) >= 12 {
		code, ok := parseDigits(g.wbuf[9:12])
		switch {
		case !ok || !bytes.HasPrefix(g.wbuf, []byte("HTTP/1.")):
			g.waiting, g.resume = false, gHead
		case code == 101:
			g.waiting, g.resume = false, gPass
		case code < 200:
			end := bytes.Index(g.wbuf, []byte("\r\n\r\n"))
			if end < 0 && len(g.wbuf) < 64<<10 {
				return
			}
			if end >= 0 {
				g.wbuf = g.wbuf[end+4:]
				continue
			}
			g.waiting, g.resume = false, gHead
		default:
			g.waiting, g.resume = false, gHead
		}
		g.wbuf = g.wbuf[:0]
		return
	}
}

// CloseWrite half-closes the connection (for tunnels).
func (g *h1Guard) CloseWrite() error {
	if cw, ok := g.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// dropLengthAndClose rewrites a response head whose Content-Length
// parseH1Head set aside for its Transfer-Encoding: without the
// Content-Length, with "Connection: close". It returns nil when there was
// no Content-Length.
func dropLengthAndClose(h *h1Head, raw []byte) []byte {
	dropped := false
	for _, f := range h.headers {
		if f.hop && asciiEqualFold(f.name, "content-length") {
			dropped = true
		}
	}
	if !dropped {
		return nil
	}
	line, _, _ := cutLine(raw)
	b := make([]byte, 0, len(raw)+20)
	b = append(append(b, line...), "\r\n"...)
	for _, f := range h.headers {
		if f.hop && asciiEqualFold(f.name, "content-length") {
			continue
		}
		b = append(append(append(append(b, f.name...), ": "...), f.value...), "\r\n"...)
	}
	return append(b, "Connection: close\r\n\r\n"...)
}
