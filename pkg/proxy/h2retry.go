package proxy

import (
	"context"
	"net/http"
	"strconv"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
)

// Retries on the HTTP/2 fast path. A stream its route may retry keeps its
// header block, body (up to routes.MaxReplayBody) and trailers as the
// client sends them. When the upstream answers with a response the route
// retries — a trailers-only gRPC response with a listed grpc-status, or a
// listed HTTP status — before anything of it was passed on, or the
// attempt's timeout passes first, and the whole request has been sent, the
// attempt is dropped (reset upstream unless it ended) and the request sent
// again, from the kept copy, to a newly picked endpoint, while the route's
// limit and retry budget allow. The client is credited once, as the first
// attempt reads its data.
//
// An attempt is the stream's upstream connection (upP) and stream there
// (curUpID); a retry clears curUpID under down.out.mu, so that what the
// dropped attempt's upstream still sends is recognized and dropped, and
// changes attempt under upMu, which the cancellations take.

// h2Retry is the retry state of a stream.
type h2Retry struct {
	or        outRoute
	h         *httpHandler
	authority string
	fields    []hpack.HeaderField // the request's header block, as forwarded
	// body and over are the client reader's until it ends the request
	// (sReqIn): the body kept, or over when it outgrew MaxReplayBody.
	body     []byte
	over     bool
	trailers []hpack.HeaderField
	// Under upMu: the attempts sent, when the current one began, and its
	// timeout's timer.
	tries        int
	attemptStart time.Time
	timer        *time.Timer
}

// keep adds data to the body kept for a replay, until it outgrows
// MaxReplayBody.
func (rty *h2Retry) keep(data []byte) {
	if rty.over {
		return
	}
	if len(rty.body)+len(data) > routes.MaxReplayBody {
		rty.over, rty.body = true, nil
		return
	}
	rty.body = append(rty.body, data...)
}

// contentLength is a request's declared length: 0 when its HEADERS ended
// the stream, -1 when unknown.
func contentLength(f *h2Headers) int64 {
	if f.StreamEnded() {
		return 0
	}
	n := int64(-1)
	for _, hf := range f.Fields {
		if hf.Name == "content-length" {
			var ok bool
			if n, ok = addLength(n, hf.Value); !ok {
				return -1
			}
		}
	}
	return n
}

// addLength folds a content-length field's value into n, the length the
// block's earlier ones declared (-1: none yet); false when it is not a
// number or disagrees with them (a malformed message).
func addLength(n int64, v string) (int64, bool) {
	m, err := strconv.ParseInt(v, 10, 64)
	if err != nil || m < 0 || n >= 0 && m != n {
		return -1, false
	}
	return m, true
}

// startTryTimer begins an attempt's clock (upMu held).
func (st *h2Stream) startTryTimer() {
	rty := st.rty
	rty.attemptStart = time.Now()
	if d := rty.or.tryTimeout; d > 0 {
		gen := rty.tries
		rty.timer = time.AfterFunc(d, func() { st.tryTimedOut(gen) })
	}
}

// replayableLocked reports whether the whole request was read and sent, and
// kept, so that it can be sent again.
func (st *h2Stream) replayableLocked() bool {
	const sent = sReqIn | sReqOut
	return st.bits.Load()&sent == sent && !st.rty.over
}

