// Package proxy is Conduit's data plane: an inbound listener in front of the
// pod's application, an outbound listener for the application's own
// requests, and an admin listener. Each accepted connection is classified
// (pkg/proxy/detect) and then served as HTTP/1.1, HTTP/2 (h2c, gRPC),
// proxy-to-proxy mTLS (terminated, then classified again) or opaque TCP.
//
// Construct a Proxy with New (it binds the listeners, so port 0 works in
// tests) and call Run; cancelling Run's context drains: the listeners close,
// in-flight requests finish within Config.ShutdownGrace, then Run returns.
//
//	p, err := proxy.New(proxy.Config{InboundAddr: "127.0.0.1:0", InboundTarget: "127.0.0.1:8080", ...})
//	go p.Run(ctx)
//	fmt.Println(p.InboundAddr(), p.AdminAddr())
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/balance"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"github.com/conduitmesh/conduit/pkg/proxy/retry"
	"github.com/conduitmesh/conduit/pkg/proxy/tlsconf"
)

// DefaultOpaquePorts are server-speaks-first protocols: the proxy does not
// wait for the client's first bytes on them (SMTP, MySQL, Galera, PostgreSQL,
// Redis, Elasticsearch transport, memcached, MongoDB).
var DefaultOpaquePorts = []uint16{25, 587, 3306, 4444, 5432, 6379, 9300, 11211, 27017}

// Config is everything a Proxy needs. Zero durations and sizes take the
// defaults below; an empty listener address disables that listener.
type Config struct {
	InboundAddr  string // e.g. 0.0.0.0:4143
	OutboundAddr string // e.g. 127.0.0.1:4140
	AdminAddr    string // e.g. 0.0.0.0:4191

	// InboundTarget, when set, receives all inbound traffic (explicit mode);
	// otherwise the inbound side forwards to each connection's original
	// destination (SO_ORIGINAL_DST).
	InboundTarget string
	// Resolver maps outbound authorities to endpoints; nil resolves nothing,
	// so outbound traffic goes to its original destination only.
	Resolver resolve.Resolver
	// TLS is the proxy's identity; nil means plaintext only.
	TLS tlsconf.Provider
	// ControllerID is the controller's SPIFFE ID: over mTLS on the admin
	// port only it may POST /shutdown or PUT /log-level (in plaintext only
	// loopback callers may). Empty: no TLS caller may.
	ControllerID string
	// OpaquePorts are skipped by protocol detection in addition to
	// DefaultOpaquePorts.
	OpaquePorts []uint16

	DetectTimeout  time.Duration // default 10s; on timeout the connection is opaque
	ConnectTimeout time.Duration // default 1s
	// FailFastTimeout is how long an outbound request (or opaque
	// connection) waits for an endpoint of a Service that discovery knows
	// without a ready one, before it is answered 503 no endpoints available
	// (gRPC UNAVAILABLE) or closed; default 3s, negative: no wait. The
	// route's request timeout, when shorter, bounds it.
	FailFastTimeout   time.Duration
	HeaderReadTimeout time.Duration // default 10s (slow clients are closed)
	IdleTimeout       time.Duration // default 90s for idle keep-alive connections
	ShutdownGrace     time.Duration // default 20s
	MaxHeaderBytes    int           // default 64 KiB; larger request headers get 431
	// BodyIdleTimeout aborts a request body the client stops sending, or a
	// response it stops reading, for this long (default 60s).
	BodyIdleTimeout time.Duration

	// MaxConnections and MaxRequests cap each traffic listener's open
	// connections (past it a new connection is reset at once) and
	// in-flight HTTP requests (past it a request gets 503, unforwarded).
	// Zero derives them from MaxMemory, or takes 10000 each without it.
	MaxConnections int
	MaxRequests    int
	// MaxMemory, when positive, is the memory the process must stay under
	// (e.g. its container's limit): the caps above are derived from it and
	// the soft memory limit never grows past it.
	MaxMemory int64

	Logger *slog.Logger // default: discard
	// LogLevel backs GET/PUT /log-level; nil makes the level read-only info.
	LogLevel *slog.LevelVar
	// Observer sees every HTTP request (the tap seam); nil costs nothing,
	// and requests are not even described to it while its Active reports
	// false. Observed HTTP/1.1 requests stay on the fast path, which
	// describes them as fields rather than an http.Header.
	Observer Observer
	// Policy is the inbound authorization policy of each port; nil admits
	// every client (no policy is enforced).
	Policy *authz.Store
	// Routes gives the outbound route table of each authority (HTTPRoutes
	// and GRPCRoutes: traffic split, header modifiers, redirects; a
	// *route.Store); nil routes nothing: every outbound request goes to its
	// authority. A request whose rule matches is sent to its backend's
	// authority (resolved and balanced; its own Host or :authority is kept),
	// answered with the rule's redirect, or answered 500 (gRPC INTERNAL)
	// when the backend is invalid. The rule's (else the Service's) request
	// timeout, or its shorter backend request timeout, answers 504 (gRPC
	// DEADLINE_EXCEEDED) or cuts a begun response, counted as
	// request_timeout. Header modifiers and timeouts apply on net/http's
	// path and the HTTP/2 fast path; the HTTP/1.1 fast path hands a request
	// whose rule or backend modifies headers, or that has a timeout (and
	// its connection), to net/http's path.
	Routes RouteSource
	// MemoryLimit, when positive, is the Go runtime's soft memory limit with
	// no connections open; the proxy raises it by MemoryPerConnection for
	// every open connection (in steps of 8 connections) so that a busy proxy
	// gets headroom instead of a thrashing GC. It is process-wide state:
	// set it in one Proxy per process.
	MemoryLimit         int64
	MemoryPerConnection int64 // default 64 KiB

	// AdminRoutes are extra handlers on the admin listener, by ServeMux
	// pattern (e.g. the tap gRPC method); the admin listener speaks
	// HTTP/1.1 and h2c, and HTTP/2 over mTLS with the proxy's identity
	// (TLS), so gRPC handlers work there.
	AdminRoutes map[string]http.Handler
	// ExtraMetrics are appended to /metrics (e.g. tap's counters).
	ExtraMetrics []func(io.Writer) error

	// DisableFastPath sends HTTP/1.1 through net/http's server and
	// ReverseProxy even for plain keep-alive requests (slower, more memory).
	DisableFastPath bool
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&c.DetectTimeout, 10*time.Second)
	def(&c.ConnectTimeout, time.Second)
	if c.FailFastTimeout == 0 {
		c.FailFastTimeout = 3 * time.Second
	}
	def(&c.HeaderReadTimeout, 10*time.Second)
	def(&c.IdleTimeout, 90*time.Second)
	def(&c.ShutdownGrace, 20*time.Second)
	if c.MemoryPerConnection <= 0 {
		c.MemoryPerConnection = 64 << 10
	}
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = 64 << 10
	}
	def(&c.BodyIdleTimeout, 60*time.Second)
	conns, reqs := defaultMaxConnections, defaultMaxRequests
	if c.MaxMemory > 0 {
		n := 0
		for _, a := range []string{c.InboundAddr, c.OutboundAddr} {
			if a != "" {
				n++
			}
		}
		conns, reqs = deriveCaps(c.MaxMemory, n)
	}
	if c.MaxConnections <= 0 {
		c.MaxConnections = conns
	}
	if c.MaxRequests <= 0 {
		c.MaxRequests = reqs
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.LogLevel == nil {
		c.LogLevel = new(slog.LevelVar)
	}
}

