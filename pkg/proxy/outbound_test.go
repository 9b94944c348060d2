package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// fakeResolver is a mutable table for tests.
type fakeResolver struct {
	mu  sync.Mutex
	eps map[string][]resolve.Endpoint
	err error
}

func (f *fakeResolver) Endpoints(_ context.Context, authority string) ([]resolve.Endpoint, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return nil, f.err
	}
	eps, ok := f.eps[authority]
	if !ok {
		return nil, resolve.ErrNotFound
	}
	return eps, nil
}

func nameBackend(t *testing.T, name string) string {
	return startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(20 * time.Millisecond) // so that concurrent requests pile up
		io.WriteString(w, name+" "+r.Host)
	}))
}

func TestOutboundRouting(t *testing.T) {
	a, b := nameBackend(t, "a"), nameBackend(t, "b")
	res := &fakeResolver{eps: map[string][]resolve.Endpoint{
		"web.default.svc.cluster.local:80": {
			{Addr: a, Labels: map[string]string{"namespace": "default", "deployment": "web", "pod": "web-a"}},
			{Addr: b, Labels: map[string]string{"namespace": "default", "deployment": "web", "pod": "web-b"}},
		},
		"empty:80": {},
	}}
	p := startProxy(t, Config{Resolver: res})
	c := newClient(t)
	get := func(host string) (*http.Response, string) {
		req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
		req.Host = host
		resp, err := c.Do(req)
		if err != nil {
			t.Error(err)
			return &http.Response{}, ""
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(body)
	}

	seen := map[string]int{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for range 8 { // concurrent clients: outstanding load spreads over both
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5 {
				resp, body := get("Web.default.svc.cluster.local")
				if resp.StatusCode != 200 {
					t.Errorf("status %d %q", resp.StatusCode, body)
					return
				}
				name, host, _ := strings.Cut(body, " ")
				if host != "Web.default.svc.cluster.local" {
					t.Errorf("the application saw Host %q, want the client's", host)
				}
				mu.Lock()
				seen[name]++
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if seen["a"] == 0 || seen["b"] == 0 {
		t.Errorf("requests were not spread over both endpoints: %v", seen)
	}

	resp, _ := get("unknown.example")
	if resp.StatusCode != 502 || resp.Header.Get(ErrorHeader) != "no route for authority" {
		t.Errorf("unknown authority: %d %q", resp.StatusCode, resp.Header.Get(ErrorHeader))
	}
	resp, _ = get("empty")
	if resp.StatusCode != 503 || resp.Header.Get(ErrorHeader) != "no endpoints available" {
		t.Errorf("no endpoints: %d %q", resp.StatusCode, resp.Header.Get(ErrorHeader))
	}

	wantMetric(t, p, float64(seen["a"]), "response_total", `direction="outbound"`, `authority="web.default.svc.cluster.local:80"`, `dst_deployment="web"`, `dst_pod="web-a"`, `status_code="200"`)
	wantMetric(t, p, 1, "conduit_proxy_errors_total", `direction="outbound"`, `error="unknown_authority"`)
	wantMetric(t, p, 1, "conduit_proxy_errors_total", `direction="outbound"`, `error="no_endpoints"`)
}

func TestOutboundH2C(t *testing.T) {
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	}))
	p := startProxy(t, Config{Resolver: resolve.Static{"api:8080": {{Addr: app}}}})
	req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
	req.Host = "api:8080"
	resp, err := newH2CClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "HTTP/2.0" {
		t.Errorf("the application saw %q, want HTTP/2.0 end to end", b)
	}
}

// TestErrorKeepsConnectionInSync: a request with a body that the proxy
// answers itself (unknown authority) must not leave its body to be read as
// the next request on the keep-alive connection.
func TestErrorKeepsConnectionInSync(t *testing.T) {
	app := nameBackend(t, "a")
	p := startProxy(t, Config{Resolver: resolve.Static{"known:80": {{Addr: app}}}})
	conn, err := net.Dial("tcp", p.OutboundAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	smuggled := "GET /smuggled HTTP/1.1\r\nHost: known\r\n\r\n"
	io.WriteString(conn, "POST / HTTP/1.1\r\nHost: unknown\r\nContent-Length: "+strconv.Itoa(len(smuggled))+"\r\n\r\n"+smuggled+
		"GET /real HTTP/1.1\r\nHost: known\r\n\r\n")
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != 502 {
		t.Fatalf("first: %d, want 502", resp.StatusCode)
	}
	resp, err = http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "a known" {
		t.Errorf("second: %d %q, want the /real request answered", resp.StatusCode, b)
	}
	wantMetric(t, p, 1, "request_total", `authority="known:80"`)
}
