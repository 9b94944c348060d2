package proxy

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
)

// h2Down is a client's HTTP/2 connection on the fast path. Its reader
// (serve) decodes the client's frames, routes each new stream, opens it on
// a pooled upstream connection (h2up.go) and relays the request's frames;
// the upstream connection's reader relays the response's.
type h2Down struct {
	s    *side
	sc   *servedConn
	info *connInfo
	br   *bufio.Reader
	fr   *http2.Framer
	hr   *h2HeaderReader
	out  *h2Out
	fl   h2Flusher

	mu      sync.Mutex // guards the fields below
	streams map[uint32]*h2Stream
	// lastID is the highest stream the client opened; goAwayID, once the
	// proxy has sent GOAWAY, the last one it will serve.
	lastID uint32
	// skipped are the last few ranges of client stream IDs that a new
	// stream jumped over (first, last): never opened. HEADERS on one is
	// a connection error (RFC 9113 5.1.1); on a stream that was opened
	// and has closed, it is trailers in flight, dropped. Written by the
	// reader under mu; read by the reader.
	skipped  [4][2]uint32
	nskipped int
	draining bool
	idleAt   time.Time // when the last stream ended (zero while streams run)

	// Reused by the reader for authorization and observation.
	fields []Field
	obsReq Request
	creds  []streamCredit
	// recvUnacked is the connection-level credit not yet returned.
	recvUnacked uint32 // under out.mu
}

// h2Stream is one request relayed from a client connection to an upstream
// one. Request-direction fields are guarded by up.out.mu, response ones by
// down.out.mu.
type h2Stream struct {
	down *h2Down
	id   uint32
	// upP is the upstream connection of the stream's current attempt (nil
	// while a retry picks its endpoint); upID its stream there, and
	// curUpID too, read by the upstream readers to tell a retried
	// attempt's late frames (set by open, cleared under down.out.mu).
	upP     atomic.Pointer[h2Up]
	upID    uint32
	curUpID atomic.Uint32
	// upMu orders a retry's change of attempt with the cancellations and
	// the accounting of a stream its route may retry (rty set).
	upMu sync.Mutex
	rty  *h2Retry
	// lateRoute, set by the client's reader before the stream is routed
	// on a goroutine of its own (awaitRoute's awaitTable), says rty is
	// set there: the reader then reads it under upMu only.
	lateRoute bool
	// pend, under upMu, holds the request while the stream's first
	// connection is dialed (openPending); nil once it is opened.
	pend *h2Pending

	// Request direction (client → upstream), under up.out.mu. (The small
	// fields of each direction sit together: with them apart, padding put
	// a stream in the allocator's next size class.)
	upWin       int32 // the upstream's stream window
	reqEnd      bool  // END_STREAM to send once reqBuf is out
	reqDone     bool  // END_STREAM (or RST_STREAM) sent upstream
	reqBlocked  bool  // in up.blocked
	replayed    bool  // a retry: the client was credited for the body
	reqBuf      []byte
	reqTrailers []hpack.HeaderField

	// Response direction (upstream → client), under down.out.mu.
	downWin      int32 // the client's stream window
	respEnd      bool
	respDone     bool // END_STREAM or RST_STREAM sent to the client
	respBlocked  bool // in down's blocked list
	respStarted  bool // final response headers sent
	respBuf      []byte
	respTrailers []hpack.HeaderField
	// respLeft is what the response's content-length says is still to
	// come in DATA (-1: unchecked); head says the request was HEAD (its
	// response's content-length has no body), set before it is opened.
	respLeft int64
	head     bool

	// Request accounting, set by the client's reader before the stream is
	// opened upstream; the rest under ended.
	start  time.Time
	series *metrics.Route
	rt     route
	// waiting are the labels of a stream held for an endpoint
	// (awaitRoute): finish counts under them a stream that ends before
	// its series is made.
	waiting *metrics.HTTPLabels
	// respRoute is the route of a request whose rule or backend modifies
	// the response's header (nil otherwise).
	respRoute *outRoute
	// timeout is the timer of the route's request timeout, stopped by
	// finish.
	timeout  atomic.Pointer[time.Timer]
	obs      Observation
	grpc     bool
	recvOwed uint32 // stream-level credit owed to the client (under down.out.mu)
	// recvWin and upRecvWin are the stream's receive windows the proxy
	// advertised, less what was received: the client's (request data) and
	// the current attempt's upstream (response data); see h2Out.take.
	recvWin, upRecvWin atomic.Int64
	remoteEnd          bool // the client ended its request (the client's reader only)
	// reqLeft is what the request's content-length says is still to come
	// in DATA (-1: no content-length); the client's reader only.
	reqLeft  int64
	admitted bool // holds a slot of the side's request limit
	// upOwed is the stream-level credit owed to the upstream.
	upOwed atomic.Uint32
	// bits says which of the stream's four halves are over (sReqIn...).
	bits atomic.Uint32

	ended      atomic.Bool
	status     int
	grpcStatus string
	firstByte  time.Time
	written    int64
	proxyErr   string
	upErr      error
}

// The four halves of a relayed stream: the request from the client and to
// the upstream, the response from the upstream and to the client. A stream
// is forgotten by the client's connection once sReqIn and sRespOut are
// over, by the upstream's once sReqOut and sRespIn are.
const (
	sReqIn uint32 = 1 << iota
	sRespOut
	sReqOut
	sRespIn
)

// mark records halves as over and forgets the stream where both of a
// connection's are.
func (st *h2Stream) mark(bits uint32) {
	for {
		old := st.bits.Load()
		nw := old | bits
		if old == nw {
			return
		}
		if !st.bits.CompareAndSwap(old, nw) {
			continue
		}
		const down, up = sReqIn | sRespOut, sReqOut | sRespIn
		if old&down != down && nw&down == down {
			st.down.remove(st)
		}
		if old&up != up && nw&up == up {
			if u := st.upstream(); u != nil {
				u.remove(st)
			}
		}
		return
	}
}

// h2Pending is a request whose stream waits for its upstream connection:
// its header block, and the data and trailers the client sent meanwhile
// (bounded by the stream's window: it is credited once passed on).
type h2Pending struct {
	fields    []hpack.HeaderField
	body      []byte
	end       bool
	trailers  []hpack.HeaderField
	cancelled bool // by cancelUp: the stream is not to be opened
	// stop, when set, ends the wait for an endpoint (awaitRoute), with
	// its cause (nil: cancelled).
	stop context.CancelCauseFunc
}

