package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"github.com/conduitmesh/conduit/pkg/proxy/tap"
)

// The memory defaults keep RSS under 10 MB at 1000 requests/s over a few
// connections. With GOGC 50 the collector runs at a ~2 MB heap; the soft
// limit (6 MiB plus 64 KiB per open connection, see proxy.Config) trims the
// peak by about 1 MB at low load. A fixed limit near the live heap made the
// GC thrash with 200 connections (0.22 instead of 0.07 vCPU per 1000 rps),
// hence the per-connection allowance.
const (
	defaultMemoryLimit = 6 << 20
	defaultGCPercent   = 50
)

type runOptions struct {
	inboundListen, outboundListen, adminListen string
	inboundTarget                              string
	routes                                     routeFlag
	opaquePorts                                portsFlag
	detectTimeout, connectTimeout              time.Duration
	headerReadTimeout, idleTimeout             time.Duration
	shutdownGrace                              time.Duration
	maxHeaderBytes                             sizeFlag
	bodyIdleTimeout                            time.Duration
	maxConnections, maxRequests                int
	maxMemory                                  sizeFlag
	logLevel                                   string
	logFormat                                  string
	memoryLimit                                sizeFlag
	gcPercent                                  int
	http1FastPath                              bool
	controlPlane                               *controlPlaneOptions
}

// runMain is `conduit-proxy run`.
func runMain(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseRunOptions(args, os.Getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(stderr, "conduit-proxy run:", err)
		return 2
	}
	if err := run(ctx, opts, stderr); err != nil {
		fmt.Fprintln(stderr, "conduit-proxy run:", err)
		return 1
	}
	return 0
}

