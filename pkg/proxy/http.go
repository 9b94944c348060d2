package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/balance"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
)

// ErrorHeader carries the reason of a response the proxy made itself.
const ErrorHeader = "conduit-proxy-error"

// proxyError is a response the proxy makes when it cannot forward.
type proxyError struct {
	status int
	reason string // metric label
	msg    string // header value
}

var (
	errUnknownAuthority = proxyError{http.StatusBadGateway, "unknown_authority", "no route for authority"}
	errNoEndpoints      = proxyError{http.StatusServiceUnavailable, "no_endpoints", "no endpoints available"}
	errNoTarget         = proxyError{http.StatusBadGateway, "no_target", "no inbound target and no original destination"}
	errResolve          = proxyError{http.StatusServiceUnavailable, "resolve", "discovery failed"}
	// errPending is routeNow's: discovery's first answer is awaited (the
	// caller resolves the request where it may wait; never answered).
	errPending        = proxyError{http.StatusServiceUnavailable, "resolve", "discovery has not answered yet"}
	errMissingHost    = proxyError{http.StatusBadRequest, "missing_authority", "request has no Host or :authority"}
	errAllUnavailable = proxyError{http.StatusServiceUnavailable, "failure_accrual", "every endpoint is in failure accrual penalty"}
)

// httpHandler forwards the requests of one side.
type httpHandler struct {
	p   *Proxy
	dir string
}

// route is where a request goes.
type route struct {
	ep  resolve.Endpoint
	dst string // rendered dst_* labels
	// att is the balancer's attempt when picked is set; accrual says that
	// its Service has failure accrual.
	att             balance.Attempt
	picked, accrual bool
}

// requestSeries counts a request on its metric series and returns it, with
// the labels the tap shows: the connection's direction and client, the
// authority and the route the outbound policy chose, the endpoint rt when
// routed (its address, dst_* labels and, over mTLS, its identity), and the
// inbound policy's route from dec. The three HTTP paths (net/http, the
// HTTP/1 and HTTP/2 fast paths) label alike through it.
func (p *Proxy) requestSeries(dir, authority string, info *connInfo, or *outRoute, rt *route, routed bool, dec *authz.Decision) (*metrics.Route, metrics.HTTPLabels) {
	labels := metrics.HTTPLabels{Direction: dir, Authority: authority, TLS: info.tls, ClientID: info.clientID}
	or.label(&labels)
	if routed {
		labels.TargetAddr, labels.Dst = rt.ep.Addr, rt.dst
		if p.tlsFor(rt.ep) {
			labels.TLS, labels.ServerID = true, rt.ep.Identity
		}
	}
	series := p.metrics.Route(inboundRouted(labels, dec))
	series.Request()
	return series, labels
}

