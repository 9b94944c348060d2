package tap

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	"github.com/conduitmesh/conduit/pkg/proxy/identity"
)

// ObservePath is the gRPC method the Server handles.
const ObservePath = "/conduit.tap.v1.Tap/Observe"

// DefaultBufferSize is each subscriber's event buffer.
const DefaultBufferSize = 1000

// DefaultBufferBytes bounds the encoded events each subscriber's buffer
// holds: a subscriber that stops reading pins at most this much (plus one
// batch, maxBatchBytes), which matters because the proxy runs its garbage
// collector against a soft memory limit of a few MiB — with gRPC traffic
// its heap goal is about 1 MiB, and 200 KiB held by a stalled subscriber
// made it collect on nearly every request. 48 KiB is about 50 ms of events
// at 1000 requests/s, two batches.
const DefaultBufferBytes = 48 << 10

// maxRequestSize bounds an ObserveRequest.
const maxRequestSize = 64 << 10

// Config configures a Server.
type Config struct {
	// ControllerID is the SPIFFE ID allowed to tap over TLS. Plaintext
	// callers are accepted only from loopback.
	ControllerID string
	// BufferSize is each subscriber's event buffer; 0 means DefaultBufferSize.
	BufferSize int
	// BufferBytes bounds the bytes of the events buffered per subscriber;
	// 0 means DefaultBufferBytes.
	BufferBytes int
	Log         *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// subscriber is one Observe stream.
type subscriber struct {
	match matcher
	ch    chan *event // encoded TapEvents; full means drop
	// queued is the bytes of the events in ch; at or over the server's
	// BufferBytes, new events are dropped.
	queued atomic.Int64
}

// event is one encoded TapEvent, shared by the subscribers it was sent to
// and recycled when the last one has written (or dropped) it, so that a
// tapped proxy makes little garbage.
type event struct {
	b    []byte
	refs atomic.Int32
}

var events = sync.Pool{New: func() any { return &event{b: make([]byte, 0, 512)} }}

func newEvent() *event { return events.Get().(*event) }

// release drops one subscriber's reference.
func (e *event) release() {
	if e.refs.Add(-1) == 0 && cap(e.b) <= 4<<10 {
		events.Put(e)
	}
}

// Server implements Observer and serves Tap.Observe.
type Server struct {
	cfg  Config
	base uint32 // StreamId.base: unique per proxy process

	mu   sync.Mutex                    // serializes subscriber changes
	subs atomic.Pointer[[]*subscriber] // copy-on-write, read on the hot path

	streams atomic.Uint64 // StreamId.stream of the last tapped request
	dropped atomic.Uint64 // events dropped because a subscriber was slow
}

// NewServer returns a server with no subscribers.
func NewServer(cfg Config) *Server {
	if cfg.BufferSize <= 0 {
		cfg.BufferSize = DefaultBufferSize
	}
	if cfg.BufferBytes <= 0 {
		cfg.BufferBytes = DefaultBufferBytes
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	s := &Server{cfg: cfg, base: rand.Uint32()}
	s.subs.Store(&[]*subscriber{})
	return s
}

// Dropped is the number of events dropped for slow subscribers.
func (s *Server) Dropped() uint64 { return s.dropped.Load() }

// Active reports whether anyone is tapping this proxy. The proxy may skip
// observing (and take faster paths) while it is false; Request returns nil
// then anyway.
func (s *Server) Active() bool { return len(*s.subs.Load()) > 0 }

// Subscribers is the number of open Observe streams.
func (s *Server) Subscribers() int { return len(*s.subs.Load()) }

// WriteMetrics writes the tap metrics in the Prometheus text format, for
// the proxy's /metrics page.
func (s *Server) WriteMetrics(w io.Writer) error {
	_, err := fmt.Fprintf(w, "# HELP tap_events_dropped_total Tap events dropped because a subscriber read too slowly.\n"+
		"# TYPE tap_events_dropped_total counter\ntap_events_dropped_total %d\n"+
		"# HELP tap_subscribers Open tap streams.\n# TYPE tap_subscribers gauge\ntap_subscribers %d\n",
		s.Dropped(), s.Subscribers())
	return err
}

func (s *Server) add(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.subs.Load()
	next := append(append(make([]*subscriber, 0, len(old)+1), old...), sub)
	s.subs.Store(&next)
}

func (s *Server) remove(sub *subscriber) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old := *s.subs.Load()
	next := make([]*subscriber, 0, len(old))
	for _, o := range old {
		if o != sub {
			next = append(next, o)
		}
	}
	s.subs.Store(&next)
}

// RequestStarted implements proxy.Observer: it returns nil unless a
// subscriber's match selects the request.
func (s *Server) RequestStarted(info *proxy.Request) proxy.Observation {
	subs := *s.subs.Load()
	if len(subs) == 0 {
		return nil
	}
	r := requests.Get().(*request)
	matched := r.subs[:0]
	for _, sub := range subs {
		if sub.match(info) {
			matched = append(matched, sub)
		}
	}
	if len(matched) == 0 {
		r.subs = matched
		requests.Put(r)
		return nil
	}
	now := s.cfg.Now()
	r.srv, r.subs, r.start = s, matched, now
	r.rsp.Store(0)
	r.common = common{
		src: info.Source, dst: info.Destination, dstLabels: info.DstLabels,
		tls: info.TLS, clientID: info.ClientID, serverID: info.ServerID,
		base: s.base, stream: s.streams.Add(1),
		shared: r.shared[:0],
	}
	switch info.Direction {
	case "inbound":
		r.direction = 1
	case "outbound":
		r.direction = 2
	}
	e := newEvent()
	e.b = r.requestInit(e.b, now, info)
	r.publish(e)
	return r
}

// requests recycles request (and with it its encoding buffer and its
// list of subscribers) once the request has ended.
var requests = sync.Pool{New: func() any { return new(request) }}

// request is one tapped request.
type request struct {
	common
	srv   *Server
	subs  []*subscriber
	start time.Time
	rsp   atomic.Int64 // response start, UnixNano; 0 before Response
}

func (r *request) publish(e *event) {
	e.refs.Store(int32(len(r.subs)))
	n := int64(len(e.b))
	for _, sub := range r.subs {
		if sub.queued.Load() >= int64(r.srv.cfg.BufferBytes) {
			r.srv.dropped.Add(1)
			e.release()
			continue
		}
		select {
		case sub.ch <- e:
			sub.queued.Add(n)
		default:
			r.srv.dropped.Add(1)
			e.release()
		}
	}
}

// ResponseStarted implements proxy.Observation: it publishes the
// response's start.
func (r *request) ResponseStarted(rsp *proxy.Response) {
	now := r.srv.cfg.Now()
	r.rsp.Store(now.UnixNano())
	e := newEvent()
	e.b = r.responseInit(e.b, now, now.Sub(r.start), rsp)
	r.publish(e)
}

// end publishes the response's end: grpcStatus is -1 when the response
// had no grpc-status, resetCode the HTTP/2 RST_STREAM code (0 if none),
// responseBytes the body bytes sent, retries the route's retries. It is
// the request's last call.
func (r *request) end(grpcStatus int, responseBytes int64, resetCode uint32, retries int) {
	now := r.srv.cfg.Now()
	var sinceRsp time.Duration
	if t := r.rsp.Load(); t != 0 {
		sinceRsp = now.Sub(time.Unix(0, t))
	}
	e := newEvent()
	e.b = r.responseEnd(e.b, now, now.Sub(r.start), sinceRsp, responseBytes, grpcStatus, resetCode, retries)
	r.publish(e)
	// End is the last call: the request is done with.
	clear(r.subs)
	r.srv, r.dstLabels = nil, nil
	requests.Put(r)
}

// Handler serves Tap.Observe over HTTP/2 (h2c or TLS).
func (s *Server) Handler() http.Handler { return http.HandlerFunc(s.serveHTTP) }

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if err := grpcwire.CheckRequest(r); err != nil {
		http.Error(w, err.Error(), http.StatusUnsupportedMediaType)
		return
	}
	if r.URL.Path != ObservePath {
		grpcwire.WriteTrailersOnly(w, grpcwire.Unimplemented, "unknown method "+r.URL.Path)
		return
	}
	if err := s.authorize(r); err != nil {
		s.cfg.Log.Warn("tap refused", "remote", r.RemoteAddr, "err", err)
		grpcwire.WriteTrailersOnly(w, grpcwire.PermissionDenied, err.Error())
		return
	}
	msg, err := grpcwire.ReadRequest(r, maxRequestSize)
	if err != nil {
		st := err.(*grpcwire.Status)
		grpcwire.WriteTrailersOnly(w, st.Code, st.Message)
		return
	}
	req, err := decodeObserveRequest(msg)
	if err != nil {
		grpcwire.WriteTrailersOnly(w, grpcwire.InvalidArgument, err.Error())
		return
	}
	sub := &subscriber{match: req.match, ch: make(chan *event, s.cfg.BufferSize)}
	s.add(sub)
	defer s.remove(sub)
	s.cfg.Log.Info("tap started", "remote", r.RemoteAddr)

	if err := grpcwire.StartResponse(w); err != nil {
		return
	}
	code, why := s.stream(r.Context(), w, http.NewResponseController(w), sub, req.limit)
	grpcwire.Finish(w, code, why)
}