// upstream is the connection of the stream's current attempt, or nil.
func (st *h2Stream) upstream() *h2Up { return st.upP.Load() }

// cancelUp resets the stream's current attempt upstream, if any, or stops
// it from being opened if its connection is being dialed or an endpoint
// awaited (cause says why: nil for cancelled, errTimedOut).
func (st *h2Stream) cancelUp(code http2.ErrCode, cause error, fl *h2Flusher) {
	st.upMu.Lock()
	defer st.upMu.Unlock()
	if st.pend != nil {
		st.pend.cancelled = true
		if st.pend.stop != nil {
			st.pend.stop(cause)
		}
	}
	if up := st.upstream(); up != nil {
		up.cancel(st, code, fl)
	}
}

// sendData passes request data on to the stream's upstream, holds it while
// the stream's connection is dialed, or (between a retry's attempts, which
// keep the body themselves) credits it back at once.
func (st *h2Stream) sendData(data []byte, end bool, fl *h2Flusher) {
	up := st.upstream()
	if up == nil || st.lateRoute {
		st.upMu.Lock()
		if st.lateRoute && st.rty != nil {
			// Under the lock that made rty from what pend held.
			st.rty.keep(data)
		}
		if pend := st.pend; pend != nil {
			pend.body = append(pend.body, data...)
			pend.end = pend.end || end
			st.upMu.Unlock()
			return
		}
		up = st.upstream() // opened meanwhile
		st.upMu.Unlock()
	}
	if up == nil {
		st.down.credit(st, uint32(len(data)), fl)
		return
	}
	up.requestData(st, data, end, fl)
}

// sendTrailers is sendData for the request's trailers.
func (st *h2Stream) sendTrailers(fields []hpack.HeaderField, fl *h2Flusher) {
	up := st.upstream()
	if up == nil || st.lateRoute {
		st.upMu.Lock()
		if st.lateRoute && st.rty != nil {
			st.rty.trailers = slices.Clone(fields)
		}
		if pend := st.pend; pend != nil {
			pend.trailers, pend.end = slices.Clone(fields), true
			st.upMu.Unlock()
			return
		}
		up = st.upstream()
		st.upMu.Unlock()
	}
	if up != nil {
		up.requestTrailers(st, fields, fl)
	}
}

// openPending opens st, for which no upstream connection had room, on one
// dialed (or being dialed) for key. It runs on its own goroutine: a slow
// connect or TLS handshake holds up this stream only, not the others of
// its client connection, whose reader holds what the client sends for it
// meanwhile (st.pend).
func (st *h2Stream) openPending(key upKey) {
	d := st.down
	var fl h2Flusher
	defer fl.flush()
	for attempt := 0; ; attempt++ {
		up, err := d.s.p.h2Ups.get(key, st.rt.ep)
		st.upMu.Lock()
		pend := st.pend
		if !pend.cancelled && err == nil && up.openHeld(st, pend.fields, pend.body, pend.end, pend.trailers, false, &fl) {
			st.pend = nil
			if st.rty != nil {
				st.startTryTimer()
			}
			st.upMu.Unlock()
			return
		}
		if !pend.cancelled && err == nil && attempt == 0 {
			st.upMu.Unlock()
			continue // the connection went away as the stream was opened
		}
		st.pend = nil
		st.upMu.Unlock()
		// What the client sent for the stream is dropped: its connection
		// gets the window back.
		d.credit(nil, uint32(len(pend.body)), &fl)
		switch {
		case pend.cancelled:
			// Whoever cancelled ends the stream.
		case err != nil:
			st.failToClient(dialProxyError(err), http2.ErrCodeCancel, err, &fl)
		default:
			st.failToClient(proxyError{http.StatusServiceUnavailable, "upstream_error", "upstream connection closing"}, http2.ErrCodeCancel, nil, &fl)
		}
		return
	}
}

// serveH2 runs the HTTP/2 fast path on sc, whose first bytes are the
// client's connection preface.
func (s *side) serveH2(sc *servedConn) {
	p := s.p
	d := &h2Down{s: s, sc: sc, info: sc.info, streams: map[uint32]*h2Stream{}}
	sc.info.conn = sc
	d.br = fastReaders.Get().(*bufio.Reader)
	d.br.Reset(sc)
	d.fr = http2.NewFramer(nil, d.br)
	d.fr.SetReuseFrames() // a DATA frame is relayed or copied before the next read
	d.hr = newH2HeaderReader(uint32(p.cfg.MaxHeaderBytes))
	d.fr.SetMaxReadFrameSize(h2MaxFrame)
	d.out = newH2Out(sc, p.cfg.BodyIdleTimeout)
	p.mu.Lock()
	p.h2Downs[d] = struct{}{}
	p.mu.Unlock()
	defer func() {
		p.mu.Lock()
		delete(p.h2Downs, d)
		p.mu.Unlock()
		d.close()
		d.out.release()
		d.br.Reset(nil)
		fastReaders.Put(d.br)
	}()

	sc.SetReadDeadline(time.Now().Add(p.cfg.HeaderReadTimeout))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(d.br, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		return
	}
	d.out.mu.Lock()
	d.out.check(d.out.fr.WriteSettings(
		http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(p.cfg.MaxHeaderBytes)},
	))
	d.out.windowLocked(0, h2ConnWindow-65535)
	d.out.flushLocked()
	d.out.mu.Unlock()
	// The client's preface ends with its SETTINGS.
	f, err := d.fr.ReadFrame()
	if err != nil {
		return
	}
	if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
		d.goAway(http2.ErrCodeProtocol)
		return
	} else if !d.settings(sf) {
		return
	}
	sc.SetReadDeadline(time.Time{})
	d.idleAt = time.Now()
	if p.draining.Load() {
		d.drain()
	}
	stopIdle := d.watchIdle()
	defer stopIdle()
	for {
		f, h, err := readH2Frame(d.br, d.fr, d.hr, &d.fl, true)
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				// A malformed header block: the stream is refused, the
				// connection (its HPACK state intact) goes on.
				p.metrics.Error(s.dir, "h2_stream_error")
				d.mu.Lock()
				if se.StreamID > d.lastID && se.StreamID%2 == 1 {
					d.openedLocked(se.StreamID) // opened, and closed at once
				}
				d.mu.Unlock()
				d.reset(se.StreamID, se.Code)
				continue
			}
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				p.metrics.Error(s.dir, "h2_conn_error")
				d.goAway(http2.ErrCode(ce))
			}
			return
		}
		if h != nil {
			if !d.safeHeaders(h) {
				return
			}
		} else if !d.frame(f) {
			return
		}
	}
}