// Proxy is a running data plane. Create it with New.
type Proxy struct {
	cfg     Config
	log     *slog.Logger
	metrics *metrics.Registry
	bal     *balance.Balancer
	// accruals are the outbound Services' failure accrual, budgets the
	// routes' retry budgets (outroute.go), guarded by accrualMu.
	accrualMu sync.RWMutex
	accruals  map[string]*accrualEntry
	budgets   map[metrics.RetryLabels]*retry.Budget
	opaque    map[uint16]bool
	ups       *upstreams
	fastUps   *fastUpstreams
	h2Ups     *h2Ups
	// observing reports whether requests must go to the Observer now.
	observing func() bool
	bufs      *bufPool

	inbound, outbound *side
	adminLn           net.Listener

	draining atomic.Bool
	// h1HandedOff counts the connections the HTTP/1.1 fast path gave to
	// net/http's path (the tests watch it).
	h1HandedOff atomic.Int64
	stop        chan struct{} // closed by Shutdown
	stopOnce    sync.Once

	// handoffs counts connections being classified; drain waits for them
	// before it shuts the HTTP servers down.
	handoffs  sync.WaitGroup
	mu        sync.Mutex // guards conns
	conns     map[*meteredConn]struct{}
	connsGone chan struct{} // signalled (non-blocking) when conns shrinks
	// idleFast are fast-path connections waiting for their next request
	// (guarded by mu); drain wakes them so that they close.
	idleFast map[*fastConn]struct{}
	// h2Downs are the HTTP/2 fast path's client connections (guarded by
	// mu); drain sends them GOAWAY.
	h2Downs map[*h2Down]struct{}
	// memConns is the connection count the memory limit was last set for
	// (guarded by mu).
	memConns int
	// memHeadroom is added to the memory limit while the collector takes
	// too much CPU (see memlimit.go; guarded by mu).
	memHeadroom int64
}

