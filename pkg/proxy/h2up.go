package proxy

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
)

// h2Ups pools the fast path's upstream HTTP/2 connections: streams to one
// endpoint (and identity) share a connection while it has room for them.
type h2Ups struct {
	p  *Proxy
	mu sync.Mutex
	m  map[upKey][]*h2Up
	// dials are the connections being dialed, by key: streams that find
	// none with room wait for it rather than each dialing its own.
	dials map[upKey]*h2Dial
}

// h2Dial is a connection being dialed; done is closed once up or err is set.
type h2Dial struct {
	done chan struct{}
	up   *h2Up
	err  error
}

// h2Up is one upstream HTTP/2 connection. Its reader (serve) relays the
// responses of its streams to their clients.
type h2Up struct {
	pool *h2Ups
	key  upKey
	conn net.Conn
	br   *bufio.Reader
	fr   *http2.Framer
	hr   *h2HeaderReader
	out  *h2Out
	fl   h2Flusher

	mu         sync.Mutex // guards the fields below
	streams    map[uint32]*h2Stream
	nextID     uint32
	maxStreams uint32
	goingAway  bool
	closed     bool
	idleAt     time.Time

	// Under out.mu: streams whose request data waits for window.
	blocked []*h2Stream
	// connOwed is the connection-level receive credit not yet returned.
	connOwed atomic.Uint32
	// Reused by the reader to describe responses to the observer.
	fields []Field
	obsRsp Response
	creds  []streamCredit
}

type streamCredit struct {
	st *h2Stream
	n  uint32
}

func newH2Ups(p *Proxy) *h2Ups {
	return &h2Ups{p: p, m: map[upKey][]*h2Up{}, dials: map[upKey]*h2Dial{}}
}

// pooled returns a connection to key's endpoint with room for a stream, or
// nil; it never dials.
func (u *h2Ups) pooled(key upKey) *h2Up {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.pooledLocked(key)
}

func (u *h2Ups) pooledLocked(key upKey) *h2Up {
	for _, up := range u.m[key] {
		up.mu.Lock()
		ok := !up.goingAway && !up.closed && uint32(len(up.streams)) < up.maxStreams
		up.mu.Unlock()
		if ok {
			return up
		}
	}
	return nil
}

// get returns a connection to key's endpoint with room for a stream,
// dialing one if none has (or waiting for the one being dialed). It may
// take up to the connect timeout: never called on a connection's reader.
func (u *h2Ups) get(key upKey, ep resolve.Endpoint) (*h2Up, error) {
	for {
		u.mu.Lock()
		if up := u.pooledLocked(key); up != nil {
			u.mu.Unlock()
			return up, nil
		}
		if dl := u.dials[key]; dl != nil {
			u.mu.Unlock()
			<-dl.done
			if dl.err != nil {
				return nil, dl.err
			}
			continue // it (or another) has room, or is full already
		}
		dl := &h2Dial{done: make(chan struct{})}
		u.dials[key] = dl
		u.mu.Unlock()
		dl.up, dl.err = u.dial(key, ep)
		u.mu.Lock()
		delete(u.dials, key)
		u.mu.Unlock()
		close(dl.done)
		return dl.up, dl.err
	}
}

