package proxy

import (
	"context"
	"errors"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/detect"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
	"github.com/conduitmesh/conduit/pkg/proxy/origdst"
	"github.com/conduitmesh/conduit/pkg/proxy/tlsconf"
)

var errServerClosed = http.ErrServerClosed

// side is one traffic listener (inbound or outbound) with the HTTP server
// that serves its connections once they are classified as HTTP.
type side struct {
	p   *Proxy
	dir string
	// h routes and forwards the side's requests on every HTTP path; it
	// holds no per-request state, so one serves them all.
	h   *httpHandler
	ln  net.Listener
	srv *http.Server
	// httpLn feeds classified connections to srv.
	httpLn *chanListener
	// conns and requests cap open connections and in-flight requests
	// (limits.go); shedLogged is when shedding was last logged.
	conns, requests limiter
	shedLogged      atomic.Int64
}

func (p *Proxy) newSide(dir, addr string) (*side, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", dir, err)
	}
	s := &side{p: p, dir: dir, h: &httpHandler{p: p, dir: dir}, ln: ln, httpLn: newChanListener(ln.Addr())}
	s.conns.max, s.requests.max = int64(p.cfg.MaxConnections), int64(p.cfg.MaxRequests)
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	s.srv = &http.Server{
		Handler:           guard{s: s, next: s.h},
		ReadHeaderTimeout: p.cfg.HeaderReadTimeout,
		IdleTimeout:       p.cfg.IdleTimeout,
		MaxHeaderBytes:    p.cfg.MaxHeaderBytes,
		Protocols:         &protos,
		// Explicit HTTP/2 bounds (see h2abuse_test.go): 100 streams per
		// connection (also the handlers the rapid-reset mitigation lets
		// run), 16 KiB frames instead of net/http's 1 MiB read buffer,
		// 4 KiB HPACK tables; header lists are bounded by MaxHeaderBytes.
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          100,
			MaxReadFrameSize:              16 << 10,
			MaxDecoderHeaderTableSize:     4 << 10,
			MaxEncoderHeaderTableSize:     4 << 10,
			MaxReceiveBufferPerConnection: 1 << 20,
			MaxReceiveBufferPerStream:     256 << 10,
			CountError:                    func(errType string) { p.metrics.Error(dir, "h2_"+errType) },
		},
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			if sc, ok := c.(*servedConn); ok {
				sc.info.conn = sc
				return context.WithValue(ctx, connInfoKey{}, sc.info)
			}
			return ctx
		},
		ErrorLog: log.New(slogWriter{p.log.With("direction", dir)}, "", 0),
	}
	return s, nil
}

func (s *side) serveHTTP() {
	if err := s.srv.Serve(s.httpLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
		s.p.log.Error("http server stopped", "direction", s.dir, "err", err)
	}
}

// acceptLoop accepts until the listener is closed.
func (p *Proxy) acceptLoop(s *side) error {
	var delay time.Duration
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if p.draining.Load() || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Temporary failures (EMFILE, ...): back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			p.log.Warn("accept failed", "direction", s.dir, "err", err, "retry_in", delay)
			p.metrics.Error(s.dir, "accept")
			time.Sleep(delay)
			continue
		}
		delay = 0
		if !s.conns.acquire() {
			// At the cap: reset at once, before any work or buffer.
			s.shed("connection_limit")
			abort(c)
			c.Close()
			continue
		}
		mc := newMeteredConn(c)
		mc.onClose = func(mc *meteredConn) {
			s.conns.release()
			p.untrack(mc)
		}
		p.track(mc)
		p.handoffs.Add(1)
		go s.handle(mc)
	}
}

