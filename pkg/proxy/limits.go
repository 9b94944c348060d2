package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"
)

// Bounds under abuse. Each traffic listener caps its open connections (past
// the cap a new connection is reset at once, before detection) and its
// in-flight HTTP requests (past the cap a request gets a 503 and is not
// forwarded). Without Config.MaxMemory the caps are fixed; with it they are
// derived so that a listener at both caps stays within the budget (see
// deriveCaps). Header blocks are bounded in bytes (MaxHeaderBytes) and in
// fields (maxHeaderFields); a request body the client stops sending, or a
// response the client stops reading, is aborted after BodyIdleTimeout; and a
// panic while serving a connection is recovered, counted
// (conduit_proxy_panics_total) and closes that connection (that stream, on
// HTTP/2) only.

// maxHeaderFields bounds the header fields of a message, as Envoy's and
// hyper's default (100): parsing cost and the memory a head pins grow with
// the field count, not only with the bytes.
const maxHeaderFields = 100

// errTooManyHeaders is a message head with more than maxHeaderFields fields.
var errTooManyHeaders = fmt.Errorf("more than %d header fields", maxHeaderFields)

// headAnswer is the answer (status and body) to a request head that
// failed to parse.
func headAnswer(err error) (status int, body string) {
	switch {
	case errors.Is(err, errTooManyHeaders):
		return http.StatusRequestHeaderFieldsTooLarge, "malformed request: " + err.Error()
	case errors.Is(err, errVersion):
		return http.StatusHTTPVersionNotSupported, err.Error()
	}
	return http.StatusBadRequest, "malformed request: " + err.Error()
}

// Fixed caps without a memory budget, per traffic listener.
const (
	defaultMaxConnections = 10000
	defaultMaxRequests    = 10000
)

// Costs the caps are derived from, measured on conduit-proxy (see the
// README's figures): an idle connection (goroutine, buffers, poller entry)
// and an in-flight request (its upstream connection and copy buffers).
// Together they are the worst case seen, a slow chunked upload on the
// net/http path (62 KiB; a fast-path upload costs 25 KiB), with margin;
// memReserve is the process without traffic (text, runtime, heap).
const (
	memReserve     = 16 << 20
	memPerConn     = 24 << 10
	memPerRequest  = 48 << 10
	minDerivedCaps = 64
)

// deriveCaps splits a memory budget between nListeners listeners, each
// allowed conns connections and as many in-flight requests: an HTTP/1.1
// connection carries one request at a time, so connections the proxy
// accepted can never be starved of request slots by slow requests on
// others.
func deriveCaps(budget int64, nListeners int) (conns, reqs int) {
	if nListeners < 1 {
		nListeners = 1
	}
	per := (budget - memReserve) / int64(nListeners)
	c := max(int(per/(memPerConn+memPerRequest)), minDerivedCaps)
	return c, c
}

// limiter is a counting semaphore that never waits.
type limiter struct {
	max int64
	n   atomic.Int64
}

func (l *limiter) acquire() bool {
	if l.n.Add(1) > l.max {
		l.n.Add(-1)
		return false
	}
	return true
}

func (l *limiter) release() { l.n.Add(-1) }

// shed counts a connection or request refused at a cap and logs it at most
// once a minute per listener.
func (s *side) shed(reason string) {
	s.p.metrics.Error(s.dir, reason)
	now := time.Now().UnixNano()
	if last := s.shedLogged.Load(); now-last > int64(time.Minute) && s.shedLogged.CompareAndSwap(last, now) {
		s.p.log.Warn("load shedding: a cap is reached (conduit_proxy_errors_total counts every shed)",
			"direction", s.dir, "reason", reason, "max_connections", s.conns.max, "max_requests", s.requests.max)
	}
}

// recovered counts and logs a panic recovered while serving a connection.
func (p *Proxy) recovered(dir string, v any) {
	p.metrics.Panic(dir)
	p.log.Error("panic while serving a connection; closing it", "direction", dir, "panic", v, "stack", string(debug.Stack()))
}