// finished reports the attempt's outcome to the balancer: failed is a
// failure of the exchange itself; with failure accrual any 5xx response
// and any gRPC status but OK count too (as Linkerd's classification).
func (rt *route) finished(latency time.Duration, failed bool, status int, grpcStatus string) {
	if !rt.picked {
		return
	}
	if rt.accrual {
		failed = failed || status >= 500 || grpcStatus != "" && grpcStatus != "0"
	}
	rt.att.Done(latency, failed)
}

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := h.p
	if opts, ok := r.Header["Connection"]; ok && namesFramingField(opts) {
		// Already refused by h1Guard (HTTP/1.1) and net/http (HTTP/2,
		// which has no Connection field): checked again where it matters.
		w.Header().Set("Connection", "close")
		w.Header().Set(ErrorHeader, errBadConnection.Error())
		http.Error(w, errBadConnection.Error(), http.StatusBadRequest)
		return
	}
	if r.URL.Path == "" && r.URL.Opaque == "" {
		// An absolute-form target without a path ("http://a"): it is
		// forwarded as "/" (RFC 9112 3.2.1), and so routed and observed.
		r.URL.Path = "/"
	}
	info := infoFrom(r.Context())
	start := time.Now()
	authority := canonicalAuthority(r.Host, "80")
	var or outRoute
	var rt route
	var perr *proxyError
	if t := p.routeTable(r.Context(), h.dir, authority); t != nil {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		req := httpmatch.HTTPRequest(r)
		or, perr = p.routeRequest(t, &req, scheme, authority)
		if perr == nil && or.redirect == nil && or.modifiesRequest() {
			or.modifyRequest(routes.HTTPHeader(r.Header))
		}
		if perr == nil && or.redirect == nil && or.modifiesResponse() {
			resp := or // only this copy escapes
			r = r.WithContext(context.WithValue(r.Context(), outRouteKey{}, &resp))
		}
	}
	if perr == nil && or.redirect == nil {
		rt, perr = h.routeOrWait(r.Context(), info, authority, &or, or.timeout)
	}
	isGRPC := strings.HasPrefix(r.Header.Get("Content-Type"), "application/grpc")
	var rs *httpRetry
	if perr == nil && p.retryFor(&or, authority, r.Method, isGRPC, r.ContentLength) {
		rs = &httpRetry{h: h, info: info, authority: authority, or: &or, rt: &rt, grpc: isGRPC, h2: r.ProtoMajor == 2}
	}
	var decision authz.Decision
	if perr == nil && p.cfg.Policy != nil && h.dir == Inbound {
		decision, perr = p.authorizeRequest(info, authz.HTTPRequest(r))
	}

	series, labels := p.requestSeries(h.dir, authority, info, &or, &rt, perr == nil && or.redirect == nil, &decision)

	rw := &respWriter{ResponseWriter: w, start: start}
	if p.observing() {
		rw.obs = p.observe(r, h.dir, labels, info, rt, perr == nil && or.redirect == nil, &decision)
	}
	rw.grpc = isGRPC

	completed := false
	defer func() {
		// Runs on return and on the ErrAbortHandler panic of a broken
		// stream (re-panicked after accounting).
		var streamErr error
		if !completed {
			streamErr = errStreamAborted
			if errors.Is(context.Cause(r.Context()), errTimedOut) {
				// The route's timeout cut the response short.
				p.metrics.Error(h.dir, errRequestTimeout.reason)
			}
		}
		status, grpcStatus := rw.status, ""
		if rw.grpc {
			grpcStatus = rw.grpcStatus()
		}
		latency := rw.latency()
		series.Response(status, grpcStatus, metrics.Classify(status, grpcStatus, streamErr != nil || rw.failed), latency)
		rt.finished(latency, status == 0 || status >= 500 && rw.proxyErr != "", status, grpcStatus)
		if rw.obs != nil {
			if streamErr == nil && rw.upErr != nil {
				streamErr = rw.upErr
			}
			end := EndInfo{Status: status, GRPCStatus: grpcStatus, Latency: latency,
				Duration: time.Since(start), ResponseBytes: rw.written, Err: streamErr, ProxyError: rw.proxyErr}
			if rs != nil && rs.tries > 1 {
				end.Retries = rs.tries - 1
			}
			rw.obs.Ended(end)
		}
	}()

	if perr != nil {
		p.writeError(rw, h.dir, *perr, nil)
		completed = true
		return
	}
	if or.redirect != nil {
		hdr := rw.Header()
		hdr.Set("Location", or.location)
		hdr.Set("Content-Length", "0")
		or.modifyResponse(routes.HTTPHeader(hdr))
		rw.WriteHeader(or.redirect.Status)
		completed = true
		return
	}
	if r.Method == http.MethodConnect && r.ProtoMajor == 1 {
		p.serveConnect(rw, r, h.dir, rt)
		completed = true
		return
	}
	if or.timeout > 0 {
		ctx, cancel := context.WithTimeoutCause(r.Context(), or.timeout, errTimedOut)
		defer cancel()
		r = r.WithContext(ctx)
		if b, ok := r.Body.(*idleBody); ok {
			// The timeout ends a body read the client stalls, so that
			// the round trip returns and the 504 is answered.
			stop := context.AfterFunc(ctx, func() {
				if b.interrupt() {
					rw.bodyCut.Store(true)
				}
			})
			defer stop()
		}
	}
	up := p.ups.get(h.dir, rt.ep, rt.dst, r.ProtoMajor == 2)
	if r.Body != nil && r.Body != http.NoBody {
		if r.ProtoMajor == 2 {
			r = r.WithContext(context.WithValue(r.Context(), inboundBodyKey{}, r.Body))
		} else {
			// The application may answer while the client still uploads
			// (streaming both ways over HTTP/1.1): keep the body readable.
			http.NewResponseController(w).EnableFullDuplex()
			r.Body = &framedBody{ReadCloser: r.Body, rw: rw}
		}
	}
	if rs != nil {
		if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
			// (ReverseProxy sends no body of length 0.)
			rs.body = &replayBody{ReadCloser: r.Body, max: routes.MaxReplayBody}
			r.Body = rs.body
		}
		r = r.WithContext(context.WithValue(r.Context(), retryKey{}, rs))
	}
	up.rp.ServeHTTP(rw, r)
	completed = true
}

var errStreamAborted = errors.New("stream aborted")

// errTimedOut is the cause of a request context its route's timeout ended.
var errTimedOut = errors.New("request timeout")