// handle classifies one accepted connection and serves it.
func (s *side) handle(mc *meteredConn) {
	p := s.p
	handedOff := false
	defer func() {
		if !handedOff {
			p.handoffs.Done()
		}
		// A bug met while serving one connection closes that connection.
		if v := recover(); v != nil {
			p.recovered(s.dir, v)
			mc.Close()
		}
	}()
	done := func() {
		handedOff = true
		p.handoffs.Done()
	}
	info := &connInfo{dir: s.dir}
	if ra, ok := mc.RemoteAddr().(*net.TCPAddr); ok {
		info.remote = ra.AddrPort()
	}
	if od, err := origdst.Get(mc.Conn); err == nil {
		info.origDst = od
	} else if !errors.Is(err, origdst.ErrNotRedirected) {
		p.log.Debug("reading original destination", "err", err)
	}
	if s.dir == Inbound {
		info.target = p.cfg.InboundTarget
		if info.target == "" && info.origDst.IsValid() {
			info.target = info.origDst.String()
		}
	}
	mc.fallback = func() *metrics.TCP { return p.metrics.TCP(s.tcpLabels(info)) }
	key := s.opaqueKey(info)
	info.port = key.Port()

	if p.isOpaquePort(key) || p.policy(info).Protocol() == authz.ProtocolOpaque {
		s.handleOpaque(mc, info, done)
		return
	}

	prefix, res, err := s.peek(mc, mc, p.cfg.DetectTimeout, make([]byte, 0, 512))
	if err != nil {
		p.log.Debug("connection failed before its first byte", "direction", s.dir, "err", err)
		mc.Close()
		return
	}
	var conn net.Conn = mc
	if res.Protocol == detect.TLS && s.dir == Inbound && p.cfg.TLS != nil && slices.Contains(res.ALPN, tlsconf.ALPN) {
		tc, id, err := p.terminateTLS(&servedConn{Conn: mc, prefix: prefix})
		if err != nil {
			p.log.Info("mTLS handshake from a meshed peer failed", "remote", info.remote, "err", err)
			p.metrics.Error(s.dir, "tls_handshake")
			mc.Close()
			return
		}
		info.tls, info.clientID = true, id
		conn = tc
		prefix, res, err = s.peek(mc, tc, p.cfg.DetectTimeout, make([]byte, 0, 512))
		if err != nil {
			mc.Close()
			return
		}
		if res.Protocol == detect.TLS {
			res.Protocol = detect.Opaque // TLS inside mTLS is the application's own
		}
	}
	srv := p.policy(info)
	declared := srv.Protocol()
	if declared.HTTP() && detect.Classify(prefix).Protocol == detect.Unknown {
		// A port whose Server declares HTTP waits for its request as an
		// HTTP server does (a client may connect ahead of it), not the
		// detect timeout only.
		prefix, res, err = s.peek(mc, conn, p.cfg.IdleTimeout, prefix)
		if err != nil || len(prefix) == 0 {
			mc.Close() // nothing sent: no request to refuse (a TCP probe)
			return
		}
	}
	mc.attach(p.metrics.TCP(s.tcpLabels(info)))
	sc := &servedConn{Conn: conn, prefix: prefix, info: info}
	p.log.Debug("connection classified", "direction", s.dir, "protocol", res.Protocol, "remote", info.remote, "tls", info.tls)
	switch {
	case res.Protocol == detect.HTTP1 && !p.cfg.DisableFastPath:
		done()
		sc.stall = p.cfg.BodyIdleTimeout
		sc.onStall = func() { p.metrics.Error(s.dir, "body_timeout") }
		s.serveFast(sc)
	case res.Protocol == detect.HTTP2 && !p.cfg.DisableFastPath:
		done()
		s.serveH2(sc)
	case res.Protocol == detect.HTTP1, res.Protocol == detect.HTTP2:
		var c net.Conn = sc
		if res.Protocol == detect.HTTP1 {
			c = s.guardH1(sc) // net/http reads only what the fast path would accept
		}
		if s.httpLn.hand(c) {
			done()
		}
	default:
		if declared.HTTP() {
			p.refuseNotHTTP(sc, info, srv, res)
			mc.Close()
			return
		}
		if !p.admitConn(info) {
			mc.Close()
			return
		}
		done()
		p.serveOpaqueTLSAware(s.dir, sc, res)
	}
}

// opaqueMTLSWait is how long an inbound connection to an opaque port may
// take to start a mesh TLS handshake. A meshed client's proxy speaks first
// (its ClientHello) even when the application protocol is server-first, so
// the wait ends at once for meshed clients; an unmeshed client of a
// server-first protocol waits this long for the server's first bytes.
const opaqueMTLSWait = 100 * time.Millisecond

