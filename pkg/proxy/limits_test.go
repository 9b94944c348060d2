package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"testing"
	"time"
)

// limitsBackend serves /ok, /block (until release is closed or the request
// is cancelled), /big (8 MiB) and /drain (reads the whole body).
func limitsBackend(t *testing.T, release <-chan struct{}) (addr string, started <-chan struct{}) {
	start := make(chan struct{}, 16)
	mux := http.NewServeMux()
	mux.HandleFunc("/ok", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })
	mux.HandleFunc("/block", func(w http.ResponseWriter, r *http.Request) {
		start <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
		io.WriteString(w, "unblocked")
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("x"), 64<<10)
		for range 128 {
			if _, err := w.Write(chunk); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/drain", func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%d %v", n, err)
	})
	return startHTTPBackend(t, mux), start
}

// paths runs f for the HTTP/1.1 fast path, the net/http path and h2c.
var limitPaths = []struct {
	name            string
	disableFastPath bool
	h2c             bool
}{{"fast path", false, false}, {"net/http", true, false}, {"h2c", false, true}}

func TestConnectionCap(t *testing.T) {
	app, _ := limitsBackend(t, nil)
	p := startProxy(t, Config{InboundTarget: app, MaxConnections: 3})
	var idle []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	waitFor(t, "3 connections held", func() bool { return p.inbound.conns.n.Load() == 3 })

	// The fourth is reset before it gets an answer.
	if c, err := net.Dial("tcp", p.InboundAddr()); err == nil {
		io.WriteString(c, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		b, err := io.ReadAll(c)
		if len(b) > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("request past the connection cap: %q (err %v), want the connection closed unanswered", b, err)
		}
		c.Close()
	}
	wantMetric(t, p, 1, "conduit_proxy_errors_total", `direction="inbound"`, `error="connection_limit"`)

	// An idle connection served ...
	if _, err := io.WriteString(idle[0], "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(idle[0]), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("request on a held connection: %v %v", resp, err)
	}
	resp.Body.Close()
	// ... and one closed makes room for a new one.
	idle[1].Close()
	waitFor(t, "a slot freed", func() bool { return p.inbound.conns.n.Load() == 2 })
	if status, err := rawRequest(t, p.InboundAddr(), "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n"); !strings.Contains(status, "200") {
		t.Errorf("request after a slot freed: %q (err %v), want 200", status, err)
	}
}

func TestRequestCap(t *testing.T) {
	for _, tc := range limitPaths {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			app, started := limitsBackend(t, release)
			p := startProxy(t, Config{InboundTarget: app, MaxRequests: 1, DisableFastPath: tc.disableFastPath})
			client := newClient(t)
			if tc.h2c {
				client = newH2CClient(t)
			}
			url := "http://" + p.InboundAddr()
			blocked := make(chan error, 1)
			go func() {
				resp, err := client.Get(url + "/block")
				if err == nil {
					resp.Body.Close()
					if resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				blocked <- err
			}()
			<-started
			resp, err := client.Get(url + "/ok")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(resp.Header.Get(ErrorHeader), "too many requests in flight") {
				t.Errorf("request past the cap: %d %q, want 503 and the reason", resp.StatusCode, resp.Header.Get(ErrorHeader))
			}
			wantMetric(t, p, 1, "conduit_proxy_errors_total", `direction="inbound"`, `error="request_limit"`)
			close(release)
			if err := <-blocked; err != nil {
				t.Errorf("the admitted request: %v", err)
			}
			// The slot is given back once the exchange is accounted for,
			// which may be just after the client read the response.
			waitFor(t, "the request slot given back", func() bool { return p.inbound.requests.n.Load() == 0 })
			resp, err = client.Get(url + "/ok")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("request once the slot is free: %v %v", resp, err)
			}
			resp.Body.Close()
		})
	}
}

