package proxy

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func adminDo(t *testing.T, p *Proxy, method, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(method, "http://"+p.AdminAddr()+path, strings.NewReader(body))
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestAdmin(t *testing.T) {
	level := new(slog.LevelVar)
	p := startProxy(t, Config{InboundTarget: "127.0.0.1:1", LogLevel: level})
	tests := []struct {
		method, path, body string
		code               int
		want               string
	}{
		{"GET", "/ready", "", 200, "ready\n"},
		{"GET", "/live", "", 200, "live\n"},
		{"GET", "/log-level", "", 200, "info\n"},
		{"PUT", "/log-level", "debug\n", 200, "debug\n"},
		{"GET", "/log-level", "", 200, "debug\n"},
		{"PUT", "/log-level", "chatty", 400, "invalid log level chatty"},
		{"GET", "/shutdown", "", 405, ""},
		{"GET", "/nope", "", 404, ""},
	}
	for _, tt := range tests {
		code, body := adminDo(t, p, tt.method, tt.path, tt.body)
		if code != tt.code || !strings.Contains(body, tt.want) {
			t.Errorf("%s %s: %d %q, want %d %q", tt.method, tt.path, code, body, tt.code, tt.want)
		}
	}
	if level.Level() != slog.LevelDebug {
		t.Errorf("level = %v after PUT debug", level.Level())
	}
	code, body := adminDo(t, p, "GET", "/metrics", "")
	if code != 200 || !strings.Contains(body, "# TYPE request_total counter") {
		t.Errorf("/metrics: %d %q", code, body)
	}
}

func TestAdminShutdown(t *testing.T) {
	p, err := New(Config{InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", InboundTarget: "127.0.0.1:1", ShutdownGrace: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(context.Background()) }()
	waitFor(t, "admin up", func() bool {
		resp, err := http.Get("http://" + p.AdminAddr() + "/live")
		if err == nil {
			resp.Body.Close()
		}
		return err == nil
	})
	if code, body := adminDo(t, p, "POST", "/shutdown", ""); code != 200 || body != "shutdown\n" {
		t.Errorf("POST /shutdown: %d %q", code, body)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("POST /shutdown did not stop the proxy")
	}
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
}

// recorder is a test Observer.
type recorder struct {
	mu     sync.Mutex
	events []string
}

func (r *recorder) Active() bool { return true }

func (r *recorder) RequestStarted(req *Request) Observation {
	r.add("start " + req.Direction + " " + req.Method + " " + req.Path + " -> " + req.Destination.String())
	return &recObs{r: r}
}

func (r *recorder) add(s string) {
	r.mu.Lock()
	r.events = append(r.events, s)
	r.mu.Unlock()
}

type recObs struct{ r *recorder }

func (o *recObs) ResponseStarted(rsp *Response) {
	o.r.add("response " + http.StatusText(rsp.Status))
}

func (o *recObs) Ended(e EndInfo) {
	o.r.add("end " + http.StatusText(e.Status) + " proxy_error=" + e.ProxyError)
}

func TestObserver(t *testing.T) {
	app := testBackend(t, nil)
	rec := &recorder{}
	p := startProxy(t, Config{InboundTarget: app, Observer: rec})
	c := newClient(t)
	resp, err := c.Get("http://" + p.InboundAddr() + "/status/404")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	want := []string{
		"start inbound GET /status/404 -> " + app,
		"response Not Found",
		"end Not Found proxy_error=",
	}
	waitFor(t, "observer events", func() bool {
		rec.mu.Lock()
		defer rec.mu.Unlock()
		return len(rec.events) == len(want)
	})
	for i := range want {
		if rec.events[i] != want[i] {
			t.Errorf("event %d = %q, want %q", i, rec.events[i], want[i])
		}
	}
}

// TestDrainCutsDetectionShort: a client that connected but sent nothing
// does not hold the drain for the whole detection timeout.
func TestDrainCutsDetectionShort(t *testing.T) {
	p, err := New(Config{InboundAddr: "127.0.0.1:0", InboundTarget: "127.0.0.1:1", DetectTimeout: time.Minute, ShutdownGrace: time.Minute})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	c, err := net.Dial("tcp", p.InboundAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	time.Sleep(100 * time.Millisecond)
	cancel()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("drain waited for a silent client's detection timeout")
	}
}

// switchable is an Observer whose Active the test controls.
type switchable struct {
	recorder
	active atomic.Bool
}

func (s *switchable) Active() bool { return s.active.Load() }

// TestActiveObserver: while nobody observes, requests take the fast path
// and the Observer sees nothing; once it is active, the next request on the
// same keep-alive connection is observed.
func TestActiveObserver(t *testing.T) {
	app := testBackend(t, nil)
	obs := &switchable{}
	p := startProxy(t, Config{InboundTarget: app, Observer: obs})
	c := newClient(t)
	get := func(path string) {
		t.Helper()
		resp, err := c.Get("http://" + p.InboundAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get("/status/200")
	obs.active.Store(true)
	get("/status/201")
	obs.active.Store(false)
	waitFor(t, "the observed request", func() bool {
		obs.mu.Lock()
		defer obs.mu.Unlock()
		return len(obs.events) == 3
	})
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if !strings.HasPrefix(obs.events[0], "start inbound GET /status/201") {
		t.Errorf("events %q: want only the request made while active", obs.events)
	}
	wantMetric(t, p, 1, "tcp_open_total", `direction="inbound"`, `peer="src"`)
}

func TestAdminExtensions(t *testing.T) {
	p := startProxy(t, Config{
		InboundTarget: "127.0.0.1:1",
		AdminRoutes: map[string]http.Handler{
			"POST /example.v1.Svc/Method": http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, r.Proto)
			}),
		},
		ExtraMetrics: []func(io.Writer) error{func(w io.Writer) error {
			_, err := io.WriteString(w, "# TYPE tap_dropped_total counter\ntap_dropped_total 0\n")
			return err
		}},
	})
	resp, err := newH2CClient(t).Post("http://"+p.AdminAddr()+"/example.v1.Svc/Method", "application/grpc", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/2.0" {
		t.Errorf("admin route over h2c answered %q", b)
	}
	if _, body := adminDo(t, p, "GET", "/metrics", ""); !strings.Contains(body, "\ntap_dropped_total 0\n") {
		t.Errorf("extra metrics missing")
	}
}

// TestMemoryLimitFollowsConnections: the soft memory limit grows with open
// connections and returns to the base when they close.
func TestMemoryLimitFollowsConnections(t *testing.T) {
	prev := debug.SetMemoryLimit(-1)
	t.Cleanup(func() { debug.SetMemoryLimit(prev) })
	const base = 100 << 20 // high enough not to disturb the test process
	app := startTCPBackend(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	p := startProxy(t, Config{InboundTarget: app, MemoryLimit: base, MemoryPerConnection: 64 << 10, DetectTimeout: 50 * time.Millisecond})
	if got := debug.SetMemoryLimit(-1); got != base {
		t.Fatalf("limit %d, want %d", got, base)
	}
	var conns []net.Conn
	for range 20 {
		c, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	waitFor(t, "the limit to grow", func() bool { return debug.SetMemoryLimit(-1) >= base+16*(64<<10) })
	for _, c := range conns {
		c.Close()
	}
	waitFor(t, "the limit to come back", func() bool { return debug.SetMemoryLimit(-1) == base })
}

// readyProvider is a tlsconf.Provider whose certificate arrives when told.
type readyProvider struct{ ready atomic.Bool }

func (p *readyProvider) LocalID() string                 { return "spiffe://cluster.local/ns/t/sa/t" }
func (p *readyProvider) ServerConfig() *tls.Config       { return nil }
func (p *readyProvider) ClientConfig(string) *tls.Config { return nil }
func (p *readyProvider) Ready() bool                     { return p.ready.Load() }

func TestAdminReadyWaitsForIdentity(t *testing.T) {
	id := &readyProvider{}
	p := startProxy(t, Config{InboundTarget: "127.0.0.1:1", TLS: id})
	if code, body := adminDo(t, p, "GET", "/ready", ""); code != 503 || !strings.Contains(body, "identity not ready") {
		t.Errorf("/ready without a certificate: %d %q, want 503 identity not ready", code, body)
	}
	id.ready.Store(true)
	if code, body := adminDo(t, p, "GET", "/ready", ""); code != 200 {
		t.Errorf("/ready with a certificate: %d %q, want 200", code, body)
	}
}

// TestDrainEndsIdleKeepAliveGracefully: a keep-alive connection the drain
// closes while the client sends its next request gets an end of stream
// (which clients retry) or the response, never a reset.
func TestDrainEndsIdleKeepAliveGracefully(t *testing.T) {
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	for i := range 20 {
		p := startProxy(t, Config{InboundTarget: app})
		c, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		br := bufio.NewReader(c)
		const req = "GET / HTTP/1.1\r\nHost: app\r\n\r\n"
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		// The connection is idle: drain, and send the next request at
		// about the same moment (sooner or later by turns).
		go p.Shutdown()
		time.Sleep(time.Duration(i%5) * 200 * time.Microsecond)
		io.WriteString(c, req)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		resp, err = http.ReadResponse(br, nil)
		switch {
		case err == nil:
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		default:
			t.Errorf("round %d: the next request met %v, want a response or an end of stream", i, err)
		}
		c.Close()
	}
}
