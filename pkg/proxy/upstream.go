package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
)

// maxUpstreams bounds the cached per-endpoint clients; idle ones beyond it
// are dropped (transparent mode can see many original destinations).
const maxUpstreams = 512

// upstreams caches one HTTP client (connection pool + reverse proxy) per
// endpoint, identity, protocol and direction.
type upstreams struct {
	p  *Proxy
	mu sync.Mutex // guards m
	m  map[upKey]*upstream
}

type upKey struct {
	dir, addr, identity, dst string
	h2                       bool
}

type upstream struct {
	key  upKey
	tr   *http.Transport
	rp   *httputil.ReverseProxy
	used time.Time // guarded by upstreams.mu
}

func newUpstreams(p *Proxy) *upstreams {
	return &upstreams{p: p, m: map[upKey]*upstream{}}
}

// keyFor is the pool key of connections to ep: its identity is part of it
// when the connection is mutual TLS.
func (p *Proxy) keyFor(dir string, ep resolve.Endpoint, dst string, h2 bool) upKey {
	k := upKey{dir: dir, addr: ep.Addr, dst: dst, h2: h2}
	if p.tlsFor(ep) {
		k.identity = ep.Identity
	}
	return k
}

// get returns the HTTP client for an endpoint.
func (u *upstreams) get(dir string, ep resolve.Endpoint, dst string, h2 bool) *upstream {
	k := u.p.keyFor(dir, ep, dst, h2)
	now := time.Now()
	u.mu.Lock()
	defer u.mu.Unlock()
	if up, ok := u.m[k]; ok {
		up.used = now
		return up
	}
	if len(u.m) >= maxUpstreams {
		for key, up := range u.m {
			if now.Sub(up.used) > time.Minute {
				up.tr.CloseIdleConnections()
				delete(u.m, key)
			}
		}
	}
	up := u.newUpstream(k, ep)
	up.used = now
	u.m[k] = up
	return up
}

func (u *upstreams) closeIdle() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for _, up := range u.m {
		up.tr.CloseIdleConnections()
	}
}

func (u *upstreams) newUpstream(k upKey, ep resolve.Endpoint) *upstream {
	p := u.p
	var protos http.Protocols
	if k.h2 {
		protos.SetUnencryptedHTTP2(true)
	} else {
		protos.SetHTTP1(true)
	}
	dialEP := resolve.Endpoint{Addr: k.addr, Identity: k.identity, Labels: ep.Labels}
	tr := &http.Transport{
		Proxy: nil, // never an environment proxy
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			ctx, cancel := context.WithTimeout(ctx, p.cfg.ConnectTimeout)
			defer cancel()
			c, err := p.ups.dialLabeled(ctx, k.dir, dialEP, k.dst)
			if err != nil {
				return c, err
			}
			if k.h2 {
				// Keeps from net/http's HTTP/2 client the frame that
				// deadlocks it (h2flowguard.go).
				return newH2FlowGuard(c), nil
			}
			// The Transport reads only responses the fast path would
			// accept, and reuses no connection past a doubtful one.
			return newH1Guard(c, false, p.cfg.MaxHeaderBytes+4096), nil
		},
		Protocols:              &protos,
		DisableCompression:     true,
		MaxIdleConnsPerHost:    32,
		IdleConnTimeout:        p.cfg.IdleTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: int64(p.cfg.MaxHeaderBytes),
		WriteBufferSize:        4 << 10,
		ReadBufferSize:         4 << 10,
		HTTP2: &http.HTTP2Config{
			MaxReceiveBufferPerConnection: 1 << 20,
			MaxReceiveBufferPerStream:     256 << 10,
		},
	}
	addr := k.addr
	up := &upstream{key: k, tr: tr}
	up.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			pr.Out.URL.Host = addr
			// A transparent proxy keeps the client's forwarding headers
			// (ReverseProxy drops them before Rewrite) and adds none.
			for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
				if v, ok := pr.In.Header[h]; ok {
					pr.Out.Header[h] = v
				}
			}
			if _, ok := pr.In.Header["User-Agent"]; !ok {
				pr.Out.Header["User-Agent"] = nil // don't add Go's default
			}
		},
		Transport: up, // the retries of a route with a retry policy
		// ReverseProxy flushes every write of a streamed response (unknown
		// length: gRPC, SSE, chunked). Zero here keeps a bodiless response
		// whole: a gRPC trailers-only response must leave as one HEADERS
		// frame with END_STREAM, which a header flush would split.
		FlushInterval: 0,
		BufferPool:    p.bufs,
		ErrorLog:      log.New(slogWriter{p.log.With("direction", k.dir)}, "", 0),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			p.upstreamError(w, r, k.dir, err)
		},
		ModifyResponse: endRequestWithResponse,
	}
	return up
}

// outRouteKey carries the route of a request whose rule or backend
// modifies the response's header to endRequestWithResponse.
type outRouteKey struct{}

// inboundBodyKey carries an HTTP/2 request's body to endRequestWithResponse.
type inboundBodyKey struct{}

// endRequestWithResponse stops forwarding an HTTP/2 request body once the
// upstream has ended its response: a gRPC server may answer with its
// status while the client is still streaming, and the transport would
// otherwise wait for the client's next message before letting the response
// (and its trailers) finish.
func endRequestWithResponse(res *http.Response) error {
	if or, ok := res.Request.Context().Value(outRouteKey{}).(*outRoute); ok {
		or.modifyResponse(routes.HTTPHeader(res.Header))
	}
	in, ok := res.Request.Context().Value(inboundBodyKey{}).(io.Closer)
	if !ok {
		return nil
	}
	if res.Body == nil || res.Body == http.NoBody {
		in.Close()
		return nil
	}
	res.Body = &endOfBody{ReadCloser: res.Body, onEnd: func() { in.Close() }}
	return nil
}