func newRunFlags(stderr io.Writer) (*flag.FlagSet, *runOptions) {
	o := &runOptions{routes: routeFlag{s: resolve.Static{}}, maxHeaderBytes: 64 << 10, memoryLimit: defaultMemoryLimit}
	fs := flag.NewFlagSet("conduit-proxy run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.inboundListen, contract.FlagInboundListen, fmt.Sprintf("0.0.0.0:%d", contract.ProxyInboundPort), "inbound listener: all traffic to the pod")
	fs.StringVar(&o.outboundListen, contract.FlagOutboundListen, fmt.Sprintf("127.0.0.1:%d", contract.ProxyOutboundPort), "outbound listener: the pod's own outgoing traffic")
	fs.StringVar(&o.adminListen, contract.FlagAdminListen, fmt.Sprintf("0.0.0.0:%d", contract.ProxyAdminPort), "admin listener: /metrics, /ready, /live, /shutdown, /log-level")
	fs.StringVar(&o.inboundTarget, "inbound-target", "", "send all inbound traffic to HOST:PORT (explicit mode); empty uses each connection's original destination")
	fs.Var(&o.routes, "outbound-route", "route outbound AUTHORITY=HOST:PORT (repeatable; comma-separated in the environment)")
	fs.Var(&o.opaquePorts, contract.FlagOpaquePorts, fmt.Sprintf("comma-separated ports never detected, relayed as TCP (in addition to %v)", proxy.DefaultOpaquePorts))
	fs.DurationVar(&o.detectTimeout, "detect-timeout", 10*time.Second, "how long to wait for a client's first bytes before treating the connection as opaque")
	fs.DurationVar(&o.connectTimeout, "connect-timeout", time.Second, "timeout for connecting to an upstream")
	fs.DurationVar(&o.headerReadTimeout, "header-read-timeout", 10*time.Second, "time allowed to read a request's headers")
	fs.DurationVar(&o.idleTimeout, "idle-timeout", 90*time.Second, "idle keep-alive connections are closed after this long")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace-period", 20*time.Second, "on SIGTERM, time for in-flight requests to finish")
	fs.Var(&o.maxHeaderBytes, "max-header-bytes", "largest request header block accepted (larger gets 431)")
	fs.DurationVar(&o.bodyIdleTimeout, "body-idle-timeout", 60*time.Second, "abort a request body the client stops sending, or a response it stops reading, for this long")
	fs.IntVar(&o.maxConnections, "max-connections", 0, "open connections per traffic listener; past it new ones are reset at once (0: derived from --max-memory, else 10000)")
	fs.IntVar(&o.maxRequests, "max-requests", 0, "in-flight HTTP requests per traffic listener; past it requests get 503 (0: derived from --max-memory, else 10000)")
	fs.Var(&o.maxMemory, "max-memory", "memory the proxy must stay under (e.g. 64MiB; 0 = its container's memory limit when it has one): the connection and request caps are derived from it and the soft memory limit never grows past it")
	fs.StringVar(&o.logLevel, contract.FlagLogLevel, "info", "debug, info, warn or error (changeable at PUT /log-level)")
	fs.StringVar(&o.logFormat, "log-format", "plain", "plain or json")
	fs.Var(&o.memoryLimit, "memory-limit", "Go runtime soft memory limit with no connections open (e.g. 6MiB; 0 = none); it grows by 64 KiB per open connection, and by up to 8 MiB while garbage collection takes over 10 % of the CPU")
	fs.IntVar(&o.gcPercent, "gc-percent", defaultGCPercent, "Go GC target percentage (-1 disables proportional GC)")
	fs.BoolVar(&o.http1FastPath, "http1-fast-path", true, "serve plain HTTP/1.1 keep-alive requests on the lean fast path (false: always net/http)")
	o.controlPlane = registerControlPlaneFlags(fs)
	return fs, o
}

// parseRunOptions reads flags, then the environment for every flag not given
// on the command line (applyEnv, shared with init).
func parseRunOptions(args []string, getenv func(string) string, stderr io.Writer) (*runOptions, error) {
	fs, o := newRunFlags(stderr)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: conduit-proxy run takes only flags", fs.Arg(0))
	}
	if err := applyEnv(fs, getenv); err != nil {
		return nil, err
	}
	if _, err := parseLevel(o.logLevel); err != nil {
		return nil, err
	}
	if o.maxConnections < 0 || o.maxRequests < 0 {
		return nil, fmt.Errorf("--max-connections %d, --max-requests %d: want 0 (derived) or a positive count", o.maxConnections, o.maxRequests)
	}
	if o.maxMemory > 0 && o.maxMemory < minMaxMemory {
		return nil, fmt.Errorf("--max-memory %d: want at least 32MiB (the proxy needs about 16 MiB before any traffic), or 0 for none", int64(o.maxMemory))
	}
	if o.logFormat != "plain" && o.logFormat != "json" {
		return nil, fmt.Errorf("--log-format %q: want plain or json", o.logFormat)
	}
	return o, nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

func run(ctx context.Context, o *runOptions, stderr io.Writer) error {
	debug.SetGCPercent(o.gcPercent)

	level := new(slog.LevelVar)
	l, _ := parseLevel(o.logLevel)
	level.Set(l)
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler = slog.NewTextHandler(stderr, hopts)
	if o.logFormat == "json" {
		h = slog.NewJSONHandler(stderr, hopts)
	}
	log := slog.New(h)

	maxMemory := int64(o.maxMemory)
	if maxMemory == 0 {
		switch n := containerMemoryLimit(os.ReadFile); {
		case n >= minMaxMemory:
			maxMemory = n
			log.Info("connection and request caps derived from the container's memory limit", "max_memory", n)
		case n > 0:
			log.Warn("the container's memory limit is too small to derive caps from; using fixed caps", "limit", n, "want_at_least", minMaxMemory)
		}
	}

	res, tlsProvider, release, err := o.controlPlane.connect(ctx, log)
	if err != nil {
		return err
	}
	defer release()
	if res == nil && len(o.routes.s) > 0 {
		res = o.routes.s
	} else if res != nil && len(o.routes.s) > 0 {
		res = chainResolver{o.routes.s, res}
	}
	// Tap: the controller's Observe streams, served on the admin listener
	// (plaintext HTTP/1.1 and h2c, and mTLS with the proxy's identity on the
	// same port); only the controller's identity over mTLS, or a loopback
	// caller in plaintext, may open one.
	taps := tap.NewServer(tap.Config{ControllerID: o.controlPlane.controllerIdentity, Log: log})
	p, err := proxy.New(proxy.Config{
		InboundAddr:       o.inboundListen,
		OutboundAddr:      o.outboundListen,
		AdminAddr:         o.adminListen,
		InboundTarget:     o.inboundTarget,
		Resolver:          res,
		TLS:               tlsProvider,
		ControllerID:      o.controlPlane.controllerIdentity,
		OpaquePorts:       o.opaquePorts,
		DetectTimeout:     o.detectTimeout,
		ConnectTimeout:    o.connectTimeout,
		HeaderReadTimeout: o.headerReadTimeout,
		IdleTimeout:       o.idleTimeout,
		ShutdownGrace:     o.shutdownGrace,
		MaxHeaderBytes:    int(o.maxHeaderBytes),
		BodyIdleTimeout:   o.bodyIdleTimeout,
		MaxConnections:    o.maxConnections,
		MaxRequests:       o.maxRequests,
		MaxMemory:         maxMemory,
		Logger:            log,
		LogLevel:          level,
		DisableFastPath:   !o.http1FastPath,
		MemoryLimit:       int64(o.memoryLimit),
		Observer:          taps,
		AdminRoutes:       map[string]http.Handler{tap.ObservePath: taps.Handler()},
		ExtraMetrics:      []func(io.Writer) error{taps.WriteMetrics},
	})
	if err != nil {
		return err
	}
	return p.Run(ctx)
}

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
	for _, r := range c {
		eps, err := r.Endpoints(ctx, authority)
		if !errors.Is(err, resolve.ErrNotFound) {
			return eps, err
		}
	}
	return nil, resolve.ErrNotFound
}