// peek waits up to timeout (drainDetectTimeout once the proxy drains) for
// conn's first bytes, read over mc, and classifies them (detect.Peek); a
// drain that begins meanwhile cuts the wait short.
func (s *side) peek(mc *meteredConn, conn net.Conn, timeout time.Duration, buf []byte) ([]byte, detect.Result, error) {
	if s.p.draining.Load() {
		timeout = drainDetectTimeout
	}
	mc.detecting.Store(true)
	defer mc.detecting.Store(false)
	return detect.Peek(conn, timeout, buf)
}

// handleOpaque serves a connection to an opaque port: no protocol
// detection, but, inbound, the mesh TLS of a meshed client is terminated
// so that the application gets its own bytes and the policy knows the
// client's identity.
func (s *side) handleOpaque(mc *meteredConn, info *connInfo, done func()) {
	p := s.p
	sc := &servedConn{Conn: mc, info: info}
	if s.dir == Inbound && p.cfg.TLS != nil {
		prefix, res, err := detect.Peek(mc, opaqueMTLSWait, make([]byte, 0, 512))
		if err != nil {
			mc.Close()
			return
		}
		sc.prefix = prefix
		if res.Protocol == detect.TLS && slices.Contains(res.ALPN, tlsconf.ALPN) {
			tc, id, err := p.terminateTLS(sc)
			if err != nil {
				p.log.Info("mTLS handshake from a meshed peer failed", "remote", info.remote, "err", err)
				p.metrics.Error(s.dir, "tls_handshake")
				mc.Close()
				return
			}
			info.tls, info.clientID = true, id
			sc = &servedConn{Conn: tc, info: info}
		}
	}
	mc.attach(p.metrics.TCP(s.tcpLabels(info)))
	if !p.admitConn(info) {
		mc.Close()
		return
	}
	done()
	p.serveOpaque(s.dir, sc)
}

func (s *side) opaqueKey(info *connInfo) netip.AddrPort {
	if info.origDst.IsValid() {
		return info.origDst
	}
	if s.dir == Inbound && info.target != "" {
		if ap, err := netip.ParseAddrPort(info.target); err == nil {
			return ap
		}
		if _, port, err := net.SplitHostPort(info.target); err == nil {
			if ap, err := netip.ParseAddrPort("0.0.0.0:" + port); err == nil {
				return ap
			}
		}
	}
	return netip.AddrPort{}
}

func (s *side) tcpLabels(info *connInfo) metrics.TCPLabels {
	l := metrics.TCPLabels{Direction: s.dir, Peer: "src", TLS: info.tls, ClientID: info.clientID}
	if info.target != "" {
		l.TargetAddr = info.target
	} else if info.origDst.IsValid() {
		l.TargetAddr = info.origDst.String()
	}
	return l
}

// chanListener hands classified connections to an http.Server.
type chanListener struct {
	addr net.Addr
	ch   chan net.Conn
	done chan struct{}
	once sync.Once
}

func newChanListener(addr net.Addr) *chanListener {
	return &chanListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

// hand gives c to the server; false (and c closed) if the server is gone.
// The fast path's deadlines do not follow the connection.
func (l *chanListener) hand(c net.Conn) bool {
	c.SetDeadline(time.Time{})
	select {
	case l.ch <- c:
		return true
	case <-l.done:
		c.Close()
		return false
	}
}

func (l *chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *chanListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *chanListener) Addr() net.Addr { return l.addr }

// slogWriter routes net/http's internal log lines to slog at debug level.
type slogWriter struct{ log *slog.Logger }

func (w slogWriter) Write(b []byte) (int, error) {
	w.log.Debug("http server", "msg", string(trimNewline(b)))
	return len(b), nil
}

func trimNewline(b []byte) []byte {
	for len(b) > 0 && (b[len(b)-1] == '\n' || b[len(b)-1] == '\r') {
		b = b[:len(b)-1]
	}
	return b
}