// watchIdle closes the connection once it has had no stream for the idle
// timeout.
func (d *h2Down) watchIdle() (stop func()) {
	idle := d.s.p.cfg.IdleTimeout
	var t *time.Timer
	t = time.AfterFunc(idle, func() {
		d.mu.Lock()
		at := d.idleAt
		d.mu.Unlock()
		if !at.IsZero() && time.Since(at) >= idle {
			d.goAway(http2.ErrCodeNo)
			d.sc.Close()
			return
		}
		t.Reset(idle)
	})
	return func() { t.Stop() }
}

// frame handles one frame from the client; false ends the connection.
func (d *h2Down) frame(f http2.Frame) bool {
	switch f := f.(type) {
	case *http2.DataFrame:
		return d.data(f)
	case *http2.WindowUpdateFrame:
		return d.windowUpdate(f)
	case *http2.RSTStreamFrame:
		d.clientReset(f.StreamID, f.ErrCode)
	case *http2.SettingsFrame:
		if !f.IsAck() {
			return d.settings(f)
		}
	case *http2.PingFrame:
		if !f.IsAck() {
			d.out.pingAck(f.Data, &d.fl)
		}
	case *http2.GoAwayFrame:
		d.mu.Lock()
		d.draining = true
		n := len(d.streams)
		d.mu.Unlock()
		if n == 0 {
			return false
		}
	case *http2.PushPromiseFrame:
		d.goAway(http2.ErrCodeProtocol)
		return false
	case *http2.PriorityFrame:
	default:
		// Unknown frame types are ignored (RFC 9113 §4.1).
	}
	return true
}

// settings applies the client's SETTINGS; false on a bad one.
func (d *h2Down) settings(f *http2.SettingsFrame) bool {
	d.out.mu.Lock()
	delta, err := d.out.settingsLocked(f)
	if err == nil && delta != 0 {
		d.mu.Lock()
		for _, st := range d.streams {
			st.downWin += delta
		}
		d.mu.Unlock()
		d.drainRespLocked()
	}
	d.out.mu.Unlock()
	d.fl.mark(d.out)
	d.payCredits()
	if err != nil {
		d.goAway(http2.ErrCodeProtocol)
		return false
	}
	return true
}

// goAway tells the client no more streams will be served, with code.
func (d *h2Down) goAway(code http2.ErrCode) {
	d.mu.Lock()
	d.draining = true
	last := d.lastID
	d.mu.Unlock()
	d.out.mu.Lock()
	if d.out.ok() {
		d.out.check(d.out.fr.WriteGoAway(last, code, nil))
		d.out.flushLocked()
	}
	d.out.mu.Unlock()
}

// drain is called when the proxy shuts down: GOAWAY, and the connection
// closes when its streams are done.
func (d *h2Down) drain() {
	d.goAway(http2.ErrCodeNo)
	d.mu.Lock()
	n := len(d.streams)
	d.mu.Unlock()
	if n == 0 {
		d.sc.Close()
	}
}

// refuse resets a stream the proxy registered but will not serve.
func (d *h2Down) refuse(st *h2Stream, code http2.ErrCode) {
	d.reset(st.id, code)
	st.mark(sReqIn | sRespOut | sReqOut | sRespIn)
}

// resetBoth resets a stream the client made malformed: toward it, and
// upstream (clientReset).
func (d *h2Down) resetBoth(id uint32, code http2.ErrCode) {
	d.reset(id, code)
	d.clientReset(id, code)
}

// reset refuses a stream the proxy will not serve.
func (d *h2Down) reset(id uint32, code http2.ErrCode) {
	d.out.mu.Lock()
	d.out.rstLocked(id, code)
	d.out.mu.Unlock()
	d.fl.mark(d.out)
}

// stringBytes views s as bytes, read-only (authorization and observers
// only read fields during the call).
func stringBytes(s string) []byte { return unsafe.Slice(unsafe.StringData(s), len(s)) }

// connectionSpecific are the fields HTTP/2 forbids (RFC 9113 §8.2.2).
func connectionSpecific(f hpack.HeaderField) bool {
	switch f.Name {
	case "connection", "proxy-connection", "keep-alive", "transfer-encoding", "upgrade":
		return true
	case "te":
		return f.Value != "trailers"
	}
	return false
}

// safeHeaders is headers with a panic confined to its stream, which is
// reset.
func (d *h2Down) safeHeaders(f *h2Headers) (ok bool) {
	defer func() {
		if v := recover(); v != nil {
			d.s.p.recovered(d.s.dir, v)
			d.mu.Lock()
			st := d.streams[f.StreamID]
			d.mu.Unlock()
			d.reset(f.StreamID, http2.ErrCodeInternal)
			if st != nil {
				st.abort()
			}
			ok = true
		}
	}()
	return d.headers(f)
}

// abort ends a stream the proxy reset on both sides.
func (st *h2Stream) abort() {
	d := st.down
	d.out.mu.Lock()
	st.respDone = true
	d.out.mu.Unlock()
	var fl h2Flusher
	st.cancelUp(http2.ErrCodeCancel, nil, &fl)
	fl.flush()
	st.obs = nil // it may be what panicked
	st.finish(true, errStreamAborted)
	st.mark(sReqIn | sRespOut | sReqOut | sRespIn)
}

// openedLocked notes that the client opened stream id, above lastID, and
// the IDs it skipped. Called by the reader, under mu.
func (d *h2Down) openedLocked(id uint32) {
	next := d.lastID + 2
	if d.lastID == 0 {
		next = 1
	}
	if id > next {
		d.skipped[d.nskipped%len(d.skipped)] = [2]uint32{next, id - 2}
		d.nskipped++
	}
	d.lastID = id
}