// routeFlag is the repeatable --outbound-route.
type routeFlag struct {
	s    resolve.Static
	list []string
}

func (r *routeFlag) String() string {
	if r == nil {
		return ""
	}
	return strings.Join(r.list, ",")
}

func (r *routeFlag) Set(v string) error {
	for _, route := range strings.Split(v, ",") {
		if route = strings.TrimSpace(route); route == "" {
			continue
		}
		if err := r.s.ParseRoute(route); err != nil {
			return err
		}
		r.list = append(r.list, route)
	}
	return nil
}

// portsFlag is a comma-separated list of ports.
type portsFlag []uint16

func (p *portsFlag) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(int(v))
	}
	return strings.Join(s, ",")
}

func (p *portsFlag) Set(v string) error {
	for _, f := range strings.Split(v, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		if lo, hi, ok := strings.Cut(f, "-"); ok {
			a, err1 := strconv.ParseUint(lo, 10, 16)
			b, err2 := strconv.ParseUint(hi, 10, 16)
			if err1 != nil || err2 != nil || a == 0 || a > b || b-a > 1024 {
				return fmt.Errorf("port range %q: want LOW-HIGH within 1-65535, at most 1024 ports", f)
			}
			for port := a; port <= b; port++ {
				*p = append(*p, uint16(port))
			}
			continue
		}
		n, err := strconv.ParseUint(f, 10, 16)
		if err != nil || n == 0 {
			return fmt.Errorf("port %q: want a number from 1 to 65535", f)
		}
		*p = append(*p, uint16(n))
	}
	return nil
}

// sizeFlag is a byte size: 1048576, 64KiB, 6MiB, 1GiB (KB/MB are decimal).
type sizeFlag int64

func (s *sizeFlag) String() string {
	if s == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*s), 10)
}

func (s *sizeFlag) Set(v string) error {
	units := []struct {
		suffix string
		mult   int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"B", 1}, {"", 1}}
	for _, u := range units {
		if num, ok := strings.CutSuffix(v, u.suffix); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(num), 10, 64)
			if err != nil || n < 0 {
				return fmt.Errorf("size %q: want a non-negative number with an optional unit (KiB, MiB, GiB)", v)
			}
			*s = sizeFlag(n * u.mult)
			return nil
		}
	}
	return fmt.Errorf("size %q: unknown unit", v)
}
