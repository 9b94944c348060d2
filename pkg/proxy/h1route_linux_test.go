package proxy

import (
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// TestH1RouteTimeoutBoundsConnectAndBody: over HTTP/1.1 a route's request
// timeout counts the connect (a hanging one is answered 504 "request
// timeout", not left to the 10 s connect timeout) and a client's body that
// stalls (504, the connection closed), on the fast path (which hands
// nothing to net/http's path) and on net/http's (where the Transport held
// the answer until the stalled body's read returned).
func TestH1RouteTimeoutBoundsConnectAndBody(t *testing.T) {
	for _, path := range httpPaths[:2] {
		t.Run(path.name, func(t *testing.T) { testH1RouteTimeout(t, path.cfg) })
	}
}

func testH1RouteTimeout(t *testing.T, cfg Config) {
	const (
		hung  = "hung.shop.svc.cluster.local:80"
		upped = "upload.shop.svc.cluster.local:80"
	)
	backend := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, "read")
	}))
	timed := &destinationv1.OutboundRoutes{Found: true, ServicePolicy: &destinationv1.RoutePolicy{RequestTimeoutMs: 200}}
	cfg.ConnectTimeout = 10 * time.Second
	cfg.Resolver = &fakeResolver{eps: map[string][]resolve.Endpoint{hung: {{Addr: unansweredAddr(t)}}, upped: {{Addr: backend}}}}
	cfg.Routes = fakeRoutes{hung: decodeRoutes(t, hung, timed), upped: decodeRoutes(t, upped, timed)}
	p := startProxy(t, cfg)

	req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
	req.Host = "hung.shop.svc.cluster.local"
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 504 || resp.Header.Get(ErrorHeader) != "request timeout" {
		t.Errorf("hanging connect: %d %s=%q, want 504 request timeout", resp.StatusCode, ErrorHeader, resp.Header.Get(ErrorHeader))
	}

	// A body announced as 10 bytes, 5 sent, then nothing.
	c, br := rawConn(t, p.OutboundAddr())
	io.WriteString(c, "POST / HTTP/1.1\r\nHost: upload.shop.svc.cluster.local\r\nContent-Length: 10\r\n\r\n12345")
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("stalled body: %v, want a 504 at the route's timeout", err)
	}
	io.ReadAll(resp.Body)
	if resp.StatusCode != 504 || resp.Header.Get(ErrorHeader) != "request timeout" {
		t.Errorf("stalled body: %d %s=%q, want 504 request timeout", resp.StatusCode, ErrorHeader, resp.Header.Get(ErrorHeader))
	}
	if rest, err := io.ReadAll(br); err != nil || len(rest) != 0 {
		t.Errorf("after the 504: %q %v, want the connection closed", rest, err)
	}

	// Within the timeout: answered, and the connection kept.
	c2, br := rawConn(t, p.OutboundAddr())
	for i := range 2 {
		io.WriteString(c2, "POST / HTTP/1.1\r\nHost: upload.shop.svc.cluster.local\r\nContent-Length: 10\r\n\r\n0123456789")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || strings.TrimSpace(string(b)) != "read" {
			t.Errorf("request %d: %d %q", i, resp.StatusCode, b)
		}
	}
	wantMetric(t, p, 2, "conduit_proxy_errors_total", `error="request_timeout"`)
	if n := p.h1HandedOff.Load(); !cfg.DisableFastPath && n != 0 {
		t.Errorf("the HTTP/1.1 fast path handed %d connections to net/http's path, want none", n)
	}
}