// retryResponse is called by up's reader with each header block of a
// stream its route may retry (id its stream there); status is 0 for
// trailers. It reports whether
// the reader is done with the block: a late block of a dropped attempt, or
// a response retried. Otherwise it has marked the response's end (end) and
// the reader passes the block on.
func (up *h2Up) retryResponse(st *h2Stream, id uint32, status int, grpcStatus string, end bool) bool {
	rty := st.rty
	gs := ""
	if st.grpc {
		gs = grpcStatus
		if !end {
			gs = "0" // a response with messages: never retried
		}
	}
	st.upMu.Lock()
	defer st.upMu.Unlock()
	if st.curUpID.Load() != id {
		return true
	}
	if status < 200 {
		// Informational, or the trailers of a response passed on.
		if end {
			st.mark(sRespIn)
		}
		return false
	}
	d := st.down
	d.out.mu.Lock()
	retry := false
	if !st.respStarted && !st.respDone {
		if st.replayableLocked() {
			retry = rty.or.mayRetryResponse(rty.tries, status, gs)
		} else if rty.tries > 1 && !rty.or.pol.Retry.Retryable(status, gs) {
			rty.or.retries.Success()
		}
		if retry {
			st.curUpID.Store(0)
		}
	}
	d.out.mu.Unlock()
	if !retry {
		if end {
			st.mark(sRespIn)
		}
		return false
	}
	if end {
		st.mark(sRespIn)
	} else {
		up.cancel(st, http2.ErrCodeCancel, &up.fl)
	}
	st.nextAttemptLocked(status, gs)
	return true
}

// tryTimedOut ends attempt gen when its response has not begun: retried if
// the route allows, else answered as the request timeout would.
func (st *h2Stream) tryTimedOut(gen int) {
	rty := st.rty
	var fl h2Flusher
	defer fl.flush()
	st.upMu.Lock()
	up := st.upstream()
	if rty.tries != gen || up == nil || st.ended.Load() {
		st.upMu.Unlock()
		return
	}
	d := st.down
	d.out.mu.Lock()
	started := st.respStarted || st.respDone
	retry := !started && st.replayableLocked() && rty.or.anotherTry(rty.tries)
	if retry {
		st.curUpID.Store(0)
	}
	d.out.mu.Unlock()
	if started {
		st.upMu.Unlock()
		return
	}
	up.cancel(st, http2.ErrCodeCancel, &fl)
	if retry {
		st.nextAttemptLocked(0, "")
		st.upMu.Unlock()
		return
	}
	st.upMu.Unlock()
	if st.failToClient(errRequestTimeout, http2.ErrCodeCancel, errTimedOut, &fl) {
		d.s.p.metrics.Error(d.s.dir, errRequestTimeout.reason)
	}
}

// nextAttemptLocked forgets the dropped attempt (reset or ended upstream,
// both its halves marked) and sends the next one (upMu held).
func (st *h2Stream) nextAttemptLocked(status int, grpcStatus string) {
	rty := st.rty
	if rty.timer != nil {
		rty.timer.Stop()
		rty.timer = nil
	}
	st.rt.finished(time.Since(rty.attemptStart), true, status, grpcStatus)
	st.upP.Store(nil)
	st.bits.And(^(sReqOut | sRespIn))
	go st.redispatch()
}

// redispatch sends the next attempt of a retried stream to an endpoint
// picked again (it may dial, so it runs on its own goroutine).
func (st *h2Stream) redispatch() {
	rty := st.rty
	d := st.down
	p := d.s.p
	var fl h2Flusher
	defer fl.flush()
	rt, perr := rty.h.route(context.Background(), d.info, rty.authority, &rty.or)
	if perr != nil {
		st.failToClient(*perr, http2.ErrCodeCancel, nil, &fl)
		return
	}
	key := p.keyFor(d.s.dir, rt.ep, rt.dst, true)
	for range 2 {
		up, err := p.h2Ups.get(key, rt.ep)
		if err != nil {
			st.failToClient(dialProxyError(err), http2.ErrCodeCancel, err, &fl)
			return
		}
		st.upMu.Lock()
		d.out.mu.Lock()
		gone := st.respDone
		d.out.mu.Unlock()
		if gone || st.ended.Load() {
			st.upMu.Unlock()
			st.mark(sReqOut | sRespIn)
			return
		}
		st.rt = rt
		if up.reopen(st, &fl) {
			rty.tries++
			st.startTryTimer()
			st.upMu.Unlock()
			return
		}
		st.upMu.Unlock()
	}
	// Connections that went away as the stream was opened.
	st.failToClient(proxyError{http.StatusServiceUnavailable, "upstream_error", "upstream connection closing"}, http2.ErrCodeCancel, nil, &fl)
}