// neverOpened reports whether id, at most lastID, is one the client
// skipped (as far as skipped remembers). Called by the reader.
func (d *h2Down) neverOpened(id uint32) bool {
	for _, r := range d.skipped[:min(d.nskipped, len(d.skipped))] {
		if id >= r[0] && id <= r[1] {
			return true
		}
	}
	return false
}

// headers handles a HEADERS block: a new request, or a request's trailers.
func (d *h2Down) headers(f *h2Headers) bool {
	id := f.StreamID
	d.mu.Lock()
	st := d.streams[id]
	d.mu.Unlock()
	if st != nil {
		return d.trailers(st, f)
	}
	if id%2 == 0 {
		d.goAway(http2.ErrCodeProtocol)
		return false
	}
	if id <= d.lastID {
		if d.neverOpened(id) {
			// A new stream below one already opened: the client has
			// lost count, and would wait for an answer that cannot come.
			d.goAway(http2.ErrCodeProtocol)
			return false
		}
		// Trailers of a stream the proxy answered or reset while they
		// were on their way: dropped (the block was decoded, so HPACK
		// stays in step).
		return true
	}
	st = &h2Stream{down: d, id: id, respLeft: -1}
	st.recvWin.Store(h2StreamWindow)
	// The stream is known from the moment it counts as opened, so that a
	// drain that sends GOAWAY now waits for it.
	d.mu.Lock()
	d.openedLocked(id)
	draining, n := d.draining, len(d.streams)
	if !draining && n < h2MaxStreams {
		d.streams[id] = st
		d.idleAt = time.Time{}
	}
	d.mu.Unlock()
	if draining {
		d.reset(id, http2.ErrCodeRefusedStream)
		return true
	}
	if n >= h2MaxStreams {
		d.s.p.metrics.Error(d.s.dir, "h2_refused_stream")
		d.reset(id, http2.ErrCodeRefusedStream)
		return true
	}
	var method, path, authority, host, scheme, ctype string
	fieldCount := 0
	st.reqLeft = -1
	for _, hf := range f.Fields {
		switch hf.Name {
		case "content-length":
			// RFC 9113 §8.1.1: the DATA must add up to it, or the
			// request is malformed (what an HTTP/1.1 upstream would
			// make of the difference is request smuggling).
			var ok bool
			if st.reqLeft, ok = addLength(st.reqLeft, hf.Value); !ok || f.StreamEnded() && st.reqLeft > 0 {
				d.refuse(st, http2.ErrCodeProtocol)
				return true
			}
		case ":method":
			method = hf.Value
		case ":path":
			path = hf.Value
		case ":authority":
			authority = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":protocol", ":status":
			d.refuse(st, http2.ErrCodeProtocol)
			return true
		case "host":
			host = hf.Value
		case "content-type":
			ctype = hf.Value
		}
		if connectionSpecific(hf) {
			d.refuse(st, http2.ErrCodeProtocol)
			return true
		}
		if !hf.IsPseudo() {
			fieldCount++
		}
	}
	if method == "" || (path == "" || scheme == "") && method != http.MethodConnect {
		d.refuse(st, http2.ErrCodeProtocol)
		return true
	}
	if authority == "" {
		authority = host
	}
	d.info.streams.Add(1)
	st.start, st.grpc, st.head = time.Now(), strings.HasPrefix(ctype, "application/grpc"), method == http.MethodHead
	st.remoteEnd = f.StreamEnded()
	d.out.mu.Lock()
	st.downWin = d.out.initWin
	d.out.mu.Unlock()
	if st.remoteEnd {
		st.mark(sReqIn)
	}

	p, dir := d.s.p, d.s.dir
	if !d.s.requests.acquire() {
		d.s.shed(errOverloaded.reason)
		st.series = p.metrics.Route(metrics.HTTPLabels{Direction: dir, Authority: canonicalAuthority(authority, "80"), TLS: d.info.tls, ClientID: d.info.clientID})
		st.series.Request()
		d.answer(st, errOverloaded, false)
		return true
	}
	st.admitted = true
	authority = canonicalAuthority(authority, "80")
	h := d.s.h
	var perr *proxyError
	switch {
	case f.Truncated:
		perr = &proxyError{http.StatusRequestHeaderFieldsTooLarge, "too_many_headers", "request header too large"}
	case fieldCount > maxHeaderFields:
		perr = &proxyError{http.StatusRequestHeaderFieldsTooLarge, "too_many_headers", errTooManyHeaders.Error()}
	case method == http.MethodConnect:
		perr = &proxyError{http.StatusMethodNotAllowed, "connect_unsupported", "CONNECT over HTTP/2 is not supported"}
	}
	var or outRoute
	req := h2Req{method: method, scheme: scheme, path: path, authority: authority}
	if perr == nil {
		t, ok := p.routeTableNow(dir, authority)
		if !ok {
			// The first request for an authority whose routes have not
			// come yet: routed on a goroutine of its own (up to
			// FirstTableWait when the controller is slow), so that the
			// connection's reader goes on with its other streams.
			d.awaitRoute(st, h, &or, req, f, awaitTable)
			return true
		}
		if t != nil {
			mr := httpmatch.FieldsRequest(stringBytes(method), stringBytes(path), d.fieldsOf(f.Fields))
			or, perr = p.routeRequest(t, &mr, scheme, authority)
		}
	}
	if perr == nil && or.redirect == nil {
		f.Fields = d.applyRoute(st, h, &or, f.Fields, authority, method, contentLength(f))
		st.rt, perr = h.routeNow(d.info, authority, &or)
		if perr == &errPending {
			// The first request for an authority whose discovery has
			// not answered yet: resolved on a goroutine of its own (up
			// to InitialWait when the controller is slow), as above.
			d.awaitRoute(st, h, &or, req, f, awaitResolve)
			return true
		}
		if perr == &errNoEndpoints && p.awaits() {
			d.awaitRoute(st, h, &or, req, f, awaitEndpoint)
			return true
		}
	}
	var decision authz.Decision
	if perr == nil && p.cfg.Policy != nil && dir == Inbound {
		decision, perr = p.authorizeRequest(d.info, authz.FieldsRequest(stringBytes(method), stringBytes(path), d.fieldsOf(f.Fields)))
	}
	req.fields, req.contentLength = f.Fields, contentLength(f)
	st.series, st.obs = d.account(st, &req, &or, perr, &decision, &d.obsReq, &d.fields)
	if perr != nil {
		d.answer(st, *perr, true)
		return true
	}
	if or.redirect != nil {
		d.redirect(st, &or)
		return true
	}
	key := p.keyFor(dir, st.rt.ep, st.rt.dst, true)
	if up := p.h2Ups.pooled(key); up != nil {
		if st.rty != nil {
			st.upMu.Lock()
		}
		opened := up.open(st, f.Fields, st.remoteEnd, &d.fl)
		if opened && st.rty != nil {
			st.startTryTimer()
		}
		if st.rty != nil {
			st.upMu.Unlock()
		}
		if opened {
			if or.timeout > 0 {
				st.startTimeout(or.timeout)
			}
			return true
		}
	}
	// No connection with room (or the one found went away): the stream
	// is opened once one is dialed, on another goroutine.
	st.pend = &h2Pending{fields: slices.Clone(f.Fields), end: st.remoteEnd}
	if or.timeout > 0 {
		st.startTimeout(or.timeout) // the connect counts
	}
	go st.openPending(key)
	return true
}