// drainDetectTimeout bounds protocol detection once draining has begun.
const drainDetectTimeout = 500 * time.Millisecond

// Direction names used in metrics.
const (
	Inbound  = "inbound"
	Outbound = "outbound"
)

// New validates cfg and binds the listeners.
func New(cfg Config) (*Proxy, error) {
	cfg.setDefaults()
	if cfg.InboundTarget != "" {
		if _, _, err := net.SplitHostPort(cfg.InboundTarget); err != nil {
			return nil, fmt.Errorf("inbound target %q: want HOST:PORT: %w", cfg.InboundTarget, err)
		}
	}
	p := &Proxy{
		cfg:       cfg,
		log:       cfg.Logger,
		metrics:   metrics.NewRegistry(),
		bal:       balance.New(nil),
		opaque:    map[uint16]bool{},
		stop:      make(chan struct{}),
		conns:     map[*meteredConn]struct{}{},
		idleFast:  map[*fastConn]struct{}{},
		h2Downs:   map[*h2Down]struct{}{},
		connsGone: make(chan struct{}, 1),
		bufs:      newBufPool(),
	}
	for _, port := range slices.Concat(DefaultOpaquePorts, cfg.OpaquePorts) {
		p.opaque[port] = true
	}
	p.metrics.Process = true
	p.mu.Lock()
	p.adjustMemoryLimitLocked(true)
	p.mu.Unlock()
	p.observing = func() bool { return false }
	if cfg.Observer != nil {
		p.observing = cfg.Observer.Active
	}
	p.ups = newUpstreams(p)
	p.fastUps = &fastUpstreams{p: p, idle: map[upKey][]*fastUp{}}
	p.h2Ups = newH2Ups(p)
	var err error
	cleanup := func() {
		for _, s := range []*side{p.inbound, p.outbound} {
			if s != nil {
				s.ln.Close()
			}
		}
		if p.adminLn != nil {
			p.adminLn.Close()
		}
	}
	if cfg.InboundAddr != "" {
		if p.inbound, err = p.newSide(Inbound, cfg.InboundAddr); err != nil {
			cleanup()
			return nil, err
		}
	}
	if cfg.OutboundAddr != "" {
		if p.outbound, err = p.newSide(Outbound, cfg.OutboundAddr); err != nil {
			cleanup()
			return nil, err
		}
	}
	if cfg.AdminAddr != "" {
		if p.adminLn, err = net.Listen("tcp", cfg.AdminAddr); err != nil {
			cleanup()
			return nil, fmt.Errorf("admin listener: %w", err)
		}
	}
	return p, nil
}

func addrOf(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// InboundAddr is the bound inbound address ("" when disabled).
func (p *Proxy) InboundAddr() string {
	if p.inbound == nil {
		return ""
	}
	return addrOf(p.inbound.ln)
}

// OutboundAddr is the bound outbound address ("" when disabled).
func (p *Proxy) OutboundAddr() string {
	if p.outbound == nil {
		return ""
	}
	return addrOf(p.outbound.ln)
}

// AdminAddr is the bound admin address ("" when disabled).
func (p *Proxy) AdminAddr() string { return addrOf(p.adminLn) }

// Metrics is the proxy's registry (for embedding and tests).
func (p *Proxy) Metrics() *metrics.Registry { return p.metrics }

// Shutdown starts draining, as if Run's context had been cancelled. It
// returns at once; Run returns when the drain is over.
func (p *Proxy) Shutdown() {
	p.stopOnce.Do(func() { close(p.stop) })
}

// Run serves until ctx is cancelled or Shutdown is called, then drains and
// returns. It returns an error only if a listener fails unexpectedly.
func (p *Proxy) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errc := make(chan error, 3)
	sides := []*side{}
	for _, s := range []*side{p.inbound, p.outbound} {
		if s != nil {
			sides = append(sides, s)
		}
	}
	for _, s := range sides {
		wg.Add(2)
		go func() {
			defer wg.Done()
			s.serveHTTP()
		}()
		go func() {
			defer wg.Done()
			if err := p.acceptLoop(s); err != nil {
				errc <- err
			}
		}()
	}
	admin := p.adminServer()
	if admin != nil {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := p.serveAdmin(admin); err != nil && !errors.Is(err, errServerClosed) {
				errc <- fmt.Errorf("admin listener: %w", err)
			}
		}()
	}
	govCtx, stopGovernor := context.WithCancel(context.Background())
	if p.cfg.MemoryLimit > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.governMemory(govCtx)
		}()
	}
	p.log.Info("proxy started", "inbound", p.InboundAddr(), "outbound", p.OutboundAddr(), "admin", p.AdminAddr(),
		"inbound_target", p.cfg.InboundTarget, "tls", p.cfg.TLS != nil)

	var runErr error
	select {
	case <-ctx.Done():
	case <-p.stop:
	case runErr = <-errc:
	}
	stopGovernor()
	p.drain(sides)
	if admin != nil {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		admin.Shutdown(sctx)
		cancel()
		admin.Close()
	}
	wg.Wait()
	p.ups.closeIdle()
	p.fastUps.closeAll()
	p.h2Ups.closeAll()
	return runErr
}

