package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
)

// The HTTP/1.1 fast path serves the common keep-alive request — any method,
// origin-form target, no body or a Content-Length body of at most
// fastMaxBody, whatever its route does (header modifiers, timeouts,
// retries) — with pooled buffers and pooled upstream connections and no
// per-request goroutines, which is what keeps the proxy's CPU and memory
// low. The first request of a connection that it does not handle (Upgrade,
// CONNECT, Expect, chunked uploads, HTTP/1.0, ...) hands the connection,
// with the bytes already read, to the net/http path.

const (
	fastMaxBody      = 64 << 10
	fastBufSize      = 4 << 10
	fastMaxIdlePerUp = 32
)

var errHeadTooLarge = errors.New("message head too large")

// fastConn is one client connection on the fast path.
type fastConn struct {
	s     *side
	sc    *servedConn
	br    *bufio.Reader
	bw    *bufio.Writer
	head  []byte // the current request head, raw
	req   h1Head
	resp  h1Head
	rhead []byte // the current response head, raw
	// fields is reused to list heads' fields for the Observer.
	fields []Field
	// obsReq and obsRsp are reused to describe heads to the Observer
	// (valid during its calls only), so that observing allocates neither.
	obsReq Request
	obsRsp Response
	// host and authority are the last request's Host header, as sent and
	// canonical: a connection's requests mostly name one host, which then
	// costs no allocation.
	host, authority string
}

// authorityOf is the canonical authority of the current request's Host.
func (fc *fastConn) authorityOf() string {
	if string(fc.req.host) != fc.host {
		fc.host = string(fc.req.host)
		fc.authority = canonicalAuthority(fc.host, "80")
	}
	return fc.authority
}

var (
	fastReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, fastBufSize) }}
	fastWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, fastBufSize) }}
)

// serveFast runs the fast path on sc until the connection ends or is handed
// to net/http.
func (s *side) serveFast(sc *servedConn) {
	p := s.p
	fc := &fastConn{s: s, sc: sc}
	fc.br = fastReaders.Get().(*bufio.Reader)
	fc.br.Reset(sc)
	fc.bw = fastWriters.Get().(*bufio.Writer)
	fc.bw.Reset(sc)
	handedOff := false
	defer func() {
		fc.br.Reset(nil)
		fastReaders.Put(fc.br)
		fc.bw.Reset(nil)
		fastWriters.Put(fc.bw)
		switch {
		case handedOff:
		case p.draining.Load():
			lingerClose(sc)
		default:
			sc.Close()
		}
	}()
	for first := true; ; first = false {
		if !first && !fc.waitIdle() {
			return
		}
		sc.SetReadDeadline(time.Now().Add(p.cfg.HeaderReadTimeout))
		err := fc.readHead(fc.br, &fc.head, true)
		sc.SetReadDeadline(time.Time{})
		if err != nil {
			if errors.Is(err, errHeadTooLarge) {
				fc.writeSimple(http.StatusRequestHeaderFieldsTooLarge, "", "request header too large")
			}
			return
		}
		if err := parseH1Head(fc.head, true, &fc.req); err != nil {
			status, body := headAnswer(err)
			fc.writeSimple(status, "", body)
			return
		}
		if fc.req.odd || fc.req.chunked || fc.req.contentLength > fastMaxBody {
			handedOff = fc.handOff()
			return
		}
		if !fc.serveAdmitted() || p.draining.Load() {
			return
		}
	}
}

// lingerTimeout and lingerMax bound what lingerClose reads.
const (
	lingerTimeout = 500 * time.Millisecond
	lingerMax     = 256 << 10
)

// lingerClose ends a connection the proxy closes while draining: its end
// of stream first, then what the client still sends is read and dropped
// for a moment. A request the client sent as the proxy decided to close
// (an idle keep-alive connection woken by the drain) then meets an orderly
// end of stream, which clients retry, rather than a reset (closing a
// socket with unread data resets it).
func lingerClose(c *servedConn) {
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(lingerTimeout))
	io.Copy(io.Discard, io.LimitReader(c.Conn, lingerMax))
	c.Close()
}