// h2Req is what a stream's accounting and observation read of its
// request.
type h2Req struct {
	method, scheme, path, authority string
	fields                          []hpack.HeaderField
	contentLength                   int64
}

// account makes the metrics series of a stream whose endpoint is settled
// (or that is answered by the proxy: perr, a redirect), and its
// observation when the tap is on; obsReq and fieldBuf are reused buffers.
func (d *h2Down) account(st *h2Stream, req *h2Req, or *outRoute, perr *proxyError, dec *authz.Decision, obsReq *Request, fieldBuf *[]Field) (*metrics.Route, Observation) {
	p := d.s.p
	routed := perr == nil && or.redirect == nil
	series, labels := p.requestSeries(d.s.dir, req.authority, d.info, or, &st.rt, routed, dec)
	var obs Observation
	if p.observing() {
		obs = d.observe(req, st, labels, routed, dec, obsReq, fieldBuf)
	}
	return series, obs
}

// awaitWhat is what a stream held off its client's reader waits for
// (awaitRoute).
type awaitWhat int

const (
	// awaitTable: its authority's first route table; then it is routed,
	// and waits for its backend as below.
	awaitTable awaitWhat = iota
	// awaitResolve: discovery's first answer about its backend; then a
	// ready endpoint, if the backend has none.
	awaitResolve
	// awaitEndpoint: a ready endpoint of a backend discovery knows
	// without one.
	awaitEndpoint
)

// awaitRoute holds a stream on a goroutine of its own while it waits for
// what: the client's other streams go on meanwhile, and what it sends for
// this one is held (st.pend) as while a connection is dialed. A backend
// without a ready endpoint is waited for until one comes (or the fail-fast
// timeout, or the route's request timeout, passes). Then the stream is
// accounted for and opened, or answered: 503 no endpoints available, 504
// request timeout when the route's timeout, shorter than the fail-fast
// timeout, ended the wait (its timer and the wait end together, and both
// say 504), or what its route says (a redirect, an error).
func (d *h2Down) awaitRoute(st *h2Stream, h *httpHandler, or *outRoute, req h2Req, f *h2Headers, what awaitWhat) {
	// Should the stream end while it waits (reset, timeout, the
	// connection closed), finish counts it under these labels.
	waiting := metrics.HTTPLabels{Direction: d.s.dir, Authority: req.authority, TLS: d.info.tls, ClientID: d.info.clientID}
	or.label(&waiting)
	st.waiting = &waiting
	req.fields, req.contentLength = slices.Clone(f.Fields), contentLength(f)
	ctx, stop := context.WithCancelCause(context.Background())
	st.pend = &h2Pending{fields: req.fields, end: st.remoteEnd, stop: stop}
	if or.timeout > 0 {
		st.startTimeout(or.timeout) // the wait counts
	}
	st.lateRoute = what == awaitTable
	or2 := *or
	go func() {
		defer stop(nil)
		p := d.s.p
		var rt route
		var perr *proxyError
		switch what {
		case awaitTable:
			var ok bool
			if perr, ok = d.routeLate(ctx, st, h, &or2, &req); !ok {
				return // whoever cancelled ends the stream
			}
			if perr == nil && or2.redirect == nil {
				if or2.timeout > 0 {
					st.startTimeout(or2.timeout - time.Since(st.start)) // the wait counts
				}
				rt, perr = h.route(ctx, d.info, req.authority, &or2)
			}
		case awaitResolve:
			rt, perr = h.route(ctx, d.info, req.authority, &or2)
		case awaitEndpoint:
			perr = &errNoEndpoints
		}
		if perr == &errNoEndpoints && p.awaits() {
			if perr = p.awaitEndpoints(ctx, or2.target(req.authority), or2.timeout); perr == nil {
				rt, perr = h.route(ctx, d.info, req.authority, &or2)
			}
		}
		st.upMu.Lock()
		pend := st.pend
		if pend.cancelled {
			st.upMu.Unlock()
			return // whoever cancelled ends the stream
		}
		st.rt = rt
		var dec authz.Decision
		var obsReq Request
		var fieldBuf []Field
		st.series, st.obs = d.account(st, &req, &or2, perr, &dec, &obsReq, &fieldBuf)
		answered := perr != nil || or2.redirect != nil
		if answered {
			st.pend = nil
		}
		st.upMu.Unlock()
		if !answered {
			st.openPending(p.keyFor(d.s.dir, rt.ep, rt.dst, true))
			return
		}
		var fl h2Flusher
		d.credit(nil, uint32(len(pend.body)), &fl) // what the client sent meanwhile
		if perr != nil {
			d.answer(st, *perr, true)
		} else {
			d.redirect(st, &or2)
		}
		fl.flush()
	}()
}

