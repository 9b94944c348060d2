package proxy

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
)

// detailRecorder records what an Observer is told, in detail.
type detailRecorder struct {
	mu     sync.Mutex
	events []string
}

func (r *detailRecorder) add(format string, args ...any) {
	r.mu.Lock()
	r.events = append(r.events, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *detailRecorder) Active() bool { return true }

func (r *detailRecorder) RequestStarted(req *Request) Observation {
	// The authority is the proxy's own address here: it differs between
	// the proxies compared, so only its presence is recorded.
	r.add("start %s %s %s authority=%v x-test=%q authorization=%q tls=%v", req.Direction, req.Method, req.Path,
		req.Authority != "", req.HeaderValue("X-Test"), req.HeaderValue("Authorization"), req.TLS)
	return &detailObs{r: r}
}

type detailObs struct{ r *detailRecorder }

func (o *detailObs) ResponseStarted(rsp *Response) {
	o.r.add("response %d content-type=%q", rsp.Status, rsp.HeaderValue("Content-Type"))
}

func (o *detailObs) Ended(e EndInfo) {
	o.r.add("end %d bytes=%d proxy_error=%s failed=%v", e.Status, e.ResponseBytes, e.ProxyError, e.Err != nil)
}

func (r *detailRecorder) wait(t *testing.T, n int) []string {
	t.Helper()
	waitFor(t, fmt.Sprintf("%d observer events", n), func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return len(r.events) >= n
	})
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.events...)
}

// TestObserverOnBothHTTP1Paths: an observed HTTP/1.1 request stays on the
// fast path, and the Observer is told exactly what the net/http path tells
// it — request, response, body bytes (Content-Length and chunked), proxy
// errors.
func TestObserverOnBothHTTP1Paths(t *testing.T) {
	app := testBackend(t, nil)
	// Ended may come just after the client has the response: wait for
	// all n events.
	observe := func(t *testing.T, target string, fast bool, n int, do func(c *http.Client, base string)) []string {
		rec := &detailRecorder{}
		p := startProxy(t, Config{InboundTarget: target, Observer: rec, DisableFastPath: !fast})
		do(newClient(t), "http://"+p.InboundAddr())
		return rec.wait(t, n)
	}
	send := func(t *testing.T, c *http.Client, method, url, body string) {
		t.Helper()
		req, err := http.NewRequest(method, url, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		if body == "" {
			req.Body = nil
		}
		req.Header.Set("X-Test", "a b")
		req.Header.Set("Authorization", "Bearer secret")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	requests := func(t *testing.T) func(*http.Client, string) {
		return func(c *http.Client, base string) {
			send(t, c, http.MethodGet, base+"/status/503", "")
			send(t, c, http.MethodPost, base+"/echo?x=1", "hello")
			send(t, c, http.MethodGet, base+"/trailers", "") // chunked: "part1;" + "part2"
		}
	}
	fast := observe(t, app, true, 9, requests(t))
	slow := observe(t, app, false, 9, requests(t))
	if strings.Join(fast, "\n") != strings.Join(slow, "\n") {
		t.Errorf("the fast path told the Observer:\n%s\nthe net/http path:\n%s", strings.Join(fast, "\n"), strings.Join(slow, "\n"))
	}
	for i, sub := range map[int]string{
		0: `GET /status/503`, 1: "response 503", 2: "end 503 bytes=0 proxy_error= failed=false",
		3: `POST /echo`, 5: "end 200 bytes=5 ", 8: "end 200 bytes=11 ",
	} {
		if !strings.Contains(fast[i], sub) {
			t.Errorf("event %d = %q, want it to contain %q", i, fast[i], sub)
		}
	}
	if !strings.Contains(fast[0], `x-test="a b" authorization="Bearer secret"`) {
		t.Errorf("request headers not observed: %q", fast[0])
	}

	// The proxy's own answer when the application is down.
	down := func(c *http.Client, base string) { send(t, c, http.MethodGet, base+"/", "") }
	fast = observe(t, "127.0.0.1:1", true, 3, down)
	slow = observe(t, "127.0.0.1:1", false, 3, down)
	if len(fast) != 3 || !strings.HasPrefix(fast[1], "response 502") || !strings.HasSuffix(fast[2], "proxy_error=connect_refused failed=true") {
		t.Errorf("fast path, application down: %q; want start, the proxy's 502 and an end with its reason", fast)
	}
	if strings.Join(fast, "\n") != strings.Join(slow, "\n") {
		t.Errorf("application down: the fast path told the Observer:\n%s\nthe net/http path:\n%s", strings.Join(fast, "\n"), strings.Join(slow, "\n"))
	}
}