// dial connects a new upstream connection for key and pools it.
func (u *h2Ups) dial(key upKey, ep resolve.Endpoint) (*h2Up, error) {
	p := u.p
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ConnectTimeout)
	defer cancel()
	c, err := p.ups.dialLabeled(ctx, key.dir, resolve.Endpoint{Addr: key.addr, Identity: key.identity, Labels: ep.Labels}, key.dst)
	if err != nil {
		return nil, err
	}
	up := &h2Up{pool: u, key: key, conn: c, streams: map[uint32]*h2Stream{}, nextID: 1, maxStreams: h2MaxStreams, idleAt: time.Now()}
	up.br = bufio.NewReaderSize(c, h2BufSize)
	up.fr = http2.NewFramer(nil, up.br)
	up.fr.SetReuseFrames() // a DATA frame is relayed or copied before the next read
	up.hr = newH2HeaderReader(uint32(p.cfg.MaxHeaderBytes))
	up.fr.SetMaxReadFrameSize(h2MaxFrame)
	up.out = newH2Out(c, p.cfg.BodyIdleTimeout)
	up.out.shared = true
	up.out.mu.Lock()
	_, err = up.out.bw.WriteString(http2.ClientPreface)
	up.out.check(err)
	up.out.check(up.out.fr.WriteSettings(
		http2.Setting{ID: http2.SettingEnablePush, Val: 0},
		http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2StreamWindow},
		http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: uint32(p.cfg.MaxHeaderBytes)},
	))
	up.out.windowLocked(0, h2ConnWindow-65535)
	up.out.mu.Unlock()
	u.mu.Lock()
	if u.m == nil {
		u.mu.Unlock()
		c.Close()
		return nil, net.ErrClosed
	}
	u.m[key] = append(u.m[key], up)
	u.mu.Unlock()
	go up.serve()
	return up, nil
}