// namesFramingField reports whether Connection options name a field that
// frames or routes the message (see framingFields).
func namesFramingField(opts []string) bool {
	for _, v := range opts {
		for tok := range strings.SplitSeq(v, ",") {
			tok = strings.Trim(tok, " \t")
			for _, f := range framingFields {
				if asciiEqualFold(tok, f) {
					return true
				}
			}
		}
	}
	return false
}

// framedBody notes that an HTTP/1.1 request body broke its framing (as
// h1Guard found): the answer is then 400, not an upstream error.
type framedBody struct {
	io.ReadCloser
	rw *respWriter
}

func (b *framedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil && errors.Is(err, errFraming) {
		b.rw.badBody.Store(true)
	}
	return n, err
}

var errBadBody = proxyError{http.StatusBadRequest, "malformed_request", "malformed request body"}

// route picks the endpoint of a request: outbound, of the authority the
// route table sent it to (or, nil or without a rule, its own).
func (h *httpHandler) route(ctx context.Context, info *connInfo, authority string, or *outRoute) (route, *proxyError) {
	return h.routeWith(ctx, info, authority, or, false)
}

// routeNow is route without waiting for discovery's first answer about
// the authority (resolve.NowResolver): errPending while it is awaited.
func (h *httpHandler) routeNow(info *connInfo, authority string, or *outRoute) (route, *proxyError) {
	return h.routeWith(context.Background(), info, authority, or, true)
}

func (h *httpHandler) routeWith(ctx context.Context, info *connInfo, authority string, or *outRoute, now bool) (route, *proxyError) {
	p := h.p
	if h.dir == Inbound {
		if info.target == "" {
			return route{}, &errNoTarget
		}
		return route{ep: resolve.Endpoint{Addr: info.target}}, nil
	}
	if authority == "" {
		return route{}, &errMissingHost
	}
	origDst := info.origDst
	if or != nil && or.target(authority) != authority {
		// A backend of a traffic split: the original destination is the
		// request's Service, not the backend's.
		authority, origDst = or.target(authority), netip.AddrPort{}
	}
	eps, err := p.resolve(ctx, authority, now)
	switch {
	case now && errors.Is(err, resolve.ErrPending):
		return route{}, &errPending
	case errors.Is(err, resolve.ErrNotFound):
		if origDst.IsValid() {
			return route{ep: resolve.Endpoint{Addr: origDst.String()}}, nil
		}
		return route{}, &errUnknownAuthority
	case err != nil && origDst.IsValid():
		// Discovery is down and knows nothing cached: the original
		// destination still works, unbalanced and in plaintext.
		p.log.Warn("resolving outbound authority failed, using the original destination", "authority", authority, "err", err)
		return route{ep: resolve.Endpoint{Addr: origDst.String()}}, nil
	case err != nil:
		p.log.Warn("resolving outbound authority", "authority", authority, "err", err)
		return route{}, &errResolve
	case len(eps) == 0:
		return route{}, &errNoEndpoints
	}
	var acc *balance.Accrual
	if or != nil && or.target(authority) == authority {
		acc = or.acc // the Service's own endpoints
	}
	ep, att, err := p.bal.PickWith(eps, acc)
	if err != nil {
		return route{}, &errAllUnavailable
	}
	return route{ep: ep, dst: metrics.DstLabels(ep.Labels), att: att, picked: true, accrual: acc != nil}, nil
}

// routeOrWait is route for a request's first attempt, which may wait: a
// backend that discovery knows without a ready endpoint (a Deployment
// rolling out behind a new Service, or a traffic split's new backend) is
// waited for up to the fail-fast timeout before the request is answered
// 503 no endpoints available — or up to limit, the route's request
// timeout, when shorter, and then answered 504 request timeout. Retries
// do not wait: their attempt already had an endpoint.
func (h *httpHandler) routeOrWait(ctx context.Context, info *connInfo, authority string, or *outRoute, limit time.Duration) (route, *proxyError) {
	rt, perr := h.route(ctx, info, authority, or)
	if perr != &errNoEndpoints {
		return rt, perr
	}
	if perr = h.p.awaitEndpoints(ctx, or.target(authority), limit); perr != nil {
		return rt, perr
	}
	return h.route(ctx, info, authority, or)
}

