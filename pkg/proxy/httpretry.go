package proxy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// Retries on net/http's path: the request's body is kept while it is
// forwarded (up to routes.MaxReplayBody), and the upstream's RoundTrip
// (retryKey in the request's context) sends it again to a newly picked
// endpoint when the response is one the route retries — before anything of
// it reached the client — or the attempt timed out, while the route's
// limit and budget allow.

// retryKey carries a request's *httpRetry to the upstream's RoundTrip.
type retryKey struct{}

// httpRetry is the retry state of one request.
type httpRetry struct {
	h         *httpHandler
	info      *connInfo
	authority string
	or        *outRoute
	rt        *route      // the current attempt's endpoint
	body      *replayBody // nil without a body
	grpc, h2  bool
	tries     int
}

// errTryTimedOut ends an attempt its per-try timeout cut short.
var errTryTimedOut = errors.New("attempt timed out")

// RoundTrip sends an outbound request to the upstream, with the retries
// its route allows.
func (u *upstream) RoundTrip(req *http.Request) (*http.Response, error) {
	rs, _ := req.Context().Value(retryKey{}).(*httpRetry)
	if rs == nil {
		return u.tr.RoundTrip(req)
	}
	return rs.roundTrip(u, req)
}

func (rs *httpRetry) roundTrip(u *upstream, req *http.Request) (*http.Response, error) {
	p := rs.h.p
	tr := u.tr
	for {
		rs.tries++
		out := req
		if rs.tries > 1 {
			out = req.Clone(req.Context())
			out.URL.Host = rs.rt.ep.Addr
			out.Body = nil
			if rs.body != nil {
				out.Body = rs.body.replay()
			}
		}
		start := time.Now()
		resp, err := rs.try(tr, out)
		status, grpcStatus := 0, ""
		switch {
		case err == nil:
			status = resp.StatusCode
			if rs.grpc {
				grpcStatus = resp.Header.Get("Grpc-Status")
			}
			if !rs.or.mayRetryResponse(rs.tries, status, grpcStatus) || !rs.replayable() {
				return resp, nil
			}
		case errors.Is(err, errTryTimedOut) && req.Context().Err() == nil:
			if !rs.replayable() || !rs.or.anotherTry(rs.tries) {
				return nil, err
			}
		default:
			return nil, err
		}
		// Another attempt, on an endpoint picked again.
		rs.rt.finished(time.Since(start), true, status, grpcStatus)
		rt, perr := rs.h.route(req.Context(), rs.info, rs.authority, rs.or)
		if perr != nil {
			if resp != nil {
				return resp, nil
			}
			return nil, err
		}
		if resp != nil {
			resp.Body.Close()
		}
		*rs.rt = rt
		tr = p.ups.get(rs.h.dir, rt.ep, rt.dst, rs.h2).tr
	}
}

// try is one attempt, bounded by the per-try timeout until the response's
// header arrives.
func (rs *httpRetry) try(tr *http.Transport, req *http.Request) (*http.Response, error) {
	d := rs.or.tryTimeout
	if d <= 0 {
		return tr.RoundTrip(req)
	}
	ctx, cancel := context.WithCancelCause(req.Context())
	t := time.AfterFunc(d, func() { cancel(errTryTimedOut) })
	resp, err := tr.RoundTrip(req.WithContext(ctx))
	if !t.Stop() && context.Cause(ctx) == errTryTimedOut {
		if err == nil {
			resp.Body.Close()
		}
		cancel(nil)
		return nil, fmt.Errorf("%w after %v: %w", errTryTimedOut, d, errTimedOut)
	}
	if err != nil {
		cancel(nil)
		return nil, err
	}
	resp.Body = &endOfBody{ReadCloser: resp.Body, onEnd: func() { cancel(nil) }}
	return resp, nil
}

// replayable reports whether the request's body was read whole and kept.
func (rs *httpRetry) replayable() bool { return rs.body == nil || rs.body.complete.Load() }

// replayBody keeps what is read of a request body, up to max bytes.
type replayBody struct {
	io.ReadCloser
	max      int
	buf      []byte
	over     bool        // the body is longer than max: not kept
	complete atomic.Bool // read to its end and kept whole
}

func (b *replayBody) Read(p []byte) (int, error) {
	if b.complete.Load() {
		return 0, io.EOF
	}
	n, err := b.ReadCloser.Read(p)
	if !b.over && !b.complete.Load() { // (nothing is kept past the end)
		if len(b.buf)+n > b.max {
			b.over, b.buf = true, nil
		} else {
			b.buf = append(b.buf, p[:n]...)
		}
	}
	if err == io.EOF && !b.over {
		b.complete.Store(true)
	}
	return n, err
}

// replay is the kept body, to send again.
func (b *replayBody) replay() io.ReadCloser { return io.NopCloser(bytes.NewReader(b.buf)) }
