// Package destination resolves service authorities through the controller's
// Destination.Get streams: it implements resolve.Resolver for the proxy's
// outbound side. It also follows Destination.GetRoutes for the outbound
// route table (WatchRoutes, route.Watcher).
//
// One stream is opened per authority on first use and kept open while the
// authority is in use; its updates maintain the authority's endpoint set.
// When the controller becomes unreachable the last known endpoints stay in
// use while the stream reconnects with exponential backoff and jitter; the
// first update of every new stream is the full current set and replaces the
// old one. Streams of authorities nobody asked about for IdleTimeout close.
package destination

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// ErrNoAnswer means the controller has not answered for an authority yet
// (it is unreachable or slow); it wraps resolve.ErrNotFound so that the
// proxy falls back as it does for unknown authorities.
var ErrNoAnswer = fmt.Errorf("no answer from the controller yet: %w", resolve.ErrNotFound)

// Streamer opens a server-streaming call; *grpcwire.Conn implements it.
type Streamer interface {
	Stream(ctx context.Context, method string, req []byte) (*grpcwire.Stream, error)
}

// Config configures a Resolver. Zero durations take the defaults.
type Config struct {
	// Client reaches the controller's gRPC port.
	Client Streamer
	// Namespace is the proxy's pod namespace, used to expand one-label
	// names ("books:8080" → "books.<namespace>.svc.<domain>:8080").
	Namespace string
	// ClusterDomain defaults to "cluster.local".
	ClusterDomain string
	// ContextToken is sent with every Get (e.g. {"ns":"demo"}).
	ContextToken string
	// InitialWait bounds how long the first Endpoints call for an authority
	// waits for the controller's first update; default 2 s.
	InitialWait time.Duration
	// IdleTimeout closes the stream of an authority unused for this long;
	// default 10 min.
	IdleTimeout time.Duration
	// BackoffBase and BackoffMax bound reconnect delays; defaults 250 ms
	// and 15 s. Each delay is drawn uniformly from [d/2, d) ("equal jitter")
	// where d doubles from BackoffBase up to BackoffMax.
	BackoffBase, BackoffMax time.Duration
	Log                     *slog.Logger
	// Now is the clock for idleness; default time.Now.
	Now func() time.Time
}

// Resolver implements resolve.Resolver. Create it with New; Close stops
// every stream.
type Resolver struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // the janitor and every watch goroutine

	mu      sync.Mutex        // guards watches and aliases
	watches map[string]*watch // by normalized authority
	aliases map[string]*watch // by authority as asked, to skip normalizing
}