// waitIdle waits for the next request's first byte. It returns false when
// the connection should close (idle timeout, client gone, draining).
func (fc *fastConn) waitIdle() bool {
	p := fc.s.p
	if fc.br.Buffered() > 0 {
		return true
	}
	p.mu.Lock()
	p.idleFast[fc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.idleFast, fc)
		p.mu.Unlock()
	}()
	if p.draining.Load() {
		return false
	}
	fc.sc.SetReadDeadline(time.Now().Add(p.cfg.IdleTimeout))
	_, err := fc.br.Peek(1)
	fc.sc.SetReadDeadline(time.Time{})
	return err == nil
}

// handOff gives the connection, from the current request on, to net/http.
func (fc *fastConn) handOff() bool {
	fc.s.p.h1HandedOff.Add(1)
	prefix := make([]byte, 0, len(fc.head)+fc.br.Buffered())
	prefix = append(prefix, fc.head...)
	if n := fc.br.Buffered(); n > 0 {
		b, _ := fc.br.Peek(n)
		prefix = append(prefix, b...)
	}
	return fc.s.httpLn.hand(fc.s.guardH1(&servedConn{Conn: fc.sc.Conn, prefix: prefix, info: fc.sc.info}))
}

// readHead reads one message head (up to its empty line) into *dst. A
// head that ends in a bare LF is left to parseH1Head to refuse.
func (fc *fastConn) readHead(br *bufio.Reader, dst *[]byte, isRequest bool) error {
	max := fc.s.p.cfg.MaxHeaderBytes
	b := (*dst)[:0]
	for {
		line, err := br.ReadSlice('\n')
		if isRequest && len(b) == 0 && string(line) == "\r\n" {
			continue // RFC 9112 2.2: ignore empty lines before a request line
		}
		b = append(b, line...)
		*dst = b
		if len(b) > max+1024 {
			return errHeadTooLarge
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case err != nil:
			return err
		}
		if string(line) == "\r\n" || string(line) == "\n" {
			if len(b) > max {
				return errHeadTooLarge
			}
			return nil
		}
	}
}