// routeLate is headers' routing of a stream held for its authority's
// first route table (awaitTable), on the stream's goroutine: or and req's
// fields become what the table says. The retry state, if its rule retries
// the request, is made under upMu from what the stream holds (the reader
// adds to it under the same lock: lateRoute). It reports false when the
// stream was cancelled meanwhile.
func (d *h2Down) routeLate(ctx context.Context, st *h2Stream, h *httpHandler, or *outRoute, req *h2Req) (*proxyError, bool) {
	p := d.s.p
	var perr *proxyError
	if t := p.routeTable(ctx, d.s.dir, req.authority); t != nil {
		mr := httpmatch.FieldsRequest(stringBytes(req.method), stringBytes(req.path), appendFields(nil, req.fields))
		*or, perr = p.routeRequest(t, &mr, req.scheme, req.authority)
	}
	st.upMu.Lock()
	defer st.upMu.Unlock()
	pend := st.pend
	if pend.cancelled {
		return nil, false
	}
	or.label(st.waiting)
	if perr == nil && or.redirect == nil {
		pend.fields = d.applyRoute(st, h, or, pend.fields, req.authority, req.method, req.contentLength)
		req.fields = pend.fields
		if rty := st.rty; rty != nil {
			rty.keep(pend.body)
			if pend.trailers != nil {
				rty.trailers = slices.Clone(pend.trailers)
			}
		}
	}
	return perr, true
}

// applyRoute settles what or's rule does to a request, which does not
// depend on the endpoint (settled before it is picked, for a stream that
// waits): its header block, edited in place and returned; the route its
// response is modified by; the retry state when the rule retries it.
func (d *h2Down) applyRoute(st *h2Stream, h *httpHandler, or *outRoute, fields []hpack.HeaderField, authority, method string, contentLength int64) []hpack.HeaderField {
	if or.modifiesRequest() {
		hf := routes.HPACKFields(fields)
		or.modifyRequest(&hf)
		fields = hf
	}
	if or.modifiesResponse() {
		resp := *or // only this copy escapes
		st.respRoute = &resp
	}
	if or.pol.Retry.Limit > 0 && d.s.p.retryFor(or, authority, method, st.grpc, contentLength) {
		st.rty = &h2Retry{or: *or, h: h, authority: authority, fields: slices.Clone(fields), tries: 1}
	}
	return fields
}

// fieldsOf lists the regular fields of a header block in d's reused
// buffer.
func (d *h2Down) fieldsOf(fields []hpack.HeaderField) []Field {
	d.fields = appendFields(d.fields[:0], fields)
	return d.fields
}

// appendFields appends the regular fields of a header block to buf.
func appendFields(buf []Field, fields []hpack.HeaderField) []Field {
	for _, hf := range fields {
		if !hf.IsPseudo() {
			buf = append(buf, Field{Name: stringBytes(hf.Name), Value: stringBytes(hf.Value)})
		}
	}
	return buf
}

func (d *h2Down) observe(req *h2Req, st *h2Stream, labels metrics.HTTPLabels, routed bool, dec *authz.Decision, obsReq *Request, fieldBuf *[]Field) Observation {
	info := d.info
	path, query, _ := strings.Cut(req.path, "?")
	scheme := req.scheme
	if scheme == "" {
		scheme = "http"
	}
	*fieldBuf = appendFields((*fieldBuf)[:0], req.fields)
	*obsReq = Request{Direction: d.s.dir, Method: req.method, Scheme: scheme, Authority: labels.Authority,
		Path: path, Query: query, ContentLength: req.contentLength, Fields: *fieldBuf,
		Source: info.remote, TLS: labels.TLS, ClientID: info.clientID, ServerID: labels.ServerID, Authz: *dec,
		RouteKind: labels.RouteKind, RouteName: labels.RouteName}
	if routed {
		obsReq.Destination, _ = netip.ParseAddrPort(st.rt.ep.Addr)
		obsReq.DstLabels = st.rt.ep.Labels
	}
	obs := d.s.p.cfg.Observer.RequestStarted(obsReq)
	*obsReq = Request{}
	return obs
}

// trailers forwards a request's trailers (a HEADERS block that must end
// the stream).
func (d *h2Down) trailers(st *h2Stream, f *h2Headers) bool {
	if st.remoteEnd || !f.StreamEnded() || st.reqLeft > 0 {
		d.resetBoth(st.id, http2.ErrCodeProtocol)
		return true
	}
	for _, hf := range f.Fields {
		if hf.IsPseudo() {
			d.resetBoth(st.id, http2.ErrCodeProtocol)
			return true
		}
	}
	st.remoteEnd = true
	if !st.lateRoute && st.rty != nil {
		st.rty.trailers = slices.Clone(f.Fields) // else sendTrailers'
	}
	st.sendTrailers(f.Fields, &d.fl)
	st.mark(sReqIn)
	return true
}

// data relays a request DATA frame.
func (d *h2Down) data(f *http2.DataFrame) bool {
	id := f.StreamID
	flowLen := f.Length
	if !d.out.take(flowLen) {
		d.s.p.metrics.Error(d.s.dir, "h2_flow_control")
		d.goAway(http2.ErrCodeFlowControl)
		return false
	}
	d.mu.Lock()
	st := d.streams[id]
	d.mu.Unlock()
	if st == nil || st.remoteEnd {
		// A stream already reset or answered: its data is dropped but
		// still counts against the connection's window.
		d.credit(nil, flowLen, &d.fl)
		if id > d.lastID || (st != nil && st.remoteEnd) {
			d.goAway(http2.ErrCodeProtocol)
			return false
		}
		return true
	}
	if st.recvWin.Add(-int64(flowLen)) < 0 {
		// Past the stream's window: a stream error; the connection's
		// window gets the frame back.
		d.s.p.metrics.Error(d.s.dir, "h2_flow_control")
		d.credit(nil, flowLen, &d.fl)
		d.resetBoth(id, http2.ErrCodeFlowControl)
		return true
	}
	data := f.Data()
	st.remoteEnd = f.StreamEnded()
	if st.reqLeft >= 0 {
		st.reqLeft -= int64(len(data))
		if st.reqLeft < 0 || st.remoteEnd && st.reqLeft != 0 {
			// More or less DATA than the content-length said.
			d.s.p.metrics.Error(d.s.dir, "h2_content_length")
			d.credit(nil, flowLen, &d.fl)
			d.resetBoth(id, http2.ErrCodeProtocol)
			return true
		}
	}
	// Padding is returned at once; the data as it is passed on.
	if pad := flowLen - uint32(len(data)); pad > 0 {
		d.credit(st, pad, &d.fl)
	}
	if !st.lateRoute && st.rty != nil {
		st.rty.keep(data) // else sendData's
	}
	st.sendData(data, st.remoteEnd, &d.fl)
	if st.remoteEnd {
		st.mark(sReqIn)
	}
	return true
}