// serveAdmitted serves the fast path's current request if the listener has
// room for one more in flight, else answers 503 without forwarding it.
func (fc *fastConn) serveAdmitted() bool {
	s := fc.s
	if !s.requests.acquire() {
		s.shed("request_limit")
		return fc.answerUnforwarded(http.StatusServiceUnavailable, errOverloaded.msg)
	}
	defer s.requests.release()
	return fc.serveOne()
}

var errOverloaded = proxyError{http.StatusServiceUnavailable, "request_limit", "proxy overloaded: too many requests in flight"}

// guard wraps a side's net/http handler with the request cap, the header
// field cap, the body idle timeout and panic recovery.
type guard struct {
	s    *side
	next http.Handler
}

func (g guard) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s := g.s
	defer func() {
		if v := recover(); v != nil {
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.p.recovered(s.dir, v)
			// net/http closes the connection (HTTP/1) or resets the
			// stream (HTTP/2) and logs nothing for ErrAbortHandler.
			panic(http.ErrAbortHandler)
		}
	}()
	if r.ProtoMajor == 2 {
		info := infoFrom(r.Context())
		info.streams.Add(1)
		if r.Context().Err() != nil {
			// Reset before its handler ran (queued behind the stream
			// limit): nothing to forward.
			s.earlyReset(info)
			return
		}
	}
	if n := fieldCount(r.Header) + fieldCount(r.Trailer); n > maxHeaderFields {
		s.p.metrics.Error(s.dir, "too_many_headers")
		w.Header().Set("Connection", "close")
		w.Header().Set(ErrorHeader, errTooManyHeaders.Error())
		http.Error(w, "request has "+errTooManyHeaders.Error(), http.StatusRequestHeaderFieldsTooLarge)
		return
	}
	if !s.requests.acquire() {
		s.shed(errOverloaded.reason)
		w.Header().Set(ErrorHeader, errOverloaded.msg)
		http.Error(w, errOverloaded.msg, errOverloaded.status)
		return
	}
	defer s.requests.release()
	d := s.p.cfg.BodyIdleTimeout
	rc := http.NewResponseController(w)
	var body *idleBody
	// On HTTP/2 a quiet stream costs one of the connection's bounded
	// streams, not a connection: a request body may pause for as long as
	// its client likes (a gRPC stream's client may send nothing for
	// minutes), and a response write is bounded only while it waits (a
	// stream's write deadline resets it when it fires, written to or not).
	h2 := r.ProtoMajor == 2
	if r.Body != nil && r.Body != http.NoBody && !h2 {
		// A copy: the server must keep seeing its own body (to tell
		// whether the connection can be reused).
		r = r.WithContext(r.Context())
		body = &idleBody{ReadCloser: r.Body, rc: rc, d: d}
		r.Body = body
	}
	iw := &idleWriter{ResponseWriter: w, rc: rc, d: d, s: s, h2: h2}
	// Writes net/http makes itself (100 Continue) are bounded too.
	if !h2 {
		iw.arm()
	}
	g.next.ServeHTTP(iw, r)
	if body != nil {
		body.handlerDone()
	}
	if r.ProtoMajor == 2 && !iw.wrote && r.Context().Err() != nil {
		s.earlyReset(infoFrom(r.Context()))
	}
	if body != nil && body.stalled.Load() {
		// Whatever was answered, the exchange is broken: close the
		// connection (reset the stream) rather than let net/http send
		// a default response or read on after the stalled body.
		s.p.metrics.Error(s.dir, "body_timeout")
		panic(http.ErrAbortHandler)
	}
	iw.arm() // for the server's final flush of what the handler wrote
}

func fieldCount(h http.Header) int {
	n := 0
	for _, v := range h {
		n += len(v)
	}
	return n
}

// HTTP/2 rapid reset (CVE-2023-44487): net/http runs at most
// MaxConcurrentStreams handlers per connection and sends GOAWAY when too
// many reset streams queue behind them, but a client that resets each
// stream just after its HEADERS still makes the proxy start one upstream
// request per stream, thousands a second. A connection on which more than
// rapidResetMin streams, and more than half of all, were reset before
// their response started is closed, like hyper's (Linkerd's proxy's)
// bound on streams reset before they are accepted.
const rapidResetMin = 200