// serveOne forwards the parsed request and its response. It returns whether
// the client connection stays open.
func (fc *fastConn) serveOne() bool {
	p := fc.s.p
	dir := fc.s.dir
	info := fc.sc.info
	start := time.Now()
	authority := fc.authorityOf()
	h := fc.s.h
	var or outRoute
	x := h1Exchange{authority: authority, tries: 1}
	var perr *proxyError
	if t := p.routeTable(context.Background(), dir, authority); t != nil {
		req := httpmatch.FieldsRequest(fc.req.method, fc.req.target, fc.fieldsOf(fc.req.headers))
		or, perr = p.routeRequest(t, &req, "http", authority)
		if perr == nil && or.redirect == nil && or.modifiesRequest() {
			fc.modifyHeaders(&fc.req.headers, &or, true)
		}
	}
	if perr == nil && or.redirect == nil {
		// The route's request timeout bounds the wait.
		x.rt, perr = h.routeOrWait(context.Background(), info, authority, &or, or.timeout)
	}
	x.retrying = perr == nil && p.retryFor(&or, authority, methodString(fc.req.method), false, fc.req.contentLength)
	var decision authz.Decision
	if perr == nil && p.cfg.Policy != nil && dir == Inbound {
		decision, perr = p.authorizeRequest(info, authz.FieldsRequest(fc.req.method, fc.req.target, fc.fieldsOf(fc.req.headers)))
	}
	routed := perr == nil && or.redirect == nil
	series, labels := p.requestSeries(dir, authority, info, &or, &x.rt, routed, &decision)
	status, streamErr := 0, false
	var latency time.Duration
	// Observed (tapped) requests only: what the Observer is told at the end.
	var obs Observation
	var respBytes int64
	var proxyErr string
	if p.observing() {
		obs = fc.observe(labels, x.rt, routed, &decision)
	}
	// clientTimed: the client's read deadline is the route's timeout,
	// cleared once the request's body is read (or here, answered early).
	clientTimed := false
	defer func() {
		if clientTimed {
			fc.sc.SetReadDeadline(time.Time{})
		}
		series.Response(status, "", metrics.Classify(status, "", streamErr), latency)
		x.rt.finished(latency, status == 0 || status >= 500, status, "")
		if obs != nil {
			err := x.upErr
			if streamErr {
				err = errStreamAborted
			}
			obs.Ended(EndInfo{Status: status, Latency: latency, Duration: time.Since(start),
				ResponseBytes: respBytes, Err: err, ProxyError: proxyErr, Retries: x.tries - 1})
		}
	}()
	// answered accounts for an answer the proxy makes itself (writeSimple).
	answered := func(e proxyError) {
		p.metrics.Error(dir, e.reason)
		status, latency, proxyErr = e.status, time.Since(start), e.reason
		if obs != nil {
			respBytes = int64(len(e.msg) + 1)
			obs.ResponseStarted(&Response{Status: e.status, Header: http.Header{"Content-Type": {"text/plain; charset=utf-8"}, ErrorHeader: {sanitizeHeaderValue(e.msg)}}})
		}
	}
	if perr != nil {
		answered(*perr)
		return fc.answerUnforwarded(perr.status, perr.msg)
	}
	if or.redirect != nil {
		status, latency = or.redirect.Status, time.Since(start)
		location := sanitizeHeaderValue(or.location)
		if obs != nil {
			obs.ResponseStarted(&Response{Status: status, Header: http.Header{"Location": {location}}})
		}
		return fc.discardBody() && fc.writeRedirect(status, location, &or) && !fc.req.close
	}

	x.bodiless = fc.req.contentLength <= 0
	x.idempotent = isIdempotent(fc.req.method)
	// The route's request timeout (deadline; zero: none) bounds the
	// connect, the request's body and the response; with retries, each
	// attempt's timeout bounds it until its response head.
	if or.timeout > 0 {
		x.deadline = start.Add(or.timeout)
		if !x.bodiless {
			fc.sc.SetReadDeadline(x.deadline)
			clientTimed = true
		}
	}
	// A request the route retries has its body read first, to send again.
	if x.retrying && !x.bodiless {
		x.bodyTouched = true
		x.body = make([]byte, fc.req.contentLength)
		if _, err := io.ReadFull(fc.br, x.body); err != nil {
			if passed(x.deadline) {
				x.upErr = err
				answered(errRequestTimeout)
				fc.writeSimple(errRequestTimeout.status, errRequestTimeout.msg, errRequestTimeout.msg)
			} else {
				streamErr = true
			}
			return false
		}
	}
	up, e, failed := fc.exchange(&x, h, &or)
	switch failed {
	case exchangeClient:
		streamErr = true
		return false
	case exchangeAnswer:
		answered(e)
		if !x.bodyTouched {
			return fc.answerUnforwarded(e.status, e.msg)
		}
		fc.writeSimple(e.status, e.msg, e.msg)
		return false
	case exchangeAnswerClose:
		answered(e)
		fc.writeSimple(e.status, e.msg, e.msg)
		return false
	}
	// The attempt's timeout ends with its response head; the request's
	// bounds the rest. The client's body is read.
	if !x.tryDeadline.Equal(x.deadline) {
		up.c.SetDeadline(x.deadline)
	}
	if clientTimed {
		fc.sc.SetReadDeadline(time.Time{})
		clientTimed = false
	}
	if or.modifiesResponse() {
		fc.modifyHeaders(&fc.resp.headers, &or, false)
	}
	status, latency = fc.resp.status, time.Since(start)
	if obs != nil {
		fc.obsRsp = Response{Status: status, Fields: fc.fieldsOf(fc.resp.headers)}
		obs.ResponseStarted(&fc.obsRsp)
		fc.obsRsp = Response{}
	}
	keep, upKeep, n, err := fc.forwardResponse(up)
	respBytes = n
	if err != nil {
		streamErr = true
		if passed(x.deadline) {
			// The route's timeout cut the response short.
			p.metrics.Error(dir, errRequestTimeout.reason)
		}
		up.c.Close()
		return false
	}
	if upKeep {
		if !x.deadline.IsZero() {
			up.c.SetDeadline(time.Time{})
		}
		p.fastUps.put(up)
	} else {
		up.c.Close()
	}
	return keep
}

