// Package sidecar is the conduit-proxy process around pkg/proxy: Run turns a
// Config (the `conduit-proxy run` flags, defined by AddFlags) into a
// running proxy — memory caps from the container's limit, the control plane
// connection (ControlPlane: Destination, and Identity with the controller's
// TLS), static routes ahead of discovery, and tap on the admin listener.
// Like the proxy it never imports client-go, grpc-go or client_golang.
package sidecar

import (
	"fmt"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// Config is what Run serves. Its fields are the conduit-proxy run flags of
// the same names, and Validate's messages name those flags; proxy.Config
// documents the listeners, timeouts and caps.
type Config struct {
	InboundListen, OutboundListen, AdminListen string
	InboundTarget                              string // explicit mode; empty uses each connection's original destination
	Routes                                     Routes
	OpaquePorts                                Ports
	DetectTimeout, ConnectTimeout              time.Duration
	FailFastTimeout                            time.Duration // 0: no wait for endpoints
	HeaderReadTimeout, IdleTimeout             time.Duration
	ShutdownGrace                              time.Duration
	MaxHeaderBytes                             Size
	BodyIdleTimeout                            time.Duration
	MaxConnections, MaxRequests                int  // 0: derived from MaxMemory
	MaxMemory                                  Size // 0: the container's memory limit, if any
	LogLevel                                   string
	LogFormat                                  string // plain or json
	LogOutput                                  io.Writer
	MemoryLimit                                Size // Go soft memory limit with no connection open
	GCPercent                                  int
	HTTP1FastPath                              bool
	ControlPlane                               ControlPlane
}

// Validate reports the first out-of-range setting; ControlPlane is checked
// by Connect.
func (o *Config) Validate() error {
	if _, err := parseLevel(o.LogLevel); err != nil {
		return err
	}
	if o.FailFastTimeout < 0 {
		return fmt.Errorf("--failfast-timeout %s: must not be negative (0 answers at once when a Service has no ready endpoint)", o.FailFastTimeout)
	}
	if o.MaxConnections < 0 || o.MaxRequests < 0 {
		return fmt.Errorf("--max-connections %d, --max-requests %d: want 0 (derived) or a positive count", o.MaxConnections, o.MaxRequests)
	}
	if o.MaxMemory > 0 && o.MaxMemory < minMaxMemory {
		return fmt.Errorf("--max-memory %d: want at least 32MiB (the proxy needs about 16 MiB before any traffic), or 0 for none", int64(o.MaxMemory))
	}
	if o.LogFormat != "plain" && o.LogFormat != "json" {
		return fmt.Errorf("--log-format %q: want plain or json", o.LogFormat)
	}
	return nil
}

func parseLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(s)); err != nil {
		return 0, fmt.Errorf("--log-level %q: want debug, info, warn or error", s)
	}
	return l, nil
}

// Routes are static AUTHORITY=HOST:PORT routes, asked before discovery; as
// a flag.Value (--outbound-route) each Set adds comma-separated routes.
type Routes struct {
	Static resolve.Static
	list   []string
}

func (r *Routes) String() string {
	if r == nil {
		return ""
	}
	return strings.Join(r.list, ",")
}

func (r *Routes) Set(v string) error {
	if r.Static == nil {
		r.Static = resolve.Static{}
	}
	for _, route := range strings.Split(v, ",") {
		if route = strings.TrimSpace(route); route == "" {
			continue
		}
		if err := r.Static.ParseRoute(route); err != nil {
			return err
		}
		r.list = append(r.list, route)
	}
	return nil
}

// Ports are ports; as a flag.Value, a comma-separated list of ports and
// LOW-HIGH ranges.
type Ports []uint16

func (p *Ports) String() string {
	if p == nil {
		return ""
	}
	s := make([]string, len(*p))
	for i, v := range *p {
		s[i] = strconv.Itoa(int(v))
	}
	return strings.Join(s, ",")
}

func (p *Ports) Set(v string) error {
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

// Size is a byte count; as a flag.Value: 1048576, 64KiB, 6MiB, 1GiB (KB/MB
// are decimal).
type Size int64

func (s *Size) String() string {
	if s == nil {
		return "0"
	}
	return strconv.FormatInt(int64(*s), 10)
}

func (s *Size) Set(v string) error {
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
			*s = Size(n * u.mult)
			return nil
		}
	}
	return fmt.Errorf("size %q: unknown unit", v)
}