// New starts a Resolver whose streams live until ctx ends or Close.
func New(ctx context.Context, cfg Config) *Resolver {
	if cfg.ClusterDomain == "" {
		cfg.ClusterDomain = "cluster.local"
	}
	cfg.ClusterDomain = strings.Trim(strings.ToLower(cfg.ClusterDomain), ".")
	if cfg.InitialWait <= 0 {
		cfg.InitialWait = 2 * time.Second
	}
	if cfg.IdleTimeout <= 0 {
		cfg.IdleTimeout = 10 * time.Minute
	}
	if cfg.BackoffBase <= 0 {
		cfg.BackoffBase = 250 * time.Millisecond
	}
	if cfg.BackoffMax <= 0 {
		cfg.BackoffMax = 15 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	ctx, cancel := context.WithCancel(ctx)
	r := &Resolver{
		cfg:     cfg,
		ctx:     ctx,
		cancel:  cancel,
		watches: map[string]*watch{},
		aliases: map[string]*watch{},
	}
	r.wg.Add(1)
	go r.janitor()
	return r
}

// Close stops every stream and waits for their goroutines.
func (r *Resolver) Close() {
	r.cancel()
	r.wg.Wait()
}

// Endpoints returns the current endpoints of authority. The slice is shared:
// callers must not modify it. An authority the controller does not know
// yields resolve.ErrNotFound; one it knows without ready endpoints an empty
// slice; no answer from the controller within InitialWait ErrNoAnswer.
func (r *Resolver) Endpoints(ctx context.Context, authority string) ([]resolve.Endpoint, error) {
	w, err := r.use(authority)
	if err != nil {
		return nil, err
	}
	r.awaitFirst(ctx, w)
	return w.endpoints()
}

// EndpointsNow implements resolve.NowResolver: Endpoints, or
// resolve.ErrPending while authority's stream has neither answered nor
// waited InitialWait (the stream is opened on the first call).
func (r *Resolver) EndpointsNow(authority string) ([]resolve.Endpoint, error) {
	w, err := r.use(authority)
	if err != nil {
		return nil, err
	}
	if r.firstWait(w) > 0 {
		return nil, resolve.ErrPending
	}
	return w.endpoints()
}

// use is authority's watch (opened on the first call), marked used now.
func (r *Resolver) use(authority string) (*watch, error) {
	w, err := r.watchFor(authority)
	if err != nil {
		return nil, err
	}
	w.lastUsed.Store(r.cfg.Now().UnixNano())
	return w, nil
}

// AwaitEndpoints implements resolve.Awaiter: Endpoints, waiting while the
// controller knows authority without a ready endpoint, until one is
// announced or ctx ends.
func (r *Resolver) AwaitEndpoints(ctx context.Context, authority string) ([]resolve.Endpoint, error) {
	w, err := r.watchFor(authority)
	if err != nil {
		return nil, err
	}
	r.awaitFirst(ctx, w)
	for {
		w.lastUsed.Store(r.cfg.Now().UnixNano())
		w.mu.Lock()
		eps, err := w.endpointsLocked()
		changed := w.changed
		w.mu.Unlock()
		if err != nil || len(eps) > 0 {
			return eps, err
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return eps, nil
		}
	}
}

// awaitFirst waits for the first update of w's stream, for what is left of
// InitialWait since it opened: later callers must not stall while the
// controller is down.
func (r *Resolver) awaitFirst(ctx context.Context, w *watch) {
	wait := r.firstWait(w)
	if wait <= 0 {
		return
	}
	t := time.NewTimer(wait)
	select {
	case <-w.ready:
	case <-t.C:
	case <-ctx.Done():
	}
	t.Stop()
}

// firstWait is what is left of InitialWait for w's first update: 0 once
// it came or InitialWait passed.
func (r *Resolver) firstWait(w *watch) time.Duration {
	select {
	case <-w.ready:
		return 0
	default:
		return max(r.cfg.InitialWait-r.cfg.Now().Sub(w.created), 0)
	}
}

// endpoints is Endpoints' answer from w as it is.
func (w *watch) endpoints() ([]resolve.Endpoint, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.endpointsLocked()
}

// endpointsLocked is Endpoints' answer from w as it is (w.mu held).
func (w *watch) endpointsLocked() ([]resolve.Endpoint, error) {
	switch {
	case !w.known:
		return nil, fmt.Errorf("resolving %s: %w", w.authority, ErrNoAnswer)
	case !w.exists:
		return nil, fmt.Errorf("resolving %s: %w", w.authority, resolve.ErrNotFound)
	}
	return w.snapshot, nil
}

func (r *Resolver) watchFor(authority string) (*watch, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if w, ok := r.aliases[authority]; ok {
		return w, nil
	}
	if r.ctx.Err() != nil {
		return nil, fmt.Errorf("resolving %s: resolver closed", authority)
	}
	name, err := Normalize(authority, r.cfg.Namespace, r.cfg.ClusterDomain)
	if err != nil {
		return nil, err
	}
	w, ok := r.watches[name]
	if !ok {
		ctx, cancel := context.WithCancel(r.ctx)
		w = &watch{authority: name, cancel: cancel, ready: make(chan struct{}), changed: make(chan struct{}), created: r.cfg.Now()}
		w.lastUsed.Store(r.cfg.Now().UnixNano())
		r.watches[name] = w
		r.wg.Add(1)
		go func() {
			defer r.wg.Done()
			r.run(ctx, w)
		}()
	}
	r.aliases[authority] = w
	return w, nil
}

// janitor closes the streams of idle authorities.
func (r *Resolver) janitor() {
	defer r.wg.Done()
	every := max(r.cfg.IdleTimeout/4, 10*time.Millisecond)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-r.ctx.Done():
			return
		case <-t.C:
		}
		cutoff := r.cfg.Now().Add(-r.cfg.IdleTimeout).UnixNano()
		r.mu.Lock()
		for name, w := range r.watches {
			if w.lastUsed.Load() < cutoff {
				w.cancel()
				delete(r.watches, name)
				for a, aw := range r.aliases {
					if aw == w {
						delete(r.aliases, a)
					}
				}
				r.cfg.Log.Debug("closed idle destination stream", "authority", name)
			}
		}
		r.mu.Unlock()
	}
}