// forget drops up from the pool (it takes no new streams).
func (u *h2Ups) forget(up *h2Up) {
	u.mu.Lock()
	defer u.mu.Unlock()
	list := u.m[up.key]
	for i, x := range list {
		if x == up {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(u.m, up.key)
	} else {
		u.m[up.key] = list
	}
}

// closeAll closes every pooled connection (the proxy has stopped).
func (u *h2Ups) closeAll() {
	u.mu.Lock()
	m := u.m
	u.m = nil
	u.mu.Unlock()
	for _, list := range m {
		for _, up := range list {
			up.conn.Close()
		}
	}
}

// registerLocked makes st a new stream of up (out.mu held); false if up
// takes no more streams.
func (up *h2Up) registerLocked(st *h2Stream) (uint32, bool) {
	if !up.out.ok() {
		return 0, false
	}
	up.mu.Lock()
	if up.goingAway || up.closed || up.nextID > 1<<31-1 {
		up.mu.Unlock()
		return 0, false
	}
	id := up.nextID
	up.nextID += 2
	st.upP.Store(up)
	st.upID = id
	st.curUpID.Store(id)
	up.streams[id] = st
	up.idleAt = time.Time{}
	up.mu.Unlock()
	st.upWin = up.out.initWin
	st.upRecvWin.Store(h2StreamWindow)
	return id, true
}

// open starts st on up with the request's header block; false if up
// takes no more streams.
func (up *h2Up) open(st *h2Stream, fields []hpack.HeaderField, end bool, fl *h2Flusher) bool {
	up.out.mu.Lock()
	defer up.out.mu.Unlock()
	id, ok := up.registerLocked(st)
	if !ok {
		return false
	}
	up.out.headersLocked(id, fields, end)
	fl.mark(up.out)
	if end {
		st.reqDone = true
		st.mark(sReqOut)
	}
	return true
}

// reopen sends a retry of st on up: the request's kept header block, body
// and trailers (the client is not credited again for the body). False if
// up takes no more streams.
func (up *h2Up) reopen(st *h2Stream, fl *h2Flusher) bool {
	rty := st.rty
	return up.openHeld(st, rty.fields, rty.body, true, rty.trailers, true, fl)
}

// openHeld starts st on up with its header block and the request data and
// trailers held for it (what came while its connection was dialed, or a
// retry's replay), as far as the upstream's windows allow; end says the
// client has ended the request, replayed that it was credited for body
// already. False if up takes no more streams.
func (up *h2Up) openHeld(st *h2Stream, fields []hpack.HeaderField, body []byte, end bool, trailers []hpack.HeaderField, replayed bool, fl *h2Flusher) bool {
	up.out.mu.Lock()
	id, ok := up.registerLocked(st)
	if !ok {
		up.out.mu.Unlock()
		return false
	}
	st.reqDone, st.reqBlocked, st.replayed = false, false, replayed
	st.upOwed.Store(0)
	onlyHeaders := end && len(body) == 0 && trailers == nil
	up.out.headersLocked(id, fields, onlyHeaders)
	fl.mark(up.out)
	if onlyHeaders {
		st.reqDone = true
		up.out.mu.Unlock()
		st.mark(sReqOut)
		return true
	}
	st.reqBuf, st.reqEnd, st.reqTrailers = body, end, trailers
	st.reqBlocked = true
	up.blocked = append(up.blocked, st)
	// up.creds is the reader's, which may still be paying what it
	// collected in it: this goroutine collects in a slice of its own.
	readers := up.creds
	up.creds = nil
	up.drainReqLocked(fl)
	creds := up.creds
	up.creds = readers
	up.out.mu.Unlock()
	up.payCredits(creds, fl)
	return true
}

// requestData forwards a request DATA frame's payload, as far as the
// upstream's windows allow; the rest waits for its WINDOW_UPDATE.
func (up *h2Up) requestData(st *h2Stream, data []byte, end bool, fl *h2Flusher) {
	up.out.mu.Lock()
	if st.reqDone {
		up.out.mu.Unlock()
		st.down.credit(st, uint32(len(data)), fl)
		return
	}
	sent := 0
	if len(st.reqBuf) == 0 {
		n := max(min(int(up.out.win), int(st.upWin), len(data)), 0)
		if n > 0 || end && n == len(data) {
			up.out.dataLocked(st.upID, data[:n], end && n == len(data))
			up.out.win -= int32(n)
			st.upWin -= int32(n)
			sent = n
			fl.mark(up.out)
		}
		data = data[n:]
		if end && len(data) == 0 {
			st.reqDone = true
		}
	}
	if len(data) > 0 {
		st.reqBuf = append(st.reqBuf, data...)
		st.reqEnd = st.reqEnd || end
		if !st.reqBlocked {
			st.reqBlocked = true
			up.blocked = append(up.blocked, st)
		}
	} else if end && !st.reqDone {
		st.reqEnd = true
	}
	done := st.reqDone
	up.out.mu.Unlock()
	if sent > 0 {
		st.down.credit(st, uint32(sent), fl)
	}
	if done {
		st.mark(sReqOut)
	}
}

// requestTrailers forwards a request's trailers, after its data.
func (up *h2Up) requestTrailers(st *h2Stream, fields []hpack.HeaderField, fl *h2Flusher) {
	up.out.mu.Lock()
	done := false
	if !st.reqDone {
		if len(st.reqBuf) > 0 {
			st.reqTrailers, st.reqEnd = slices.Clone(fields), true
		} else {
			up.out.headersLocked(st.upID, fields, true)
			st.reqDone, done = true, true
			fl.mark(up.out)
		}
	}
	up.out.mu.Unlock()
	if done {
		st.mark(sReqOut)
	}
}

// drainReqLocked sends the request data that waited for window (out.mu
// held); the client credit it frees is collected in up.creds.
func (up *h2Up) drainReqLocked(fl *h2Flusher) {
	kept := up.blocked[:0]
	for _, st := range up.blocked {
		if st.reqDone {
			st.reqBlocked = false
			continue
		}
		n := max(min(int(up.out.win), int(st.upWin), len(st.reqBuf)), 0)
		end := st.reqEnd && n == len(st.reqBuf) && st.reqTrailers == nil
		if n > 0 || end {
			up.out.dataLocked(st.upID, st.reqBuf[:n], end)
			up.out.win -= int32(n)
			st.upWin -= int32(n)
			st.reqBuf = st.reqBuf[n:]
			fl.mark(up.out)
			if n > 0 && !st.replayed {
				up.creds = append(up.creds, streamCredit{st, uint32(n)})
			}
		}
		if len(st.reqBuf) > 0 {
			kept = append(kept, st)
			continue
		}
		st.reqBuf, st.reqBlocked = nil, false
		if st.reqEnd {
			if st.reqTrailers != nil {
				up.out.headersLocked(st.upID, st.reqTrailers, true)
				st.reqTrailers = nil
			}
			st.reqDone = true
			up.creds = append(up.creds, streamCredit{st, 0})
		}
	}
	for i := len(kept); i < len(up.blocked); i++ {
		up.blocked[i] = nil
	}
	up.blocked = kept
}

// payCredits returns the clients the credit collected by drainReqLocked
// (out.mu not held).
func (up *h2Up) payCredits(creds []streamCredit, fl *h2Flusher) {
	for _, c := range creds {
		if c.n > 0 {
			c.st.down.credit(c.st, c.n, fl)
		} else {
			c.st.mark(sReqOut)
		}
	}
}

// cancel resets st upstream (the client reset it or went away).
func (up *h2Up) cancel(st *h2Stream, code http2.ErrCode, fl *h2Flusher) {
	up.out.mu.Lock()
	if st.bits.Load()&sRespIn == 0 || !st.reqDone {
		up.out.rstLocked(st.upID, code)
		fl.mark(up.out)
	}
	// Request data still waiting for the upstream's window is dropped:
	// the client's connection gets its window back.
	dropped := 0
	if !st.replayed {
		dropped = len(st.reqBuf)
	}
	st.reqDone, st.reqBuf, st.reqTrailers = true, nil, nil
	up.out.mu.Unlock()
	st.down.credit(nil, uint32(dropped), fl)
	st.mark(sReqOut | sRespIn)
}

// credit records n bytes of response data passed on for st and returns
// the upstream its window when enough is owed.
func (up *h2Up) credit(st *h2Stream, n uint32, fl *h2Flusher) {
	c := up.connOwed.Add(n)
	s := st.upOwed.Add(n)
	if c < h2ConnWindow/4 && (s < h2StreamWindow/4 || st.bits.Load()&sRespIn != 0) {
		return
	}
	up.out.mu.Lock()
	if c := up.connOwed.Swap(0); c > 0 {
		up.out.windowLocked(0, c)
	}
	if st.bits.Load()&sRespIn == 0 {
		if s := st.upOwed.Swap(0); s >= h2StreamWindow/4 {
			up.out.windowLocked(st.upID, s)
			st.upRecvWin.Add(int64(s))
		} else {
			st.upOwed.Add(s)
		}
	}
	up.out.mu.Unlock()
	fl.mark(up.out)
}

// remove forgets a stream done both ways on this connection.
func (up *h2Up) remove(st *h2Stream) {
	up.mu.Lock()
	if up.streams[st.upID] == st {
		delete(up.streams, st.upID)
	}
	n, away := len(up.streams), up.goingAway
	if n == 0 {
		up.idleAt = time.Now()
	}
	up.mu.Unlock()
	if n == 0 && away {
		up.conn.Close()
	}
}

func (up *h2Up) stream(id uint32) *h2Stream {
	up.mu.Lock()
	defer up.mu.Unlock()
	return up.streams[id]
}

// serve reads the upstream's frames until the connection ends.
func (up *h2Up) serve() {
	p := up.pool.p
	defer func() {
		if v := recover(); v != nil {
			p.recovered(up.key.dir, v)
		}
		up.shutdown()
	}()
	stopIdle := up.watchIdle()
	defer stopIdle()
	for {
		f, h, err := readH2Frame(up.br, up.fr, up.hr, &up.fl, false)
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) {
				p.metrics.Error(up.key.dir, "h2_upstream_stream_error")
				if st := up.stream(se.StreamID); st != nil {
					up.cancel(st, se.Code, &up.fl)
					up.failStream(st, err)
				}
				continue
			}
			return
		}
		if h != nil {
			up.safeHeaders(h)
		} else if !up.frame(f) {
			return
		}
	}
}