// batchDelay is how long the stream lets events gather after the first
// one before writing them: the subscriber's goroutine then wakes and
// flushes at most every batchDelay instead of on every event, which keeps
// tapping from competing with traffic for CPU. It must stay well under the
// time DefaultBufferBytes lasts, or a subscriber that keeps up would drop.
const batchDelay = 20 * time.Millisecond

// maxBatchBytes bounds one write.
const maxBatchBytes = 32 << 10

// stream copies sub's events to w until ctx ends or limit events were sent.
func (s *Server) stream(ctx context.Context, w io.Writer, rc *http.ResponseController, sub *subscriber, limit uint32) (grpcwire.Code, string) {
	var sent uint32
	frame := make([]byte, 0, 4096)
	timer := time.NewTimer(batchDelay)
	timer.Stop()
	defer timer.Stop()
	for {
		var ev *event
		select {
		case <-ctx.Done():
			return grpcwire.OK, ""
		case ev = <-sub.ch:
		}
		// Let more events gather (the buffer keeps them), then take them all.
		timer.Reset(batchDelay)
		select {
		case <-ctx.Done():
			return grpcwire.OK, ""
		case <-timer.C:
		}
		frame = grpcwire.AppendMessage(frame[:0], ev.b)
		sub.queued.Add(-int64(len(ev.b)))
		ev.release()
		sent++
	drain:
		for (limit == 0 || sent < limit) && len(frame) < maxBatchBytes {
			select {
			case ev = <-sub.ch:
				frame = grpcwire.AppendMessage(frame, ev.b)
				sub.queued.Add(-int64(len(ev.b)))
				ev.release()
				sent++
			default:
				break drain
			}
		}
		if _, err := w.Write(frame); err != nil {
			return grpcwire.Internal, err.Error()
		}
		if err := rc.Flush(); err != nil {
			return grpcwire.Internal, err.Error()
		}
		if limit != 0 && sent >= limit {
			return grpcwire.OK, ""
		}
	}
}