// h1Exchange is a request's way to its response head on the fast path:
// the current attempt's endpoint and what the route's retries and timeouts
// allow.
type h1Exchange struct {
	authority string
	rt        route // the current attempt's endpoint
	tries     int   // attempts so far, with the route's retries

	retrying   bool // the route retries this request
	bodiless   bool
	idempotent bool
	body       []byte // a retried request's body, read first to be sent again
	// deadline is the route's request timeout (zero: none), tryDeadline
	// the current attempt's bound.
	deadline, tryDeadline time.Time
	// bodyTouched: some of the request's body was read, so answering it
	// leaves the connection unusable.
	bodyTouched bool
	upErr       error // the last attempt's error
}

// exchangeFailure says why exchange returned no response head.
type exchangeFailure int

const (
	exchangeOK exchangeFailure = iota
	// exchangeAnswer: answer the proxy's error; the connection stays open
	// if none of the body was read.
	exchangeAnswer
	// exchangeAnswerClose: answer the proxy's error and close: part of the
	// body may have gone upstream.
	exchangeAnswerClose
	// exchangeClient: the client's side failed; close without an answer.
	exchangeClient
)

// exchange sends the request, and again on an endpoint picked again as the
// route's (or's) retries allow, until it has read a response head: it
// returns the upstream connection holding it, or why there is none (with
// the proxy's answer). (h and or are not in x: x's fields leak to the
// heap, and or would go with them.)
func (fc *fastConn) exchange(x *h1Exchange, h *httpHandler, or *outRoute) (*fastUp, proxyError, exchangeFailure) {
	p := fc.s.p
	dir := fc.s.dir
	key := p.keyFor(dir, x.rt.ep, x.rt.dst, false)
	var tryStart time.Time
	// reroute picks the endpoint of another attempt after one that ended
	// with status (0: none, the attempt timed out); false when the route
	// has none to give.
	reroute := func(status int) bool {
		next, perr := h.route(context.Background(), fc.sc.info, x.authority, or)
		if perr != nil {
			return false
		}
		x.rt.finished(time.Since(tryStart), true, status, "")
		x.rt, key, x.tries = next, p.keyFor(dir, next.ep, next.dst, false), x.tries+1
		return true
	}
	for staleRetried := false; ; {
		x.tryDeadline = x.deadline
		if x.retrying && or.tryTimeout > 0 {
			if d := time.Now().Add(or.tryTimeout); x.tryDeadline.IsZero() || d.Before(x.tryDeadline) {
				x.tryDeadline = d
			}
		}
		tryStart = time.Now()
		up, reused, err := p.fastUps.get(key, x.rt.ep, dir, !x.idempotent, x.tryDeadline)
		received := false
		dialed := err == nil
		if dialed {
			if !x.tryDeadline.IsZero() {
				up.c.SetDeadline(x.tryDeadline)
			}
			up.sent = 0
			x.bodyTouched = x.bodyTouched || !x.bodiless
			err = fc.forwardRequest(up, x.body)
			if err == nil {
				received, err = fc.readResponseHead(up)
			}
			if err != nil {
				up.c.Close()
			}
		}
		if err == nil {
			if !x.retrying || !or.mayRetryResponse(x.tries, fc.resp.status, "") {
				return up, proxyError{}, exchangeOK
			}
			// Another attempt, on an endpoint picked again; the response
			// is dropped with its connection.
			if !reroute(fc.resp.status) {
				return up, proxyError{}, exchangeOK // this response is the client's
			}
			up.c.Close()
			continue
		}
		x.upErr = err
		if passed(x.tryDeadline) {
			if passed(x.deadline) || !x.retrying || !or.anotherTry(x.tries) {
				return nil, errRequestTimeout, exchangeAnswer
			}
			// The attempt's timeout: another attempt, as for a response
			// the route retries.
			if !reroute(0) {
				return nil, errRequestTimeout, exchangeAnswer
			}
			continue
		}
		if !dialed {
			return nil, dialProxyError(err), exchangeAnswer
		}
		// A pooled connection the upstream closed while it was idle: retry
		// once on a new one, if the request can be sent again (it had no
		// body, or it is kept) and may be (idempotent, or the upstream got
		// none of it).
		if reused && !staleRetried && (x.bodiless || x.body != nil) && !received && (x.idempotent || up.sent == 0) &&
			!errors.Is(err, errFromClient) {
			staleRetried = true
			continue
		}
		if errors.Is(err, errFromClient) {
			x.upErr = nil
			return nil, proxyError{}, exchangeClient
		}
		return nil, proxyError{http.StatusBadGateway, "upstream_error", "upstream failed"}, exchangeAnswerClose
	}
}