func (up *h2Up) watchIdle() (stop func()) {
	idle := up.pool.p.cfg.IdleTimeout
	var t *time.Timer
	t = time.AfterFunc(idle, func() {
		up.mu.Lock()
		at := up.idleAt
		if !at.IsZero() && time.Since(at) >= idle {
			up.goingAway = true
		}
		away := up.goingAway && len(up.streams) == 0
		up.mu.Unlock()
		if away {
			up.pool.forget(up)
			up.conn.Close()
			return
		}
		t.Reset(idle)
	})
	return func() { t.Stop() }
}

// shutdown ends the connection: streams still waiting for their response
// get the proxy's error, the others are reset.
func (up *h2Up) shutdown() {
	up.pool.forget(up)
	up.conn.Close()
	up.mu.Lock()
	up.closed = true
	streams := make([]*h2Stream, 0, len(up.streams))
	for _, st := range up.streams {
		streams = append(streams, st)
	}
	up.mu.Unlock()
	for _, st := range streams {
		up.failStream(st, errUpstreamClosed)
		st.mark(sReqOut | sRespIn)
	}
	up.fl.flush()
	up.out.release()
}

var (
	errUpstreamClosed      = errors.New("upstream connection closed")
	errUpstreamFlowControl = errors.New("upstream sent past its flow-control window")
	errUpstreamLength      = errors.New("upstream response body does not match its content-length")
	errUpstreamHead        = errors.New("malformed upstream response head")
)

