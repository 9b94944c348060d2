package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// protocol is one kind of traffic fortio sends.
type protocol struct {
	name, title string
	server      string // which fortio server port: http, grpc or tcp
	haproxyMode string // http (HTTP/1.1), h2 or tcp
	http1       bool   // an HTTP/1.1 reverse proxy can carry it
	fortioArgs  func(addr string) []string
}

var protocols = map[string]protocol{
	"http1": {name: "http1", title: "HTTP/1.1 GET", server: "http", haproxyMode: "http", http1: true,
		fortioArgs: func(addr string) []string { return []string{"http://" + addr + "/"} }},
	"http1-post": {name: "http1-post", title: "HTTP/1.1 POST 1 KiB", server: "http", haproxyMode: "http", http1: true,
		fortioArgs: func(addr string) []string { return []string{"-payload-size", "1024", "http://" + addr + "/"} }},
	"grpc": {name: "grpc", title: "gRPC unary (fortio ping)", server: "grpc", haproxyMode: "h2",
		fortioArgs: func(addr string) []string { return []string{"-grpc", "-ping", addr} }},
	"h2": {name: "h2", title: "HTTP/2 cleartext GET", server: "http", haproxyMode: "h2",
		fortioArgs: func(addr string) []string { return []string{"-h2", "http://" + addr + "/"} }},
	"tcp": {name: "tcp", title: "opaque TCP echo", server: "tcp", haproxyMode: "tcp",
		fortioArgs: func(addr string) []string { return []string{"tcp://" + addr} }},
}

// system is one way of getting from the load generator to the server.
type system struct {
	name, title string
	// pending, when set, says why the system cannot be measured yet.
	pending string
	// supports reports whether the system can carry a protocol.
	supports func(protocol) bool
	// start runs the system in front of target; direct has no process.
	start func(ctx context.Context, e *benchEnv, p protocol, target string) (*deployment, error)
}

// deployment is a started system.
type deployment struct {
	addr     string   // where the load generator connects
	loadArgs []string // extra fortio arguments (a Host header)
	measured []*proc  // the proxies whose CPU and memory are reported
	helpers  []*proc  // processes that are not measured (a controller)
	// verify, when set, checks after the load that traffic took the
	// intended path, and may record what it saw in the sample.
	verify func(*sample) error
}

func (d *deployment) stop() {
	for _, p := range append(append([]*proc(nil), d.measured...), d.helpers...) {
		p.stop()
	}
}

// single wraps a one-process system.
func single(p *proc, addr string, err error) (*deployment, error) {
	if err != nil {
		return nil, err
	}
	return &deployment{addr: addr, measured: []*proc{p}}, nil
}

func always(protocol) bool { return true }

var systems = map[string]system{
	"direct": {name: "direct", title: "direct", supports: always,
		start: func(_ context.Context, _ *benchEnv, _ protocol, target string) (*deployment, error) {
			return &deployment{addr: target}, nil
		}},
	"conduit": {name: "conduit", title: "conduit-proxy (1 hop, inbound)", supports: always, start: startConduit},
	baseSystem: {name: baseSystem, title: "conduit-proxy (1 hop, inbound) built from --base-rev", supports: always,
		start: func(ctx context.Context, e *benchEnv, _ protocol, target string) (*deployment, error) {
			p, l, err := e.startProxyBin(ctx, e.bins.variants[baseSystem], nil, "", target)
			return single(p, l.in, err)
		}},
	"conduit-mtls": {name: "conduit-mtls", title: "conduit-proxy ×2 with mTLS (outbound → inbound)",
		supports: func(p protocol) bool { return p.name != "tcp" }, start: startTwoHops},
	"conduit-mtls-routes": {name: "conduit-mtls-routes", title: "conduit-proxy ×2 with mTLS, a route with retries and timeouts (not matched) and failure accrual",
		supports: func(p protocol) bool { return p.http1 }, start: startTwoHopsRoutes},
	"conduit-mtls-retries": {name: "conduit-mtls-retries", title: "conduit-proxy ×2 with mTLS, every request on a route with retries, timeouts and a response header modifier",
		supports: func(p protocol) bool { return p.http1 }, start: startTwoHopsRetries},
	"conduit-mtls-authz50": {name: "conduit-mtls-authz50", title: "conduit-proxy ×2 with mTLS, 50 authorization policies on the server's port",
		supports: func(p protocol) bool { return p.name != "tcp" }, start: startTwoHopsAuthz(50)},
	"conduit-tap": {name: "conduit-tap", title: "conduit-proxy (1 hop) tapped at full rate",
		supports: func(p protocol) bool { return p.name != "tcp" }, start: startTapped(false)},
	"conduit-tap-stalled": {name: "conduit-tap-stalled", title: "conduit-proxy (1 hop), a tap that never reads",
		supports: func(p protocol) bool { return p.name != "tcp" }, start: startTapped(true)},
	"conduit-grpcgo": {name: "conduit-grpcgo", title: "conduit-proxy (1 hop) + grpc-go, a client connection open",
		supports: always, start: startGRPCVariant},
	"conduit-promclient": {name: "conduit-promclient", title: "conduit-proxy (1 hop) + client_golang, a registry served",
		supports: always, start: startPromVariant},
	"haproxy": {name: "haproxy", title: "HAProxy", supports: always, start: startHAProxy},
	"gorelay": {name: "gorelay", title: "Go io.Copy relay", supports: always,
		start: func(ctx context.Context, e *benchEnv, _ protocol, target string) (*deployment, error) {
			return single(e.startListening(ctx, nil, e.bins.tcprelay, "--target", target))
		}},
	"revproxy": {name: "revproxy", title: "Go httputil.ReverseProxy", supports: func(p protocol) bool { return p.http1 },
		start: func(ctx context.Context, e *benchEnv, _ protocol, target string) (*deployment, error) {
			return single(e.startListening(ctx, nil, e.bins.revproxy, "--target", target))
		}},
}