// observe describes the current request to the Observer as the fast path
// parsed it: fields, no http.Header. It returns nil when the Observer
// ignores the request.
func (fc *fastConn) observe(labels metrics.HTTPLabels, rt route, routed bool, d *authz.Decision) Observation {
	info := fc.sc.info
	path, query, _ := bytes.Cut(fc.req.target, []byte{'?'})
	fc.obsReq = Request{Direction: fc.s.dir, Method: methodString(fc.req.method), Scheme: "http",
		Authority: labels.Authority, Path: string(path), Query: string(query),
		ContentLength: max(fc.req.contentLength, 0), // chunked bodies are net/http's
		Fields:        fc.fieldsOf(fc.req.headers),
		Source:        info.remote, TLS: labels.TLS, ClientID: info.clientID, ServerID: labels.ServerID, Authz: *d,
		RouteKind: labels.RouteKind, RouteName: labels.RouteName}
	if routed {
		fc.obsReq.Destination, _ = netip.ParseAddrPort(rt.ep.Addr)
		fc.obsReq.DstLabels = rt.ep.Labels
	}
	obs := fc.s.p.cfg.Observer.RequestStarted(&fc.obsReq)
	fc.obsReq = Request{}
	return obs
}

// methods are the common request methods, whose names methodString
// returns without allocating.
var methods = [...]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete,
	http.MethodHead, http.MethodPatch, http.MethodOptions}

func methodString(m []byte) string {
	for _, name := range methods {
		if string(m) == name {
			return name
		}
	}
	return string(m)
}

// fieldsOf lists the end-to-end fields of hs in fc's reused buffer (never
// nil).
func (fc *fastConn) fieldsOf(hs []h1Header) []Field {
	if fc.fields == nil {
		fc.fields = make([]Field, 0, len(hs))
	}
	fc.fields = fc.fields[:0]
	for _, h := range hs {
		if !h.hop {
			fc.fields = append(fc.fields, Field{Name: h.name, Value: h.value})
		}
	}
	return fc.fields
}

// errFromClient marks failures on the client's side of the exchange.
var errFromClient = errors.New("client connection failed")

// forwardRequest writes the request head and body to the upstream: body
// when it was read already, else the client's.
func (fc *fastConn) forwardRequest(up *fastUp, body []byte) error {
	w := up.bw
	w.Write(fc.req.method)
	w.WriteByte(' ')
	w.Write(fc.req.target)
	w.WriteString(" HTTP/1.1\r\n")
	writeHeaders(w, fc.req.headers)
	w.WriteString("\r\n")
	if body != nil {
		w.Write(body)
	} else if n := fc.req.contentLength; n > 0 {
		if _, err := io.CopyN(w, fc.br, n); err != nil {
			if isWriteErr(w) {
				return err
			}
			return errors.Join(errFromClient, err)
		}
	}
	return w.Flush()
}

func isWriteErr(w *bufio.Writer) bool {
	_, err := w.Write(nil)
	return err != nil
}

func writeHeaders(w *bufio.Writer, hs []h1Header) {
	for _, h := range hs {
		if h.hop {
			continue
		}
		w.Write(h.name)
		w.WriteString(": ")
		w.Write(h.value)
		w.WriteString("\r\n")
	}
}

// readResponseHead reads the final response head, passing 1xx heads on.
// received reports whether any byte of a response arrived.
func (fc *fastConn) readResponseHead(up *fastUp) (received bool, err error) {
	for {
		err := fc.readHead(up.br, &fc.rhead, false)
		received = received || len(fc.rhead) > 0
		if err != nil {
			return received, err
		}
		if err := parseH1Head(fc.rhead, false, &fc.resp); err != nil {
			return true, errors.Join(errBadHead, err)
		}
		switch {
		case fc.resp.status == http.StatusSwitchingProtocols:
			return true, errors.Join(errBadHead, errors.New("unexpected 101 Switching Protocols"))
		case fc.resp.status < 200:
			if _, err := fc.bw.Write(fc.rhead); err != nil {
				return true, errors.Join(errFromClient, err)
			}
			if err := fc.bw.Flush(); err != nil {
				return true, errors.Join(errFromClient, err)
			}
			continue
		}
		return true, nil
	}
}