// failStream ends st toward its client after an upstream failure: the
// proxy's 502 when no response started, else a reset.
func (up *h2Up) failStream(st *h2Stream, err error) {
	st.failToClient(proxyError{http.StatusBadGateway, "upstream_error", "upstream failed"}, http2.ErrCodeInternal, err, &up.fl)
}

// failToClient ends st toward its client: the proxy's answer e when no
// response started, else a reset with code (its connection marked on fl).
// It reports whether it reset a begun response.
func (st *h2Stream) failToClient(e proxyError, code http2.ErrCode, err error, fl *h2Flusher) (reset bool) {
	d := st.down
	d.out.mu.Lock()
	started, done := st.respStarted, st.respDone
	if started && !done {
		st.respDone = true
		d.out.rstLocked(st.id, code)
		fl.mark(d.out)
	}
	d.out.mu.Unlock()
	if done {
		return false
	}
	if !started {
		d.out.mu.Lock()
		st.upErr = err
		d.out.mu.Unlock()
		d.answer(st, e, true)
		return false
	}
	st.finish(true, err)
	st.mark(sRespOut)
	return true
}

func (up *h2Up) frame(f http2.Frame) bool {
	switch f := f.(type) {
	case *http2.DataFrame:
		return up.data(f)
	case *http2.WindowUpdateFrame:
		up.out.mu.Lock()
		if f.StreamID == 0 {
			up.out.win += int32(f.Increment)
		} else if st := up.stream(f.StreamID); st != nil {
			st.upWin += int32(f.Increment)
		}
		up.drainReqLocked(&up.fl)
		creds := up.creds
		up.creds = up.creds[:0]
		up.out.mu.Unlock()
		up.payCredits(creds, &up.fl)
	case *http2.RSTStreamFrame:
		up.reset(f)
	case *http2.SettingsFrame:
		if f.IsAck() {
			return true
		}
		if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
			up.mu.Lock()
			up.maxStreams = v
			up.mu.Unlock()
		}
		up.out.mu.Lock()
		delta, err := up.out.settingsLocked(f)
		if err == nil && delta != 0 {
			up.mu.Lock()
			for _, st := range up.streams {
				st.upWin += delta
			}
			up.mu.Unlock()
			up.drainReqLocked(&up.fl)
		}
		creds := up.creds
		up.creds = up.creds[:0]
		up.out.mu.Unlock()
		up.fl.mark(up.out)
		up.payCredits(creds, &up.fl)
		return err == nil
	case *http2.PingFrame:
		if !f.IsAck() {
			up.out.pingAck(f.Data, &up.fl)
		}
	case *http2.GoAwayFrame:
		up.goAway(f)
	case *http2.PushPromiseFrame:
		return false
	}
	return true
}