// writeError answers with a proxy-made error and counts it.
func (p *Proxy) writeError(rw *respWriter, dir string, e proxyError, cause error) {
	p.metrics.Error(dir, e.reason)
	msg := e.msg
	if cause != nil {
		msg += ": " + cause.Error()
	}
	rw.proxyErr = e.reason
	h := rw.Header()
	for k := range h {
		delete(h, k)
	}
	h.Set(ErrorHeader, sanitizeHeaderValue(msg))
	if rw.grpc {
		// gRPC clients read errors from grpc-status, not the HTTP status:
		// answer with a trailers-only gRPC error.
		h.Set("Content-Type", "application/grpc")
		h.Set("Grpc-Status", grpcCodeFor(e.status))
		h.Set("Grpc-Message", sanitizeHeaderValue(msg))
		rw.WriteHeader(http.StatusOK)
		return
	}
	h.Set("Content-Type", "text/plain; charset=utf-8")
	h.Set("Content-Length", strconv.Itoa(len(msg)+1))
	if e.status == http.StatusBadRequest || rw.bodyCut.Load() {
		// As the fast path does; a body left unread cannot be skipped.
		h.Set("Connection", "close")
	}
	rw.WriteHeader(e.status)
	io.WriteString(rw, msg+"\n")
}

// grpcCodeFor maps a proxy error status to a gRPC status code:
// DEADLINE_EXCEEDED for timeouts, PERMISSION_DENIED for a request the
// policy refused, UNIMPLEMENTED for one no route of the port matches,
// INTERNAL for the proxy's own failures (a route's invalid backend),
// UNAVAILABLE otherwise.
func grpcCodeFor(status int) string {
	switch status {
	case http.StatusGatewayTimeout:
		return "4"
	case http.StatusInternalServerError:
		return "13"
	case http.StatusForbidden:
		return "7"
	case http.StatusNotFound:
		return "12"
	}
	return "14"
}

// grpcDeadlinePassed reports whether a gRPC request's grpc-timeout has
// elapsed since start.
func grpcDeadlinePassed(r *http.Request, start time.Time) bool {
	v := r.Header.Get("Grpc-Timeout")
	if len(v) < 2 {
		return false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 {
		return false
	}
	unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
		'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[v[len(v)-1]]
	if unit == 0 {
		return false
	}
	return time.Since(start) >= time.Duration(n)*unit
}

// upstreamError is the ReverseProxy error handler: the upstream could not
// be reached or failed before sending a response.
func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, dir string, err error) {
	rw, ok := w.(*respWriter)
	if !ok {
		http.Error(w, "proxy error", http.StatusBadGateway)
		return
	}
	rw.upErr = err
	if rw.badBody.Load() {
		// net/http cancelled the request when its body failed to read,
		// but the client is there and has the connection closed on it.
		p.writeError(rw, dir, errBadBody, nil)
		return
	}
	if errors.Is(context.Cause(r.Context()), errTimedOut) || errors.Is(err, errTimedOut) {
		// The route's request timeout, or an attempt's that was not
		// retried.
		p.writeError(rw, dir, errRequestTimeout, nil)
		return
	}
	if r.Context().Err() != nil {
		// The client went away: nobody to answer.
		rw.failed = true
		p.metrics.Error(dir, "client_canceled")
		return
	}
	var e proxyError
	reason := dialErrorReason(err)
	switch {
	case reason == "connect_refused":
		e = proxyError{http.StatusBadGateway, reason, "connection refused"}
	case reason == "connect_timeout" && isDialError(err):
		e = proxyError{http.StatusGatewayTimeout, reason, "connect timeout"}
	case reason == "tls_handshake":
		e = proxyError{http.StatusBadGateway, reason, "mTLS handshake with the peer proxy failed"}
	case errors.Is(err, context.DeadlineExceeded), rw.grpc && grpcDeadlinePassed(r, rw.start):
		e = proxyError{http.StatusGatewayTimeout, "response_timeout", "response timeout"}
	case isDialError(err):
		e = proxyError{http.StatusBadGateway, "connect_error", "connect failed"}
	default:
		e = proxyError{http.StatusBadGateway, "upstream_error", "upstream failed"}
	}
	p.log.Debug("upstream error", "direction", dir, "host", r.Host, "err", err)
	p.writeError(rw, dir, e, nil)
}

func isDialError(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial"
}

func sanitizeHeaderValue(s string) string {
	return strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
}