func TestHeaderFieldCap(t *testing.T) {
	app, _ := limitsBackend(t, nil)
	for _, tc := range limitPaths {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, Config{InboundTarget: app, DisableFastPath: tc.disableFastPath})
			client := newClient(t)
			if tc.h2c {
				client = newH2CClient(t)
			}
			for _, n := range []int{50, maxHeaderFields + 20} {
				req, _ := http.NewRequest("GET", "http://"+p.InboundAddr()+"/ok", nil)
				for i := range n {
					req.Header.Set(fmt.Sprintf("X-F%d", i), "v")
				}
				resp, err := client.Do(req)
				if err != nil {
					t.Fatalf("%d fields: %v", n, err)
				}
				resp.Body.Close()
				want := 200
				if n > maxHeaderFields {
					want = http.StatusRequestHeaderFieldsTooLarge
				}
				if resp.StatusCode != want {
					t.Errorf("%d header fields: %d, want %d", n, resp.StatusCode, want)
				}
			}
		})
	}
}

func TestH1ParserFieldCap(t *testing.T) {
	head := "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("A: b\r\n", maxHeaderFields) + "\r\n"
	var h h1Head
	if err := parseH1Head([]byte(head), true, &h); !errors.Is(err, errTooManyHeaders) {
		t.Errorf("%d fields: %v, want errTooManyHeaders", maxHeaderFields+1, err)
	}
	if len(h.headers) > maxHeaderFields {
		t.Errorf("the parser kept %d fields, want at most %d", len(h.headers), maxHeaderFields)
	}
}

// TestBodyIdleTimeout: a request body that stalls, and a response the
// client stops reading, end their connection after BodyIdleTimeout.
func TestBodyIdleTimeout(t *testing.T) {
	app, _ := limitsBackend(t, nil)
	for _, tc := range limitPaths[:2] {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, Config{InboundTarget: app, DisableFastPath: tc.disableFastPath, BodyIdleTimeout: 200 * time.Millisecond})
			for _, req := range []string{
				"POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf.",
				"POST /drain HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhalf.\r\n",
			} {
				c, err := net.Dial("tcp", p.InboundAddr())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				io.WriteString(c, req)
				c.SetReadDeadline(time.Now().Add(10 * time.Second))
				start := time.Now()
				b, err := io.ReadAll(c)
				if err != nil {
					t.Errorf("%q: the proxy did not close a stalled upload's connection: %v", req, err)
				}
				t.Logf("stalled upload ended after %v with %q", time.Since(start).Round(time.Millisecond), firstLine(b))
			}

			if tc.disableFastPath {
				wantMetric(t, p, 2, "conduit_proxy_errors_total", `direction="inbound"`, `error="body_timeout"`)
			}

			// A client that never reads an 8 MiB response.
			c, err := net.Dial("tcp", p.InboundAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.(*net.TCPConn).SetReadBuffer(4 << 10)
			io.WriteString(c, "GET /big HTTP/1.1\r\nHost: x\r\n\r\n")
			wantMetric(t, p, 0, "tcp_open_connections", `direction="inbound"`, `peer="src"`)
			// The stalled uploads and the reader; the fast path counts
			// only the upload it hands to net/http (chunked), not its own
			// (a read on its connection may also be the watch for a
			// client that leaves).
			want := 3.0
			if !tc.disableFastPath {
				want = 2
			}
			wantMetric(t, p, want, "conduit_proxy_errors_total", `direction="inbound"`, `error="body_timeout"`)
		})
	}
}

func firstLine(b []byte) string {
	line, _, _ := bytes.Cut(b, []byte("\r\n"))
	return string(line)
}

// panicObserver panics while starting a request to /panic: a stand-in for
// a bug in the proxy's request handling.
type panicObserver struct{}

func (panicObserver) Active() bool { return true }

func (panicObserver) RequestStarted(r *Request) Observation {
	if r.Path == "/panic" {
		panic("test: a bug in request handling")
	}
	return nil
}