// goAway: streams past the last one the upstream processed are refused to
// their clients (which may retry them), the rest finish.
func (up *h2Up) goAway(f *http2.GoAwayFrame) {
	up.pool.forget(up)
	up.mu.Lock()
	up.goingAway = true
	var refused []*h2Stream
	for id, st := range up.streams {
		if id > f.LastStreamID {
			refused = append(refused, st)
		}
	}
	n := len(up.streams)
	up.mu.Unlock()
	for _, st := range refused {
		d := st.down
		d.out.mu.Lock()
		if !st.respDone {
			st.respDone = true
			d.out.rstLocked(st.id, http2.ErrCodeRefusedStream)
			up.fl.mark(d.out)
		}
		d.out.mu.Unlock()
		st.finish(true, errUpstreamClosed)
		st.mark(sReqOut | sRespIn | sRespOut)
	}
	if n == len(refused) {
		up.conn.Close()
	}
}

// reset relays the upstream's RST_STREAM to the client.
func (up *h2Up) reset(f *http2.RSTStreamFrame) {
	st := up.stream(f.StreamID)
	if st == nil || st.rty != nil && st.curUpID.Load() != f.StreamID {
		return
	}
	up.out.mu.Lock()
	st.reqDone, st.reqBuf = true, nil
	up.out.mu.Unlock()
	d := st.down
	d.out.mu.Lock()
	complete := st.respDone || st.respEnd
	if !st.respDone && !st.respEnd {
		st.respDone = true
		d.out.rstLocked(st.id, f.ErrCode)
		up.fl.mark(d.out)
	} else if st.respDone && f.ErrCode == http2.ErrCodeNo && st.bits.Load()&sReqIn == 0 {
		// The response is complete and the upstream reads no more of
		// the request: so does the client.
		d.out.rstLocked(st.id, http2.ErrCodeNo)
		up.fl.mark(d.out)
		st.mark(sReqIn)
	}
	d.out.mu.Unlock()
	if !complete {
		st.finish(true, errStreamAborted)
		st.mark(sRespOut)
	}
	st.mark(sReqOut | sRespIn)
}

// safeHeaders is headers with a panic (an observer's) confined to its
// stream, which is reset on both sides.
func (up *h2Up) safeHeaders(f *h2Headers) {
	defer func() {
		if v := recover(); v != nil {
			up.pool.p.recovered(up.key.dir, v)
			if st := up.stream(f.StreamID); st != nil {
				d := st.down
				d.out.mu.Lock()
				if !st.respDone {
					d.out.rstLocked(st.id, http2.ErrCodeInternal)
					up.fl.mark(d.out)
				}
				d.out.mu.Unlock()
				st.abort()
			}
		}
	}()
	up.headers(f)
}