func (s *side) earlyReset(info *connInfo) {
	n := info.earlyResets.Add(1)
	if n > rapidResetMin && 2*n > info.streams.Load() && info.conn != nil && info.resetClosed.CompareAndSwap(false, true) {
		s.p.log.Warn("closing an HTTP/2 connection whose client resets most streams before their response (rapid reset)",
			"direction", s.dir, "remote", info.remote, "resets", n, "streams", info.streams.Load())
		s.p.metrics.Error(s.dir, "h2_rapid_reset")
		info.conn.Close()
	}
}

// idleBody aborts a request body read that waits longer than d.
type idleBody struct {
	io.ReadCloser
	rc      *http.ResponseController
	d       time.Duration
	stalled atomic.Bool
	// done is set once the handler returned: a transport's goroutine may
	// still read the body (an attempt cancelled, a retry), but the
	// server's writer is no longer the handler's to set deadlines on.
	mu   sync.Mutex
	done bool
	// cut is set when interrupt ended the body's reads; eof once a read
	// reached the body's end.
	cut, eof bool
}

// errBodyCut ends the reads of a body interrupt cut.
var errBodyCut = errors.New("request body read interrupted: the request's context ended")

// interrupt ends the body read that waits, and those after it, for a
// request whose context ended (its route's timeout): net/http's Transport
// does not return from a cancelled round trip until the body read its
// writer is blocked in does, and a client that stalls its body would hold
// the answer until the body idle timeout (and then lose it, as a stalled
// body).
// It reports whether it cut the body short (the connection then cannot
// carry another request).
func (b *idleBody) interrupt() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.done || b.eof {
		return false
	}
	b.cut = true
	b.rc.SetReadDeadline(time.Now())
	return true
}

func (b *idleBody) handlerDone() {
	b.mu.Lock()
	b.done = true
	b.mu.Unlock()
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.mu.Lock()
	if b.cut {
		b.mu.Unlock()
		return 0, errBodyCut
	}
	if !b.done {
		b.rc.SetReadDeadline(time.Now().Add(b.d))
	}
	b.mu.Unlock()
	n, err := b.ReadCloser.Read(p)
	switch {
	case err == io.EOF:
		b.mu.Lock()
		b.eof = true
		b.mu.Unlock()
	case errors.Is(err, os.ErrDeadlineExceeded):
		b.mu.Lock()
		cut := b.cut
		b.mu.Unlock()
		if cut {
			return n, errBodyCut
		}
		b.stalled.Store(true)
	}
	return n, err
}

// idleWriter aborts a response write the client does not take within d.
type idleWriter struct {
	http.ResponseWriter
	rc      *http.ResponseController
	d       time.Duration
	s       *side
	h2      bool // disarm after each write (see bodyLimits)
	wrote   bool // a response (or a 1xx) was started
	stalled bool // a write failed for the deadline (counted once)
}

func (w *idleWriter) arm() { w.rc.SetWriteDeadline(time.Now().Add(w.d)) }

// done ends a write's deadline on HTTP/2.
func (w *idleWriter) done() {
	if w.h2 {
		w.rc.SetWriteDeadline(time.Time{})
	}
}

func (w *idleWriter) WriteHeader(code int) {
	w.arm()
	w.wrote = true
	w.ResponseWriter.WriteHeader(code)
	w.done()
}

func (w *idleWriter) Write(b []byte) (int, error) {
	w.arm()
	w.wrote = true
	n, err := w.ResponseWriter.Write(b)
	w.done()
	if err != nil && !w.stalled && errors.Is(err, os.ErrDeadlineExceeded) {
		w.stalled = true
		w.s.p.metrics.Error(w.s.dir, "body_timeout")
	}
	return n, err
}

func (w *idleWriter) Flush() {
	w.arm()
	w.wrote = true
	w.rc.Flush()
	w.done()
}

// Hijack hands the connection over without the body deadlines: a tunnel
// (CONNECT, Upgrade) may be quiet for as long as its peers like.
func (w *idleWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := w.rc.Hijack()
	if err == nil {
		c.SetDeadline(time.Time{})
	}
	return c, brw, err
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *idleWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