// forwardResponse writes the response head and body to the client. It
// returns whether the client and upstream connections can be reused, and
// the body bytes written.
func (fc *fastConn) forwardResponse(up *fastUp) (clientKeep, upKeep bool, n int64, err error) {
	resp := &fc.resp
	noBody := string(fc.req.method) == http.MethodHead || resp.status == http.StatusNoContent || resp.status == http.StatusNotModified
	closeDelimited := !noBody && !resp.chunked && resp.contentLength < 0
	clientKeep = !fc.req.close && !closeDelimited && !fc.s.p.draining.Load()
	upKeep = !resp.close && !closeDelimited && !resp.odd

	w := fc.bw
	line, _, _ := cutLine(fc.rhead)
	w.WriteString("HTTP/1.1")
	w.Write(line[8:]) // " 200 OK"
	w.WriteString("\r\n")
	writeHeaders(w, resp.headers)
	if resp.chunked && !noBody && !resp.codings {
		w.WriteString("Transfer-Encoding: chunked\r\n")
	}
	if !clientKeep {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("\r\n")
	buf := fc.s.p.bufs.Get()
	defer fc.s.p.bufs.Put(buf)
	if !noBody && (resp.chunked || closeDelimited || resp.contentLength > fastMaxBody) {
		// A streamed response may wait on the upstream for long: notice a
		// client that goes away meanwhile, as net/http does.
		stop := fc.watchClient(up.c)
		defer stop()
	}
	switch {
	case noBody:
	case resp.chunked:
		n, err = copyChunked(w, up.br, buf)
	case resp.contentLength >= 0:
		n, err = copyStreaming(w, up.br, resp.contentLength, buf)
	default:
		n, err = copyStreaming(w, up.br, -1, buf)
		upKeep = false
	}
	if err != nil {
		return false, false, n, err
	}
	if err := w.Flush(); err != nil {
		return false, false, n, err
	}
	// Bytes after the response's end were not asked for: the connection
	// is not at a message boundary.
	upKeep = upKeep && up.br.Buffered() == 0
	return clientKeep, upKeep, n, nil
}

// copyStreaming copies n bytes (n < 0: until EOF) and flushes whenever the
// source has nothing more buffered, so that streamed bodies are not held.
func copyStreaming(w *bufio.Writer, r *bufio.Reader, n int64, buf []byte) (written int64, err error) {
	for n != 0 {
		chunk := buf
		if n > 0 && int64(len(chunk)) > n {
			chunk = chunk[:n]
		}
		k, err := r.Read(chunk)
		if k > 0 {
			if _, werr := w.Write(chunk[:k]); werr != nil {
				return written, werr
			}
			written += int64(k)
			if n > 0 {
				n -= int64(k)
			}
			if r.Buffered() == 0 {
				if err := w.Flush(); err != nil {
					return written, err
				}
			}
		}
		if err != nil {
			if n < 0 && err == io.EOF {
				return written, nil
			}
			if err == io.EOF {
				return written, io.ErrUnexpectedEOF
			}
			return written, err
		}
	}
	return written, nil
}

// copyChunked copies a chunked body verbatim (sizes, data, trailers),
// validating its framing. It returns the chunks' data bytes written.
func copyChunked(w *bufio.Writer, r *bufio.Reader, buf []byte) (written int64, err error) {
	for {
		line, err := readLine(r, 4096)
		if err != nil {
			return written, err
		}
		size, err := parseChunkSize(line)
		if err != nil {
			return written, err
		}
		w.Write(line)
		if size == 0 {
			// Trailer fields, then the final empty line.
			for total := 0; ; {
				l, err := readLine(r, 4096)
				if err != nil {
					return written, err
				}
				total += len(l)
				if total > 64<<10 || !validTrailerLine(l) {
					return written, errBadChunk
				}
				w.Write(l)
				if string(l) == "\r\n" {
					return written, nil
				}
			}
		}
		k, err := copyStreaming(w, r, size, buf)
		written += k
		if err != nil {
			return written, err
		}
		l, err := readLine(r, 2)
		if err != nil || string(l) != "\r\n" {
			return written, errBadChunk
		}
		w.Write(l)
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return written, err
			}
		}
	}
}