// watch is one authority's stream and endpoint set.
type watch struct {
	authority string
	cancel    context.CancelFunc
	ready     chan struct{} // closed on the first update ever
	changed   chan struct{} // closed (and replaced) by every update; under mu
	created   time.Time
	lastUsed  atomic.Int64 // unix nanos of the last Endpoints call

	mu       sync.Mutex // guards the fields below
	known    bool       // an update arrived at least once
	exists   bool       // false when the controller does not know the authority
	byAddr   map[string]resolve.Endpoint
	snapshot []resolve.Endpoint // byAddr sorted by Addr, rebuilt on change
}

// run keeps the authority's stream open until ctx ends.
func (r *Resolver) run(ctx context.Context, w *watch) {
	r.follow(ctx, getMethod, encodeGet(w.authority, r.cfg.ContextToken), r.cfg.Log.With("authority", w.authority),
		"destination stream", "keeping the last known endpoints",
		func(msg []byte, first bool) error {
			u, err := decodeUpdate(msg)
			if err == nil {
				w.apply(u, first)
			}
			return err
		},
		// The controller will never resolve this authority.
		func() { w.apply(update{kind: updateNoEndpoints, exists: false}, true) })
}

// WatchRoutes follows Destination.GetRoutes for authority (normalized as
// Endpoints normalizes it) and hands update every OutboundRoutes message,
// in order, until ctx ends or the Resolver closes; it implements
// route.Watcher. A stream that fails is reopened with the same jittered
// backoff as Get's, while the caller keeps its last table. An authority
// that does not normalize, or that the controller refuses
// (INVALID_ARGUMENT), is handed one empty message: a Service the
// controller does not know.
func (r *Resolver) WatchRoutes(ctx context.Context, authority string, update func(msg []byte)) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(r.ctx, cancel)()
	log := r.cfg.Log.With("authority", authority)
	name, err := Normalize(authority, r.cfg.Namespace, r.cfg.ClusterDomain)
	if err != nil {
		log.Debug("no outbound routes", "err", err)
		update(nil)
		<-ctx.Done()
		return
	}
	refused := false
	r.follow(ctx, routesMethod, encodeGet(name, r.cfg.ContextToken), log,
		"route stream", "keeping the last routes",
		func(msg []byte, _ bool) error {
			update(msg)
			return nil
		},
		func() {
			if !refused {
				refused = true
				update(nil)
			}
		})
}

