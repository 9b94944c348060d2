package sidecar

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"github.com/conduitmesh/conduit/pkg/proxy/tap"
)

// The memory defaults keep RSS under 10 MB at 1000 requests/s over a few
// connections. With GOGC 50 the collector runs at a ~2 MB heap; the soft
// limit (7 MiB plus 64 KiB per open connection, see proxy.Config) trims the
// peak by about 1 MB at low load. A fixed limit near the live heap made the
// GC thrash with 200 connections (0.22 instead of 0.07 vCPU per 1000 rps),
// hence the per-connection allowance. At 6 MiB a meshed proxy (identity,
// mTLS, control-plane streams) had no heap left under the limit and
// collected 7 times a second in bursts (a heap goal of 0 MB in gctrace),
// which set the p99 of two meshed hops; 7 MiB took that to 0.7 a second for
// 0.2-0.4 MB more peak RSS (bench/RESULTS.md).
const (
	DefaultMemoryLimit = 7 << 20
	DefaultGCPercent   = 50
)

// Run serves until ctx is done, then drains for ShutdownGrace. It sets the
// process's GC percentage and keeps its executable's resident pages to
// those it runs (releaseCode, releaseCodeAfterStart). It validates o
// first.
func Run(ctx context.Context, o Config) error {
	if err := o.Validate(); err != nil {
		return err
	}
	// What start-up runs from here faults in page by page (releaseCode
	// splits the executable's mappings the first time).
	releaseCode()
	stderr := o.LogOutput
	if stderr == nil {
		stderr = io.Discard
	}
	debug.SetGCPercent(o.GCPercent)

	level := new(slog.LevelVar)
	l, _ := parseLevel(o.LogLevel)
	level.Set(l)
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if o.LogFormat == "json" {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(h)

	maxMemory := int64(o.MaxMemory)
	if maxMemory == 0 {
		switch n := containerMemoryLimit(os.ReadFile); {
		case n >= minMaxMemory:
			maxMemory = n
			log.Info("connection and request caps derived from the container's memory limit", "max_memory", n)
		case n > 0:
			log.Warn("the container's memory limit is too small to derive caps from; using fixed caps", "limit", n, "want_at_least", minMaxMemory)
		}
	}

	plane, err := o.ControlPlane.Connect(ctx, log)
	if err != nil {
		return err
	}
	defer plane.Close()
	res, tlsProvider := plane.Resolver, plane.TLS
	if res == nil && len(o.Routes.Static) > 0 {
		res = o.Routes.Static
	} else if res != nil && len(o.Routes.Static) > 0 {
		res = chainResolver{o.Routes.Static, res}
	}
	// Tap: the controller's Observe streams, served on the admin listener
	// (plaintext HTTP/1.1 and h2c, and mTLS with the proxy's identity on the
	// same port); only the controller's identity over mTLS, or a loopback
	// caller in plaintext, may open one.
	taps := tap.NewServer(tap.Config{ControllerID: o.ControlPlane.ControllerIdentity, Log: log})
	var routes proxy.RouteSource // nil without a controller: no routes
	if plane.Routes != nil {
		routes = plane.Routes
	}
	p, err := proxy.New(proxy.Config{
		InboundAddr:       o.InboundListen,
		OutboundAddr:      o.OutboundListen,
		AdminAddr:         o.AdminListen,
		InboundTarget:     o.InboundTarget,
		Resolver:          res,
		TLS:               tlsProvider,
		ControllerID:      o.ControlPlane.ControllerIdentity,
		OpaquePorts:       o.OpaquePorts,
		DetectTimeout:     o.DetectTimeout,
		ConnectTimeout:    o.ConnectTimeout,
		FailFastTimeout:   failFast(o.FailFastTimeout),
		HeaderReadTimeout: o.HeaderReadTimeout,
		IdleTimeout:       o.IdleTimeout,
		ShutdownGrace:     o.ShutdownGrace,
		MaxHeaderBytes:    int(o.MaxHeaderBytes),
		BodyIdleTimeout:   o.BodyIdleTimeout,
		MaxConnections:    o.MaxConnections,
		MaxRequests:       o.MaxRequests,
		MaxMemory:         maxMemory,
		Logger:            log,
		LogLevel:          level,
		DisableFastPath:   !o.HTTP1FastPath,
		MemoryLimit:       int64(o.MemoryLimit),
		Observer:          taps,
		Policy:            plane.Policy,
		Routes:            routes,
		AdminRoutes:       map[string]http.Handler{tap.ObservePath: taps.Handler()},
		ExtraMetrics:      []func(io.Writer) error{taps.WriteMetrics},
	})
	if err != nil {
		return err
	}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go releaseCodeAfterStart(rctx, log)
	return p.Run(ctx)
}

// releaseCodeAfterStart keeps the executable's resident pages close to
// the code the proxy runs (releaseCode). It returns when ctx is done.
func releaseCodeAfterStart(ctx context.Context, log *slog.Logger) {
	r := codeReleaser{release: func() {
		log.Debug("released the executable's code pages", "bytes", releaseCode(), "file_rss_after", fileRSS())
	}}
	// Run released them before the control plane's start-up and the
	// listeners; the first scheduled release follows at releaseCheckEvery.
	start := time.Now()
	tick := time.NewTicker(releaseCheckEvery)
	defer tick.Stop()
	for !r.done() {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
		r.check(time.Since(start), fileRSS())
	}
}

// codeReleaser decides when the executable's pages are released after
// Run's first release: on a schedule for the first
// releaseScheduleEnd, then whenever they have grown by releaseGrowth over
// the working set.
//
// Start-up (fetching the first certificate, the control plane's first
// answers) and the first connections (handshakes, dials) run code the
// steady state never runs again, while the heap grows with the first
// load; the first release's baseline followed them, so they stayed
// resident for the process's life (2.5 MB of code for a meshed proxy
// carrying gRPC, against a working set of about 2). So the first releases
// follow the proxy's age: at releaseCheckEvery, then at twice the age
// before (0.2, 0.4, 0.8, 1.6 s) whatever the level, then (3.2 … 25.6 s)
// only if the pages have grown by releaseSlack over the level they
// settled at after the last release. A release costs the working set's
// minor faults (some 500 at about 8 µs on the benchmark's machine: 4 ms
// of CPU), so one that frees little is not made: under a steady load the
// later ones are skipped.
//
// After a release the working set faults back in; for releaseSettle the
// baseline follows it, so that a release never triggers the next one (a
// first version compared with the level right after the release and
// released five times a second under load, adding milliseconds to the
// p99). At most releaseMax releases for growth. A check reads the open
// /proc/self/statm (a few µs; opening /proc/self/status each time took
// 50–90) every releaseCheckEvery.
type codeReleaser struct {
	release func()

	next     time.Duration // the age of the next scheduled release
	last     time.Duration // the age of the last release
	base     int64         // the working set: the level once settled
	released int           // releases for growth
}

// check is called every releaseCheckEvery with the proxy's age and its
// executable's resident bytes; it reports whether it released.
func (r *codeReleaser) check(age time.Duration, level int64) bool {
	if r.next == 0 {
		r.next = releaseCheckEvery
	}
	switch {
	case r.next <= releaseScheduleEnd && age >= r.next:
		due := r.next
		r.next *= 2
		if due > releaseStartup && level < r.base+releaseSlack {
			return false
		}
	case age-r.last < releaseSettle:
		r.base = level
		return false
	case r.released < releaseMax && level >= r.base+releaseGrowth:
		r.released++
	default:
		return false
	}
	r.last = age
	r.release()
	return true
}

// done reports that no release is left: the schedule is over and the
// growth releases are used up.
func (r *codeReleaser) done() bool {
	return r.next > releaseScheduleEnd && r.released >= releaseMax
}

const (
	// releaseGrowth is how much the executable's resident pages may grow
	// over the working set before they are released again.
	releaseGrowth = 1 << 20
	// releaseSlack is the growth that a scheduled release after
	// releaseStartup needs.
	releaseSlack = 256 << 10
	// releaseSettle is how long the working set takes to fault back in
	// after a release.
	releaseSettle     = time.Second
	releaseCheckEvery = 200 * time.Millisecond
	// releaseStartup is the age up to which scheduled releases are made
	// whatever the level, releaseScheduleEnd the age up to which releases
	// follow the schedule (a doubling of releaseCheckEvery).
	releaseStartup     = 2 * time.Second
	releaseScheduleEnd = 30 * time.Second
	releaseMax         = 8
)

// minMaxMemory is the smallest --max-memory: the proxy needs about 16 MiB
// before any traffic.
const minMaxMemory = 32 << 20

// containerMemoryLimit is the memory limit of the proxy's cgroup (v2
// memory.max, else v1 memory.limit_in_bytes), or 0 when it has none.
func containerMemoryLimit(readFile func(string) ([]byte, error)) int64 {
	for _, path := range []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"} {
		b, err := readFile(path)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<62 { // "max"; v1's unlimited is near 1<<63
			return 0
		}
		return n
	}
	return 0
}