// readLine reads a line including its LF, of at most max bytes.
func readLine(r *bufio.Reader, max int) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) || err == io.EOF {
			return nil, errBadChunk
		}
		return nil, err
	}
	if len(line) > max+2 {
		return nil, errBadChunk
	}
	return line, nil
}

// answerUnforwarded answers a request that was not sent upstream. Its body
// (at most fastMaxBody) is read and dropped so that the next request on the
// connection starts where it should. It returns whether the connection
// stays open.
func (fc *fastConn) answerUnforwarded(status int, msg string) bool {
	return fc.discardBody() && fc.writeSimple(status, msg, msg) && !fc.req.close
}

// discardBody reads and drops the request's body (at most fastMaxBody),
// so that the next request starts where it should. It returns false when
// the body could not be read.
func (fc *fastConn) discardBody() bool {
	if n := fc.req.contentLength; n > 0 {
		fc.sc.SetReadDeadline(time.Now().Add(fc.s.p.cfg.HeaderReadTimeout))
		_, err := io.CopyN(io.Discard, fc.br, n)
		fc.sc.SetReadDeadline(time.Time{})
		if err != nil {
			return false
		}
	}
	return true
}

// writeRedirect answers with a route's redirect, with the route's
// response header modifiers applied. It returns whether the write
// succeeded.
func (fc *fastConn) writeRedirect(status int, location string, or *outRoute) bool {
	w := fc.bw
	w.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n")
	if or.modifiesResponse() {
		hs := []h1Header{{name: []byte("Location"), value: []byte(location)}, {name: []byte("Content-Length"), value: []byte("0")}}
		fc.modifyHeaders(&hs, or, false)
		writeHeaders(w, hs)
		w.WriteString("\r\n")
	} else {
		w.WriteString("Location: " + location + "\r\nContent-Length: 0\r\n\r\n")
	}
	return w.Flush() == nil
}

// modifyHeaders applies the route's header modifiers (request's or
// response's) to a head's end-to-end fields; its hop-by-hop fields, which
// are never forwarded, stay as they are.
func (fc *fastConn) modifyHeaders(hs *[]h1Header, or *outRoute, request bool) {
	fields := routes.Fields(fc.fieldsOf(*hs))
	if request {
		or.modifyRequest(&fields)
	} else {
		or.modifyResponse(&fields)
	}
	out := (*hs)[:0]
	for _, h := range *hs {
		if h.hop {
			out = append(out, h)
		}
	}
	for _, f := range fields {
		out = append(out, h1Header{name: f.Name, value: f.Value})
	}
	*hs = out
}

// passed reports whether deadline is set and has passed.
func passed(deadline time.Time) bool {
	return !deadline.IsZero() && !time.Now().Before(deadline)
}

// writeSimple answers with a short response the proxy made. msg goes in
// the conduit-proxy-error header when header is set. It returns whether the
// write succeeded.
func (fc *fastConn) writeSimple(status int, header, body string) bool {
	return writeSimple(fc.bw, status, header, body) == nil
}

// writeSimple writes a short response the proxy made to w and flushes it.
func writeSimple(w *bufio.Writer, status int, header, body string) error {
	w.WriteString("HTTP/1.1 " + strconv.Itoa(status) + " " + http.StatusText(status) + "\r\n")
	if header != "" {
		w.WriteString(ErrorHeader + ": " + sanitizeHeaderValue(header) + "\r\n")
	}
	if status >= 400 && status != http.StatusBadGateway && status != http.StatusServiceUnavailable && status != http.StatusGatewayTimeout {
		w.WriteString("Connection: close\r\n")
	}
	w.WriteString("Content-Type: text/plain; charset=utf-8\r\nContent-Length: " + strconv.Itoa(len(body)+1) + "\r\n\r\n" + body + "\n")
	return w.Flush()
}