// follow keeps a server-streaming call of method open until ctx ends:
// every message goes to recv (first for the first of each call, which
// replaces what earlier calls sent), and an error of recv ends the call. A
// call that ends is made again after grpcwire.Backoff; when the
// controller refuses the request (INVALID_ARGUMENT) refused is called and
// the call is retried only at BackoffMax. what and keeping word the log.
func (r *Resolver) follow(ctx context.Context, method string, req []byte, log *slog.Logger, what, keeping string,
	recv func(msg []byte, first bool) error, refused func()) {
	failures := 0
	for {
		received, err := r.call(ctx, method, req, recv)
		if ctx.Err() != nil {
			return
		}
		if received {
			failures = 0
		}
		if grpcwire.CodeOf(err) == grpcwire.InvalidArgument {
			refused()
			failures = 64
		}
		delay := grpcwire.Backoff(r.cfg.BackoffBase, r.cfg.BackoffMax, failures)
		failures++
		if failures == 1 {
			log.Info(what+" ended; "+keeping, "err", err, "retry_in", delay)
		} else {
			log.Debug(what+" failed", "err", err, "retry_in", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// call makes one call of method; received reports whether recv took any
// message.
func (r *Resolver) call(ctx context.Context, method string, req []byte, recv func(msg []byte, first bool) error) (received bool, err error) {
	s, err := r.cfg.Client.Stream(ctx, method, req)
	if err != nil {
		return false, err
	}
	defer s.Close()
	for first := true; ; first = false {
		msg, err := s.Recv()
		if err != nil {
			return received, err
		}
		if err := recv(msg, first); err != nil {
			return received, err
		}
		received = true
	}
}

// apply folds an update into the set; the first update of a stream is the
// full current set and replaces what an earlier stream announced.
func (w *watch) apply(u update, first bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if first || w.byAddr == nil {
		w.byAddr = map[string]resolve.Endpoint{}
	}
	switch u.kind {
	case updateAdd:
		w.exists = true
		for _, ep := range u.add {
			w.byAddr[ep.Addr] = ep
		}
	case updateRemove:
		for _, a := range u.remove {
			delete(w.byAddr, a)
		}
	case updateNoEndpoints:
		w.exists = u.exists
		clear(w.byAddr)
	}
	snap := make([]resolve.Endpoint, 0, len(w.byAddr))
	for _, ep := range w.byAddr {
		snap = append(snap, ep)
	}
	slices.SortFunc(snap, func(a, b resolve.Endpoint) int { return strings.Compare(a.Addr, b.Addr) })
	w.snapshot = snap
	close(w.changed)
	w.changed = make(chan struct{})
	if !w.known {
		w.known = true
		close(w.ready)
	}
}

// Normalize turns an authority as a pod would write it into the name the
// controller resolves: lower case, no trailing dot, a port (80 when
// missing), and Kubernetes short service names expanded:
//
//	books:8080                      → books.<ns>.svc.<domain>:8080
//	books.demo:8080                 → books.demo.svc.<domain>:8080
//	books.demo.svc:8080             → books.demo.svc.<domain>:8080
//	books.demo.svc.<domain>:8080    → unchanged
//
// IP addresses and other names are passed through unchanged.
func Normalize(authority, namespace, domain string) (string, error) {
	host, port, err := net.SplitHostPort(authority)
	if err != nil {
		var ae *net.AddrError
		if !errors.As(err, &ae) || ae.Err != "missing port in address" {
			return "", fmt.Errorf("authority %q: want host:port: %w", authority, err)
		}
		host, port = strings.Trim(authority, "[]"), "80"
	}
	if host == "" || port == "" {
		return "", fmt.Errorf("authority %q: want host:port", authority)
	}
	if ip, err := netip.ParseAddr(host); err == nil {
		return net.JoinHostPort(ip.Unmap().String(), port), nil
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	switch labels := strings.Count(host, ".") + 1; {
	case strings.HasSuffix(host, ".svc."+domain):
	case labels == 1 && namespace != "":
		host += "." + namespace + ".svc." + domain
	case labels == 2:
		host += ".svc." + domain
	case labels == 3 && strings.HasSuffix(host, ".svc"):
		host += "." + domain
	}
	return net.JoinHostPort(host, port), nil
}