func TestPanicClosesOnlyItsConnection(t *testing.T) {
	app, _ := limitsBackend(t, nil)
	for _, tc := range limitPaths {
		t.Run(tc.name, func(t *testing.T) {
			p := startProxy(t, Config{InboundTarget: app, DisableFastPath: tc.disableFastPath, Observer: panicObserver{}})
			newC := newClient
			if tc.h2c {
				newC = newH2CClient
			}
			// client's connection must survive; HTTP/2's panic is on a
			// stream of that same connection.
			client, other := newC(t), newC(t)
			if tc.h2c {
				other = client
			}
			url := "http://" + p.InboundAddr()
			get := func(c *http.Client, path string) (resp *http.Response, reused bool, err error) {
				ctx := httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
					GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused },
				})
				req, _ := http.NewRequestWithContext(ctx, "GET", url+path, nil)
				resp, err = c.Do(req)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
				return resp, reused, err
			}
			if resp, _, err := get(client, "/ok"); err != nil || resp.StatusCode != 200 {
				t.Fatalf("before the panic: %v %v", resp, err)
			}
			if resp, _, err := get(other, "/panic"); err == nil {
				t.Errorf("a request whose handling panicked got %d, want a closed connection or reset stream", resp.StatusCode)
			}
			resp, reused, err := get(client, "/ok")
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("after the panic: %v %v", resp, err)
			}
			if !reused {
				t.Errorf("the other connection did not survive the panic")
			}
			wantMetric(t, p, 1, "conduit_proxy_panics_total", `direction="inbound"`)
		})
	}
}

// TestBodyIdleTimeoutSparesTheNextRequest: the deadlines of one request do
// not cut the next on the same connection, which may come later than
// BodyIdleTimeout and have net/http write a 100 Continue itself.
func TestBodyIdleTimeoutSparesTheNextRequest(t *testing.T) {
	app, _ := limitsBackend(t, nil)
	p := startProxy(t, Config{InboundTarget: app, DisableFastPath: true, BodyIdleTimeout: 200 * time.Millisecond})
	c, err := net.Dial("tcp", p.InboundAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	io.WriteString(c, "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nfirst")
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("first request: %v %v", resp, err)
	}
	io.Copy(io.Discard, resp.Body)
	time.Sleep(500 * time.Millisecond)
	io.WriteString(c, "POST /drain HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil || !strings.Contains(line, "100") {
		t.Fatalf("second request, after a pause: %q %v, want 100 Continue", line, err)
	}
	br.ReadString('\n')
	io.WriteString(c, "later")
	resp, err = http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("second request: %v %v", resp, err)
	}
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "5 <nil>" {
		t.Errorf("the application read %q, want 5 bytes", b)
	}
}

// TestBodyIdleTimeoutSparesQuietHTTP2Streams: an HTTP/2 stream whose
// client and server both pause for longer than BodyIdleTimeout (a gRPC
// bidirectional stream, a watch) goes on, on both paths: on HTTP/2 a
// quiet stream holds one of its connection's bounded streams, and
// net/http's stream deadlines fire whether or not anything is written.
func TestBodyIdleTimeoutSparesQuietHTTP2Streams(t *testing.T) {
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		buf := make([]byte, 64)
		for {
			n, err := r.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				http.NewResponseController(w).Flush()
			}
			if err != nil {
				return
			}
		}
	}))
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableFastPath=%v", disable), func(t *testing.T) {
			const idle = 200 * time.Millisecond
			p := startProxy(t, Config{InboundTarget: app, DisableFastPath: disable, BodyIdleTimeout: idle})
			pr, pw := io.Pipe()
			defer pw.Close()
			req, _ := http.NewRequest("POST", "http://"+p.InboundAddr()+"/", pr)
			resp, err := newH2CClient(t).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			if resp.ProtoMajor != 2 {
				t.Fatalf("got %s, want HTTP/2", resp.Proto)
			}
			for _, msg := range []string{"first", "second", "third"} {
				if _, err := io.WriteString(pw, msg); err != nil {
					t.Fatal(err)
				}
				got := make([]byte, len(msg))
				if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != msg {
					t.Fatalf("echo of %q: %q %v", msg, got, err)
				}
				time.Sleep(3 * idle) // both sides quiet
			}
			pw.Close()
			if rest, err := io.ReadAll(resp.Body); err != nil || len(rest) != 0 {
				t.Errorf("end of the stream: %q %v", rest, err)
			}
		})
	}
}