// endOfBody calls onEnd once, at EOF or Close, whichever comes first.
type endOfBody struct {
	io.ReadCloser
	once  sync.Once
	onEnd func()
}

func (b *endOfBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.once.Do(b.onEnd)
	}
	return n, err
}

func (b *endOfBody) Close() error {
	b.once.Do(b.onEnd)
	return b.ReadCloser.Close()
}

// dial opens a connection to an endpoint for opaque traffic.
func (u *upstreams) dial(ctx context.Context, dir string, ep resolve.Endpoint) (net.Conn, error) {
	return u.dialLabeled(ctx, dir, ep, metrics.DstLabels(ep.Labels))
}

// dialLabeled dials ep, counts the connection as peer="dst", and wraps it
// in mTLS when ep is a meshed peer and the proxy has an identity.
func (u *upstreams) dialLabeled(ctx context.Context, dir string, ep resolve.Endpoint, dst string) (net.Conn, error) {
	p := u.p
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", ep.Addr)
	if err != nil {
		return nil, err
	}
	useTLS := p.tlsFor(ep)
	l := metrics.TCPLabels{Direction: dir, Peer: "dst", TargetAddr: ep.Addr, TLS: useTLS, Dst: dst}
	if useTLS {
		l.ServerID = ep.Identity
	}
	mc := newMeteredConn(c)
	mc.attach(p.metrics.TCP(l))
	if !useTLS {
		return mc, nil
	}
	return p.originateTLS(ctx, mc, ep.Identity)
}

// dialErrorReason is the metric label for a failed connect.
func dialErrorReason(err error) string {
	var te *tlsError
	var ne net.Error
	switch {
	case errors.As(err, &te):
		return "tls_handshake"
	case isRefused(err):
		return "connect_refused"
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "connect_timeout"
	}
	return "connect_error"
}

// resolve asks the resolver for an authority's endpoints; with no resolver
// nothing is known. With now it does not wait for a first answer
// (resolve.NowResolver): resolve.ErrPending while one is awaited.
func (p *Proxy) resolve(ctx context.Context, authority string, now bool) ([]resolve.Endpoint, error) {
	if p.cfg.Resolver == nil {
		return nil, resolve.ErrNotFound
	}
	var nr resolve.NowResolver
	if now {
		nr, _ = p.cfg.Resolver.(resolve.NowResolver)
	}
	var eps []resolve.Endpoint
	var err error
	if nr != nil {
		eps, err = nr.EndpointsNow(authority)
	} else {
		eps, err = p.cfg.Resolver.Endpoints(ctx, authority)
	}
	if err != nil && !errors.Is(err, resolve.ErrNotFound) {
		return nil, fmt.Errorf("resolving %s: %w", authority, err)
	}
	return eps, err
}

// awaitEndpoints waits for authority, known without a ready endpoint, to
// gain one: for FailFastTimeout, or limit (the route's request timeout)
// when it is shorter and positive, or until ctx ends. It returns nil when
// one came, else what to answer: 504 request timeout when the route's
// timeout ended the wait (the request's own timer ends at the same moment
// and says the same), 503 no endpoints available otherwise. A static
// resolver's sets never change, so it never waits for them.
func (p *Proxy) awaitEndpoints(ctx context.Context, authority string, limit time.Duration) *proxyError {
	if !p.awaits() {
		return &errNoEndpoints
	}
	wait, perr := p.cfg.FailFastTimeout, &errNoEndpoints
	if limit > 0 && limit < wait {
		wait, perr = limit, &errRequestTimeout
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	defer cancel()
	m := p.metrics.Await(authority)
	m.Start()
	start := time.Now()
	eps, err := p.cfg.Resolver.(resolve.Awaiter).AwaitEndpoints(wctx, authority)
	waited := time.Since(start)
	got := err == nil && len(eps) > 0
	p.log.Debug("waited for an endpoint", "authority", authority, "found", got, "waited", waited)
	switch {
	case got:
		m.Done(metrics.AwaitReady, waited)
		return nil
	case errors.Is(context.Cause(ctx), errTimedOut) || errors.Is(ctx.Err(), context.DeadlineExceeded):
		m.Done(metrics.AwaitTimeout, waited) // the request's own timer, which answers it
		return &errNoEndpoints
	case ctx.Err() != nil:
		m.Done(metrics.AwaitCanceled, waited)
		return &errNoEndpoints // the request ended first (its client went away)
	case perr == &errRequestTimeout:
		m.Done(metrics.AwaitTimeout, waited)
	default:
		m.Done(metrics.AwaitNoEndpoints, waited)
	}
	return perr
}

// awaits reports whether a request for a Service without a ready endpoint
// waits for one (awaitEndpoints).
func (p *Proxy) awaits() bool {
	_, ok := p.cfg.Resolver.(resolve.Awaiter)
	return ok && p.cfg.FailFastTimeout > 0
}

// canonicalAuthority lowercases host:port and adds the default port. The
// usual forms (name:port, a name without a port) take no more than the
// port's concatenation: no SplitHostPort error is made per request.
func canonicalAuthority(host, defaultPort string) string {
	if host == "" {
		return ""
	}
	host = strings.ToLower(host)
	if i := strings.LastIndexByte(host, ':'); i < 0 {
		return host + ":" + defaultPort
	} else if strings.IndexByte(host, ':') == i && strings.IndexAny(host, "[]") < 0 {
		return host // name:port, as SplitHostPort would accept it
	}
	if _, _, err := net.SplitHostPort(host); err == nil {
		return host
	}
	if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		return host + ":" + defaultPort
	}
	return net.JoinHostPort(host, defaultPort)
}