// credit returns n bytes of receive window to the client: for the
// connection, and for st's stream unless st has ended its request.
func (d *h2Down) credit(st *h2Stream, n uint32, fl *h2Flusher) {
	if n == 0 {
		return
	}
	d.out.mu.Lock()
	d.recvUnacked += n
	if d.recvUnacked >= h2ConnWindow/4 {
		d.out.windowLocked(0, d.recvUnacked)
		d.recvUnacked = 0
		fl.mark(d.out)
	}
	if st != nil && st.bits.Load()&sReqIn == 0 {
		st.recvOwed += n
		if st.recvOwed >= h2StreamWindow/4 {
			d.out.windowLocked(st.id, st.recvOwed)
			st.recvWin.Add(int64(st.recvOwed))
			st.recvOwed = 0
			fl.mark(d.out)
		}
	}
	d.out.mu.Unlock()
}

// windowUpdate takes the client's credit and sends what waited for it.
func (d *h2Down) windowUpdate(f *http2.WindowUpdateFrame) bool {
	d.out.mu.Lock()
	if f.StreamID == 0 {
		if int64(d.out.win)+int64(f.Increment) > 1<<31-1 {
			d.out.mu.Unlock()
			d.goAway(http2.ErrCodeFlowControl)
			return false
		}
		d.out.win += int32(f.Increment)
		d.drainRespLocked()
	} else {
		d.mu.Lock()
		st := d.streams[f.StreamID]
		d.mu.Unlock()
		if st != nil {
			st.downWin += int32(f.Increment)
			d.drainStreamLocked(st)
		}
	}
	d.out.mu.Unlock()
	d.payCredits()
	return true
}

// payCredits returns the upstreams the window that drainStreamLocked freed
// and accounts for the responses it completed (out.mu not held).
func (d *h2Down) payCredits() {
	for i, c := range d.creds {
		if c.n > 0 {
			c.st.upstream().credit(c.st, c.n, &d.fl)
		} else {
			c.st.finish(false, nil)
			c.st.mark(sRespOut)
		}
		d.creds[i] = streamCredit{}
	}
	d.creds = d.creds[:0]
}

// clientReset handles the client's RST_STREAM (or a reset the proxy
// decided): the upstream stream is cancelled.
func (d *h2Down) clientReset(id uint32, code http2.ErrCode) {
	d.mu.Lock()
	st := d.streams[id]
	d.mu.Unlock()
	if st == nil {
		return
	}
	d.out.mu.Lock()
	started := st.respStarted
	st.respDone = true
	d.out.mu.Unlock()
	if !started {
		d.s.earlyReset(d.info)
	}
	st.cancelUp(http2.ErrCodeCancel, nil, &d.fl)
	st.finish(true, errStreamAborted)
	st.mark(sReqIn | sRespOut | sReqOut | sRespIn)
}

// answer makes the proxy's own response to a stream that is not forwarded
// (or whose upstream failed before answering).
func (d *h2Down) answer(st *h2Stream, e proxyError, count bool) {
	msg := sanitizeHeaderValue(e.msg)
	var fields []hpack.HeaderField
	var body string
	status := e.status
	if st.grpc {
		status = http.StatusOK
		fields = []hpack.HeaderField{{Name: ":status", Value: "200"}, {Name: "content-type", Value: "application/grpc"},
			{Name: "grpc-status", Value: grpcCodeFor(e.status)}, {Name: "grpc-message", Value: msg}, {Name: "conduit-proxy-error", Value: msg}}
		st.grpcStatus = grpcCodeFor(e.status)
	} else {
		body = msg + "\n"
		fields = []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(e.status)}, {Name: "content-type", Value: "text/plain; charset=utf-8"},
			{Name: "content-length", Value: strconv.Itoa(len(body))}, {Name: "conduit-proxy-error", Value: msg}}
	}
	var hdr http.Header
	if st.obs != nil {
		hdr = http.Header{ErrorHeader: {msg}}
		if st.grpc {
			hdr.Set("Content-Type", "application/grpc")
			hdr.Set("Grpc-Status", st.grpcStatus)
		} else {
			hdr.Set("Content-Type", "text/plain; charset=utf-8")
		}
	}
	d.respond(st, status, fields, body, e.reason, hdr, count)
}

// redirect answers a stream with its route's redirect (never forwarded).
func (d *h2Down) redirect(st *h2Stream, or *outRoute) {
	location := sanitizeHeaderValue(or.location)
	fields := routes.HPACKFields{{Name: ":status", Value: strconv.Itoa(or.redirect.Status)}, {Name: "location", Value: location},
		{Name: "content-length", Value: "0"}}
	if or.modifiesResponse() {
		or.modifyResponse(&fields)
	}
	var hdr http.Header
	if st.obs != nil {
		hdr = http.Header{"Location": {location}}
	}
	d.respond(st, or.redirect.Status, fields, "", "", hdr, false)
}

// respond sends the proxy's own response (header fields, then body if
// any) to a stream not forwarded, unless a response already began; hdr is
// the response's header for the Observer (when st.obs is set). With
// countErr, proxyErr is counted among the proxy's errors if this response
// is the one sent.
func (d *h2Down) respond(st *h2Stream, status int, fields []hpack.HeaderField, body, proxyErr string, hdr http.Header, countErr bool) {
	d.out.mu.Lock()
	if !st.respDone {
		if countErr {
			// Counted only by the answer that is sent: a stream held for
			// an endpoint can be answered at once by its wait and by its
			// route's timer (both 504), and only one of them is written.
			d.s.p.metrics.Error(d.s.dir, proxyErr)
		}
		st.proxyErr = proxyErr
		st.respDone, st.respStarted = true, true
		st.status, st.firstByte = status, time.Now()
		if st.obs != nil {
			st.obs.ResponseStarted(&Response{Status: status, Header: hdr})
		}
		d.out.headersLocked(st.id, fields, body == "")
		if body != "" {
			// Always within the initial window.
			d.out.dataLocked(st.id, []byte(body), true)
			st.written = int64(len(body))
		}
		if st.bits.Load()&sReqIn == 0 {
			// The request will not be read: tell the client to stop.
			d.out.rstLocked(st.id, http2.ErrCodeNo)
		}
		// Rare: written at once, from whichever reader answers.
		d.out.flushLocked()
	}
	d.out.mu.Unlock()
	st.finish(false, nil)
	if st.upstream() == nil {
		st.mark(sReqOut | sRespIn)
	}
	st.mark(sReqIn | sRespOut)
}