// serveConnect passes a CONNECT tunnel through to the endpoint: the request
// and the endpoint's answer are forwarded as they are, then bytes flow both
// ways.
func (p *Proxy) serveConnect(rw *respWriter, r *http.Request, dir string, rt route) {
	ctx, cancel := context.WithTimeout(r.Context(), p.cfg.ConnectTimeout)
	up, err := p.ups.dial(ctx, dir, rt.ep)
	cancel()
	if err != nil {
		p.upstreamError(rw, r, dir, &net.OpError{Op: "dial", Net: "tcp", Err: err})
		return
	}
	defer up.Close()
	client, brw, err := http.NewResponseController(rw.ResponseWriter).Hijack()
	if err != nil {
		p.writeError(rw, dir, proxyError{http.StatusInternalServerError, "hijack", "cannot take over the connection"}, err)
		return
	}
	defer client.Close()
	r.Header.Del("Proxy-Connection")
	if err := r.Write(up); err != nil {
		rw.failed = true
		return
	}
	ubr := bufio.NewReaderSize(up, 1024)
	line, err := ubr.ReadSlice('\n')
	if err != nil {
		rw.failed = true
		return
	}
	rw.status = parseStatusLine(line)
	rw.firstByte = time.Now()
	if rw.obs != nil {
		rw.obs.ResponseStarted(&Response{Status: rw.status, Header: http.Header{}})
	}
	if _, err := client.Write(line); err != nil {
		rw.failed = true
		return
	}
	// Bytes already buffered on either side go first.
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		if _, err := up.Write(b); err != nil {
			return
		}
	}
	if n := ubr.Buffered(); n > 0 {
		b, _ := ubr.Peek(n)
		if _, err := client.Write(b); err != nil {
			return
		}
	}
	relay(client, up, p.bufs)
}

func parseStatusLine(line []byte) int {
	// "HTTP/1.1 200 Connection established\r\n"
	f := strings.Fields(string(line))
	if len(f) < 2 || !strings.HasPrefix(f[0], "HTTP/") {
		return 0
	}
	n, err := strconv.Atoi(f[1])
	if err != nil || n < 100 || n > 999 {
		return 0
	}
	return n
}

// observe describes r, as net/http parsed it, to the Observer.
func (p *Proxy) observe(r *http.Request, dir string, labels metrics.HTTPLabels, info *connInfo, rt route, routed bool, d *authz.Decision) Observation {
	req := Request{Direction: dir, Method: r.Method, Scheme: "http", Authority: labels.Authority,
		Path: r.URL.Path, Query: r.URL.RawQuery, ContentLength: r.ContentLength, Header: r.Header, Source: info.remote, TLS: labels.TLS,
		ClientID: info.clientID, ServerID: labels.ServerID, Authz: *d, RouteKind: labels.RouteKind, RouteName: labels.RouteName}
	if r.TLS != nil {
		req.Scheme = "https"
	}
	if routed {
		req.Destination, _ = netip.ParseAddrPort(rt.ep.Addr)
		req.DstLabels = rt.ep.Labels
	}
	return p.cfg.Observer.RequestStarted(&req)
}

// respWriter records what the handler sent for metrics and the observer.
type respWriter struct {
	http.ResponseWriter
	start     time.Time
	firstByte time.Time
	status    int
	grpc      bool
	failed    bool
	proxyErr  string
	upErr     error
	obs       Observation
	written   int64 // response body bytes written
	// badBody is set when the request body broke its framing (read by
	// the Transport's goroutine); bodyCut when the route's timeout cut
	// its reads short (idleBody.interrupt).
	badBody, bodyCut atomic.Bool
}

func (w *respWriter) WriteHeader(code int) {
	if code >= 100 && code < 200 && code != http.StatusSwitchingProtocols {
		w.ResponseWriter.WriteHeader(code) // 1xx: not the final status
		return
	}
	if w.status == 0 {
		w.status = code
		w.firstByte = time.Now()
		if w.obs != nil {
			w.obs.ResponseStarted(&Response{Status: code, Header: w.Header()})
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *respWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	n, err := w.ResponseWriter.Write(b)
	w.written += int64(n)
	return n, err
}

// Hijack is used by ReverseProxy for upgrades (101 Switching Protocols).
func (w *respWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil && w.status == 0 {
		w.status = http.StatusSwitchingProtocols
		w.firstByte = time.Now()
		if w.obs != nil {
			w.obs.ResponseStarted(&Response{Status: w.status, Header: w.Header()})
		}
	}
	return c, brw, err
}

func (w *respWriter) Flush() {
	if w.status == 0 {
		w.WriteHeader(http.StatusOK)
	}
	http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap lets http.ResponseController reach the server's writer.
func (w *respWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (w *respWriter) latency() time.Duration {
	if w.firstByte.IsZero() {
		return time.Since(w.start)
	}
	return w.firstByte.Sub(w.start)
}

// grpcStatus finds grpc-status in the trailers (or headers, for a
// trailers-only response) the handler set.
func (w *respWriter) grpcStatus() string {
	h := w.Header()
	if v := h.Get("Grpc-Status"); v != "" {
		return v
	}
	return h.Get(http.TrailerPrefix + "Grpc-Status")
}