// dialProxyError maps a failed connect to the proxy's answer.
func dialProxyError(err error) proxyError {
	switch reason := dialErrorReason(err); reason {
	case "connect_refused":
		return proxyError{http.StatusBadGateway, reason, "connection refused"}
	case "connect_timeout":
		return proxyError{http.StatusGatewayTimeout, reason, "connect timeout"}
	case "tls_handshake":
		return proxyError{http.StatusBadGateway, reason, "mTLS handshake with the peer proxy failed"}
	default:
		return proxyError{http.StatusBadGateway, reason, "connect failed"}
	}
}

// fastUp is a pooled upstream connection.
type fastUp struct {
	key  upKey
	c    net.Conn
	br   *bufio.Reader
	bw   *bufio.Writer // writes to the fastUp itself
	idle time.Time
	sent int64 // bytes written since the current request began
}

func (up *fastUp) Write(b []byte) (int, error) {
	n, err := up.c.Write(b)
	up.sent += int64(n)
	return n, err
}

// isIdempotent: RFC 9110 9.2.2's methods, which a proxy may send twice.
func isIdempotent(method []byte) bool {
	switch string(method) {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// fastUpstreams pools upstream connections per endpoint.
type fastUpstreams struct {
	p    *Proxy
	mu   sync.Mutex // guards idle
	idle map[upKey][]*fastUp
}

// get takes a pooled connection or dials one, by deadline if it is set
// and comes before the connect timeout; probe checks that a pooled
// connection is still open however recently it was used.
func (u *fastUpstreams) get(k upKey, ep resolve.Endpoint, dir string, probe bool, deadline time.Time) (*fastUp, bool, error) {
	now := time.Now()
	for {
		u.mu.Lock()
		list := u.idle[k]
		var up *fastUp
		if n := len(list); n > 0 {
			up = list[n-1]
			list[n-1] = nil
			u.idle[k] = list[:n-1]
		}
		u.mu.Unlock()
		if up == nil {
			break
		}
		// A connection used moments ago is taken as alive (servers' idle
		// timeouts are seconds; a bodiless request is retried anyway);
		// older ones are probed for a close from the peer.
		if idle := now.Sub(up.idle); idle < u.p.cfg.IdleTimeout && ((idle < 500*time.Millisecond && !probe) || up.alive()) {
			return up, true, nil
		}
		up.c.Close()
	}
	d := now.Add(u.p.cfg.ConnectTimeout)
	if !deadline.IsZero() && deadline.Before(d) {
		d = deadline
	}
	ctx, cancel := context.WithDeadline(context.Background(), d)
	defer cancel()
	c, err := u.p.ups.dialLabeled(ctx, dir, ep, k.dst)
	if err != nil {
		return nil, false, err
	}
	up := &fastUp{key: k, c: c, br: bufio.NewReaderSize(c, fastBufSize)}
	up.bw = bufio.NewWriterSize(up, fastBufSize)
	return up, false, nil
}

// alive checks, without blocking, that the peer has not closed an idle
// connection (or sent something unexpected).
func (up *fastUp) alive() bool {
	return up.br.Buffered() == 0 && !peerClosed(up.c)
}

func (u *fastUpstreams) put(up *fastUp) {
	up.idle = time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if len(u.idle[up.key]) >= fastMaxIdlePerUp || u.p.draining.Load() {
		up.c.Close()
		return
	}
	u.idle[up.key] = append(u.idle[up.key], up)
}

func (u *fastUpstreams) closeAll() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for k, list := range u.idle {
		for _, up := range list {
			up.c.Close()
		}
		delete(u.idle, k)
	}
}

// watchClient reads ahead on the client connection while a response is
// streamed; if the client goes away it closes the upstream connection, which
// ends the copy. The returned func stops the watch (before the next read of
// the client's connection).
func (fc *fastConn) watchClient(upstream net.Conn) (stop func()) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		if _, err := fc.br.Peek(1); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			upstream.Close()
		}
	}()
	return func() {
		fc.sc.SetReadDeadline(time.Now())
		<-done
		fc.sc.SetReadDeadline(time.Time{})
	}
}