// headers relays a response's header block: informational, final, or
// trailers.
func (up *h2Up) headers(f *h2Headers) {
	st := up.stream(f.StreamID)
	if st == nil {
		return
	}
	if f.Truncated {
		// Past the header list bound: not relayed in part.
		up.pool.p.metrics.Error(up.key.dir, "h2_upstream_header_too_large")
		up.cancel(st, http2.ErrCodeCancel, &up.fl)
		up.failStream(st, errors.New("response header list too large"))
		return
	}
	end := f.StreamEnded()
	d := st.down
	status, grpcStatus := 0, ""
	length := int64(-1)
	badLength := false // a content-length that is not one number: malformed
	for _, hf := range f.Fields {
		switch hf.Name {
		case ":status":
			if code, ok := parseDigits([]byte(hf.Value)); ok && len(hf.Value) == 3 {
				status = int(code) // else 0: malformed (below)
			}
		case "grpc-status":
			grpcStatus = hf.Value
		case "content-length":
			l, ok := addLength(length, hf.Value)
			length, badLength = l, badLength || !ok
		}
	}
	if st.head || status == http.StatusNoContent || status == http.StatusNotModified {
		length = -1 // no body, whatever the content-length says
	}
	if st.rty != nil {
		if up.retryResponse(st, f.StreamID, status, grpcStatus, end) {
			return
		}
	} else if end {
		st.mark(sRespIn)
	}
	d.out.mu.Lock()
	if st.respDone || st.rty != nil && st.curUpID.Load() != f.StreamID {
		// Answered, or an attempt dropped since (a retry).
		d.out.mu.Unlock()
		return
	}
	if st.respStarted && st.respLeft > 0 || !st.respStarted && status >= 200 && (end && length > 0 || badLength) {
		// Trailers, or a response ended with its headers, before the
		// body its content-length announced; or a final response head
		// whose content-length is malformed (RFC 9113 8.1.1).
		d.out.mu.Unlock()
		up.badLength(st)
		return
	}
	if !st.respStarted && (status < 100 || status > 599 || status == http.StatusSwitchingProtocols || status < 200 && end) {
		// No :status or not three digits, 101 (not in HTTP/2), or an
		// informational head that ends the stream: malformed (RFC
		// 9113 8.1, 8.3.2, 8.6).
		d.out.mu.Unlock()
		up.malformed(st, "h2_upstream_malformed_response", errUpstreamHead)
		return
	}
	finished := false
	switch {
	case !st.respStarted && status >= 100 && status < 200:
		d.out.headersLocked(st.id, f.Fields, false)
	case !st.respStarted:
		st.respLeft = length
		if st.respRoute != nil {
			hf := routes.HPACKFields(f.Fields)
			st.respRoute.modifyResponse(&hf)
			f.Fields = hf
		}
		st.respStarted, st.status, st.firstByte = true, status, time.Now()
		if end {
			st.grpcStatus = grpcStatus
		}
		if st.obs != nil {
			up.obsRsp = Response{Status: status, Fields: up.fieldsOf(f.Fields)}
			st.obs.ResponseStarted(&up.obsRsp)
			up.obsRsp = Response{}
		}
		d.out.headersLocked(st.id, f.Fields, end)
		if end {
			st.respDone, finished = true, true
		}
	default: // trailers
		if grpcStatus != "" {
			st.grpcStatus = grpcStatus
		}
		if len(st.respBuf) > 0 {
			st.respTrailers, st.respEnd = slices.Clone(f.Fields), true
		} else {
			d.out.headersLocked(st.id, f.Fields, true)
			st.respDone, finished = true, true
		}
	}
	d.out.mu.Unlock()
	up.fl.mark(d.out)
	if finished {
		st.finish(false, nil)
		st.mark(sRespOut)
	}
}

func (up *h2Up) fieldsOf(fields []hpack.HeaderField) []Field {
	up.fields = up.fields[:0]
	for _, hf := range fields {
		if !hf.IsPseudo() {
			up.fields = append(up.fields, Field{Name: stringBytes(hf.Name), Value: stringBytes(hf.Value)})
		}
	}
	return up.fields
}