// drain stops accepting, lets in-flight work finish within the grace
// period, then closes what is left.
func (p *Proxy) drain(sides []*side) {
	p.draining.Store(true)
	start := time.Now()
	p.log.Info("draining", "grace", p.cfg.ShutdownGrace)
	for _, s := range sides {
		s.ln.Close()
	}
	// Idle fast-path connections close now; busy ones after their response.
	p.mu.Lock()
	for fc := range p.idleFast {
		fc.sc.SetReadDeadline(time.Now())
	}
	h2Downs := make([]*h2Down, 0, len(p.h2Downs))
	for d := range p.h2Downs {
		h2Downs = append(h2Downs, d)
	}
	p.mu.Unlock()
	for _, d := range h2Downs {
		d.drain()
	}
	// Connections being classified finish their handoff before the HTTP
	// servers stop taking connections; clients that have sent nothing yet
	// get a short last chance instead of the whole detection timeout.
	handedOff := make(chan struct{})
	go func() {
		p.handoffs.Wait()
		close(handedOff)
	}()
	cut := time.Now().Add(drainDetectTimeout)
	for tick := time.NewTicker(100 * time.Millisecond); ; {
		// Repeated: a detection that started just now set its own deadline.
		p.mu.Lock()
		for c := range p.conns {
			if c.detecting.Load() {
				c.SetReadDeadline(cut)
			}
		}
		p.mu.Unlock()
		select {
		case <-tick.C:
			continue
		case <-handedOff:
			tick.Stop()
		}
		break
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ShutdownGrace-time.Since(start))
	defer cancel()
	var wg sync.WaitGroup
	for _, s := range sides {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.srv.Shutdown(ctx)
		}()
	}
	wg.Wait()
	// Opaque and upgraded connections are not tracked by the HTTP servers.
	for {
		p.mu.Lock()
		n := len(p.conns)
		p.mu.Unlock()
		if n == 0 {
			break
		}
		select {
		case <-p.connsGone:
			continue
		case <-ctx.Done():
		}
		p.mu.Lock()
		left := make([]*meteredConn, 0, len(p.conns))
		for c := range p.conns {
			left = append(left, c)
		}
		p.mu.Unlock()
		p.log.Warn("grace period over, closing connections", "open", len(left))
		for _, c := range left {
			c.Close()
		}
		break
	}
	for _, s := range sides {
		s.srv.Close()
	}
	p.log.Info("drained", "took", time.Since(start).Round(time.Millisecond))
}

func (p *Proxy) track(c *meteredConn) {
	p.mu.Lock()
	p.conns[c] = struct{}{}
	p.adjustMemoryLimitLocked(false)
	p.mu.Unlock()
}

func (p *Proxy) untrack(c *meteredConn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.adjustMemoryLimitLocked(false)
	p.mu.Unlock()
	select {
	case p.connsGone <- struct{}{}:
	default:
	}
}

// isOpaquePort reports whether detection is skipped for a destination.
func (p *Proxy) isOpaquePort(ap netip.AddrPort) bool {
	return ap.IsValid() && p.opaque[ap.Port()]
}

// adjustMemoryLimitLocked keeps the soft memory limit at MemoryLimit plus
// MemoryPerConnection per open connection plus the governor's headroom,
// updating it when the count has moved by 8 (or reached zero) since the
// last update, or when forced.
func (p *Proxy) adjustMemoryLimitLocked(force bool) {
	if p.cfg.MemoryLimit <= 0 {
		return
	}
	n := len(p.conns)
	if d := n - p.memConns; !force && d < 8 && d > -8 && !(n == 0 && p.memConns != 0) {
		return
	}
	p.memConns = n
	limit := p.cfg.MemoryLimit + int64(n)*p.cfg.MemoryPerConnection + p.memHeadroom
	if p.cfg.MaxMemory > 0 {
		limit = min(limit, p.cfg.MaxMemory)
	}
	debug.SetMemoryLimit(limit)
}