// chainResolver asks static routes first, then discovery.
type chainResolver []resolve.Resolver

func (c chainResolver) Endpoints(ctx context.Context, authority string) ([]resolve.Endpoint, error) {
	return c.first(func(r resolve.Resolver) ([]resolve.Endpoint, error) { return r.Endpoints(ctx, authority) })
}

// EndpointsNow implements resolve.NowResolver: Endpoints, asking each
// resolver of the chain without waiting.
func (c chainResolver) EndpointsNow(authority string) ([]resolve.Endpoint, error) {
	return c.first(func(r resolve.Resolver) ([]resolve.Endpoint, error) {
		if nr, ok := r.(resolve.NowResolver); ok {
			return nr.EndpointsNow(authority)
		}
		return r.Endpoints(context.Background(), authority)
	})
}

// first is the first answer of the chain's resolvers, asked in turn, that
// is not resolve.ErrNotFound.
func (c chainResolver) first(ask func(resolve.Resolver) ([]resolve.Endpoint, error)) ([]resolve.Endpoint, error) {
	for _, r := range c {
		eps, err := ask(r)
		if !errors.Is(err, resolve.ErrNotFound) {
			return eps, err
		}
	}
	return nil, resolve.ErrNotFound
}

// failFast maps the flag's "0: no wait" onto proxy.Config's (negative).
func failFast(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}