// remove forgets a stream that is done both ways.
func (d *h2Down) remove(st *h2Stream) {
	d.mu.Lock()
	if d.streams[st.id] == st {
		delete(d.streams, st.id)
	}
	n, draining := len(d.streams), d.draining
	if n == 0 {
		d.idleAt = time.Now()
	}
	d.mu.Unlock()
	if n == 0 && draining {
		// The last response may still be buffered by the reader that
		// ended it (which may hold out.mu): flushed, then closed.
		go d.flushClose()
	}
}

func (d *h2Down) flushClose() {
	d.out.mu.Lock()
	d.out.dirty = true
	d.out.flushLocked()
	d.out.mu.Unlock()
	d.sc.Close()
}

// close ends the connection: every stream still open is cancelled
// upstream.
func (d *h2Down) close() {
	d.sc.Close()
	d.mu.Lock()
	streams := make([]*h2Stream, 0, len(d.streams))
	for _, st := range d.streams {
		streams = append(streams, st)
	}
	clear(d.streams)
	d.mu.Unlock()
	var fl h2Flusher
	for _, st := range streams {
		st.cancelUp(http2.ErrCodeCancel, nil, &fl)
		st.finish(true, errStreamAborted)
	}
	fl.flush()
	d.fl.flush()
}

// drainRespLocked sends the response data that waited for the
// connection's window (down.out.mu held).
func (d *h2Down) drainRespLocked() {
	d.mu.Lock()
	var blocked []*h2Stream
	for _, st := range d.streams {
		if st.respBlocked {
			blocked = append(blocked, st)
		}
	}
	d.mu.Unlock()
	for _, st := range blocked {
		if d.out.win <= 0 {
			return
		}
		d.drainStreamLocked(st)
	}
}

// drainStreamLocked sends what st's response has waiting, as far as the
// client's windows allow (down.out.mu held), and returns the upstream its
// credit.
func (d *h2Down) drainStreamLocked(st *h2Stream) {
	if st.respDone || len(st.respBuf) == 0 && !st.respEnd {
		st.respBlocked = false
		return
	}
	n := min(int(d.out.win), int(st.downWin), len(st.respBuf))
	if n < 0 {
		n = 0
	}
	end := st.respEnd && n == len(st.respBuf) && st.respTrailers == nil
	if n > 0 || end {
		d.out.dataLocked(st.id, st.respBuf[:n], end)
		d.out.win -= int32(n)
		st.downWin -= int32(n)
		st.written += int64(n)
		st.respBuf = st.respBuf[n:]
		d.fl.mark(d.out)
		if n > 0 {
			d.creds = append(d.creds, streamCredit{st, uint32(n)})
		}
	}
	if len(st.respBuf) == 0 {
		st.respBuf = nil
		st.respBlocked = false
		if st.respEnd {
			if st.respTrailers != nil {
				d.out.headersLocked(st.id, st.respTrailers, true)
				st.respTrailers = nil
			}
			st.respDone = true
			d.creds = append(d.creds, streamCredit{st, 0})
		}
		return
	}
	st.respBlocked = true
}

// finish accounts for a stream once: metrics, balancer feedback, the
// observer, and the request slot.
func (st *h2Stream) finish(streamErr bool, err error) {
	if !st.ended.CompareAndSwap(false, true) {
		return
	}
	if t := st.timeout.Swap(nil); t != nil {
		t.Stop()
	}
	d := st.down
	// Written by either reader under the client connection's lock.
	d.out.mu.Lock()
	status, grpcStatus, firstByte, written, proxyErr, upErr := st.status, st.grpcStatus, st.firstByte, st.written, st.proxyErr, st.upErr
	d.out.mu.Unlock()
	latency := time.Since(st.start)
	if !firstByte.IsZero() {
		latency = firstByte.Sub(st.start)
	}
	rt, retries := st.rt, 0
	if st.rty != nil {
		st.upMu.Lock()
		rt, retries = st.rt, st.rty.tries-1
		if st.rty.timer != nil {
			st.rty.timer.Stop()
		}
		st.upMu.Unlock()
	}
	if st.series == nil && st.waiting != nil {
		// Ended while it waited for an endpoint (cancelUp ordered this
		// read after awaitRoute's write, if any).
		st.series = d.s.p.metrics.Route(*st.waiting)
		st.series.Request()
	}
	if st.series != nil {
		st.series.Response(status, grpcStatus, metrics.Classify(status, grpcStatus, streamErr), latency)
		rt.finished(latency, status == 0 || status >= 500 && proxyErr != "", status, grpcStatus)
		if st.admitted {
			d.s.requests.release()
		}
	}
	if st.obs != nil {
		if err == nil && upErr != nil {
			err = upErr
		}
		st.obs.Ended(EndInfo{Status: status, GRPCStatus: grpcStatus, Latency: latency,
			Duration: time.Since(st.start), ResponseBytes: written, Err: err, ProxyError: proxyErr, Retries: max(retries, 0)})
	}
}

// startTimeout ends the stream (timedOut) unless it has finished within d.
func (st *h2Stream) startTimeout(d time.Duration) {
	t := time.AfterFunc(d, st.timedOut)
	st.timeout.Store(t)
	if st.ended.Load() {
		// Finished before the timer was stored: finish did not see it.
		if t := st.timeout.Swap(nil); t != nil {
			t.Stop()
		}
	}
}

// timedOut ends a stream its route's request timeout has cut short: it is
// reset upstream; the client gets 504 (gRPC DEADLINE_EXCEEDED) when no
// response began, else a reset.
func (st *h2Stream) timedOut() {
	if st.ended.Load() {
		return
	}
	var fl h2Flusher
	st.cancelUp(http2.ErrCodeCancel, errTimedOut, &fl)
	if st.failToClient(errRequestTimeout, http2.ErrCodeCancel, errTimedOut, &fl) {
		st.down.s.p.metrics.Error(st.down.s.dir, errRequestTimeout.reason)
	}
	fl.flush()
}