// startListening starts bin with --listen on a free address plus args, and
// waits until it accepts connections.
func (e *benchEnv) startListening(ctx context.Context, env []string, bin string, args ...string) (*proc, string, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, "", err
	}
	p, err := start(e.dir, env, e.opts.pinned(e.opts.serverCPU, bin, append([]string{"--listen", addr}, args...)...)...)
	if err != nil {
		return nil, "", err
	}
	if err := waitListening(ctx, p, addr); err != nil {
		p.stop()
		return nil, "", err
	}
	return p, addr, nil
}

func startConduit(ctx context.Context, e *benchEnv, _ protocol, target string) (*deployment, error) {
	p, l, err := e.startConduitProxy(ctx, target)
	return single(p, l.in, err)
}

// conduitListeners are the addresses of one conduit-proxy.
type conduitListeners struct{ in, out, admin string }

// startConduitProxy runs one conduit-proxy in explicit inbound mode in front
// of target, with extra flags.
func (e *benchEnv) startConduitProxy(ctx context.Context, target string, extra ...string) (*proc, conduitListeners, error) {
	return e.startConduitProxyAt(ctx, "", target, extra...)
}

// startConduitProxyAt is startConduitProxy with a chosen inbound address
// (empty: a free one).
func (e *benchEnv) startConduitProxyAt(ctx context.Context, inbound, target string, extra ...string) (*proc, conduitListeners, error) {
	return e.startProxyBin(ctx, e.bins.conduitProxy, nil, inbound, target, extra...)
}

// startProxyBin is startConduitProxyAt for the conduit-proxy binary bin (a
// variant) with extra environment variables env.
func (e *benchEnv) startProxyBin(ctx context.Context, bin string, env []string, inbound, target string, extra ...string) (*proc, conduitListeners, error) {
	var addrs [3]string
	for i := range addrs {
		a, err := freeAddr()
		if err != nil {
			return nil, conduitListeners{}, err
		}
		addrs[i] = a
	}
	if inbound != "" {
		addrs[0] = inbound
	}
	l := conduitListeners{in: addrs[0], out: addrs[1], admin: addrs[2]}
	in, out, admin := l.in, l.out, l.admin
	args := append([]string{"run", "--inbound-listen", in, "--inbound-target", target, "--outbound-listen", out, "--admin-listen", admin}, extra...)
	// gctrace: one line per collection in the log, counted by measure.
	env = append(env[:len(env):len(env)], "GODEBUG=gctrace=1")
	p, err := start(e.dir, env, e.opts.pinned(e.opts.serverCPU, bin, args...)...)
	if err != nil {
		return nil, l, err
	}
	if err := waitReady(ctx, p, "http://"+admin+"/ready"); err != nil {
		p.stop()
		return nil, l, err
	}
	return p, l, nil
}

func startHAProxy(ctx context.Context, e *benchEnv, p protocol, target string) (*deployment, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	cfg := haproxyConfig(p.haproxyMode, addr, target)
	path := filepath.Join(e.dir, "haproxy-"+p.name+".cfg")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		return nil, err
	}
	pr, err := start(e.dir, nil, e.opts.pinned(e.opts.serverCPU, e.bins.haproxy, "-f", path, "-db")...)
	if err != nil {
		return nil, err
	}
	if err := waitListening(ctx, pr, addr); err != nil {
		pr.stop()
		return nil, err
	}
	return single(pr, addr, nil)
}

// haproxyConfig is a lean single-threaded HAProxy in front of target: HTTP
// mode with connection reuse for HTTP/1.1, h2 on both sides for HTTP/2 and
// gRPC, TCP mode for opaque TCP.
func haproxyConfig(mode, listen, target string) string {
	proxyMode, bindProto, serverProto, reuse := "http", "", "", "    http-reuse always\n"
	switch mode {
	case "h2":
		bindProto, serverProto = " proto h2", " proto h2"
	case "tcp":
		proxyMode, reuse = "tcp", ""
	}
	var b strings.Builder
	fmt.Fprintf(&b, `global
    nbthread 1
    maxconn 4096

defaults
    mode %s
    timeout connect 5s
    timeout client 60s
    timeout server 60s

frontend fe
    bind %s%s
    default_backend be

backend be
%s    server s1 %s%s
`, proxyMode, listen, bindProto, reuse, target, serverProto)
	return b.String()
}