// authorize admits the controller's identity over TLS and, in plaintext,
// only loopback callers.
//
// Over TLS the peer's certificate has already been verified: the admin
// listener terminates TLS with the proxy's identity (tlsconf.Provider's
// ServerConfig), which requires a client certificate and refuses the
// handshake unless it chains to the trust anchors and names a SPIFFE ID.
// What is left is to check which identity it names.
func (s *Server) authorize(r *http.Request) error {
	if r.TLS != nil {
		allowed := "only " + s.cfg.ControllerID + " may"
		if s.cfg.ControllerID == "" {
			allowed = "the proxy knows no controller identity (--controller-identity), so only loopback callers may, in plaintext"
		}
		if len(r.TLS.PeerCertificates) == 0 {
			return fmt.Errorf("no client certificate: %s", allowed)
		}
		id := identity.PeerID(r.TLS.PeerCertificates)
		if s.cfg.ControllerID == "" || id != s.cfg.ControllerID {
			who := "identity " + id
			if id == "" {
				who = "a certificate without a SPIFFE ID"
			}
			return fmt.Errorf("%s may not tap this proxy: %s", who, allowed)
		}
		return nil
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return fmt.Errorf("unknown peer address %q", r.RemoteAddr)
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.Unmap().IsLoopback() {
		return fmt.Errorf("plaintext tap is allowed from loopback only, not %s", host)
	}
	return nil
}