// data relays a response DATA frame, as far as the client's windows
// allow; the rest waits for its WINDOW_UPDATE.
func (up *h2Up) data(f *http2.DataFrame) bool {
	flowLen := f.Length
	if !up.out.take(flowLen) {
		// Past the connection's window: a connection error.
		up.pool.p.metrics.Error(up.key.dir, "h2_upstream_flow_control")
		up.out.mu.Lock()
		if up.out.ok() {
			up.out.check(up.out.fr.WriteGoAway(0, http2.ErrCodeFlowControl, nil))
			up.out.flushLocked()
		}
		up.out.mu.Unlock()
		return false
	}
	st := up.stream(f.StreamID)
	if st == nil {
		up.connOwed.Add(flowLen)
		up.maybeCreditConn()
		return true
	}
	if st.rty != nil && st.curUpID.Load() != f.StreamID {
		// An attempt dropped by a retry.
		up.connOwed.Add(flowLen)
		up.maybeCreditConn()
		return true
	}
	if st.upRecvWin.Add(-int64(flowLen)) < 0 {
		// Past the stream's window: the stream is reset, its client
		// answered or reset, the connection goes on.
		up.pool.p.metrics.Error(up.key.dir, "h2_upstream_flow_control")
		up.connOwed.Add(flowLen)
		up.maybeCreditConn()
		up.cancel(st, http2.ErrCodeFlowControl, &up.fl)
		up.failStream(st, errUpstreamFlowControl)
		return true
	}
	data := f.Data()
	end := f.StreamEnded()
	if end {
		st.mark(sRespIn)
	}
	if pad := flowLen - uint32(len(data)); pad > 0 {
		up.credit(st, pad, &up.fl)
	}
	d := st.down
	d.out.mu.Lock()
	if st.respDone {
		d.out.mu.Unlock()
		up.credit(st, uint32(len(data)), &up.fl)
		return true
	}
	if st.respLeft >= 0 {
		st.respLeft -= int64(len(data))
		if st.respLeft < 0 || end && st.respLeft != 0 {
			d.out.mu.Unlock()
			up.credit(st, uint32(len(data)), &up.fl)
			up.badLength(st)
			return true
		}
	}
	sent := 0
	if len(st.respBuf) == 0 {
		n := max(min(int(d.out.win), int(st.downWin), len(data)), 0)
		if n > 0 || end && n == len(data) {
			d.out.dataLocked(st.id, data[:n], end && n == len(data))
			d.out.win -= int32(n)
			st.downWin -= int32(n)
			st.written += int64(n)
			sent = n
			up.fl.mark(d.out)
		}
		data = data[n:]
	}
	finished := false
	if len(data) > 0 {
		st.respBuf = append(st.respBuf, data...)
		st.respEnd = st.respEnd || end
		st.respBlocked = true
	} else if end {
		st.respDone, finished = true, true
	}
	d.out.mu.Unlock()
	if sent > 0 {
		up.credit(st, uint32(sent), &up.fl)
	}
	if finished {
		st.finish(false, nil)
		st.mark(sRespOut)
	}
	return true
}

// badLength ends a response whose DATA does not add up to its
// content-length (RFC 9113 §8.1.1: malformed): the upstream stream is
// reset, the client gets the proxy's 502 or, the response begun, a reset.
func (up *h2Up) badLength(st *h2Stream) {
	up.malformed(st, "h2_upstream_content_length", errUpstreamLength)
}

// malformed resets a stream whose response is malformed (RFC 9113 8.1.1:
// an intermediary must not forward it) and answers its client 502, or
// resets it once the response has started; metric names the error.
func (up *h2Up) malformed(st *h2Stream, metric string, err error) {
	up.pool.p.metrics.Error(up.key.dir, metric)
	up.cancel(st, http2.ErrCodeProtocol, &up.fl)
	st.failToClient(proxyError{http.StatusBadGateway, "upstream_error", err.Error()}, http2.ErrCodeProtocol, err, &up.fl)
}

func (up *h2Up) maybeCreditConn() {
	if up.connOwed.Load() < h2ConnWindow/4 {
		return
	}
	up.out.mu.Lock()
	up.out.windowLocked(0, up.connOwed.Swap(0))
	up.out.mu.Unlock()
	up.fl.mark(up.out)
}
