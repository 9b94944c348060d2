package proxy

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// testBackend is an application with the endpoints the HTTP tests need.
func testBackend(t testing.TB, release <-chan struct{}) string {
	mux := http.NewServeMux()
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		for k, v := range r.Header {
			w.Header()["X-Seen-"+k] = v
		}
		w.Header().Set("X-Seen-Host", r.Host)
		w.Header().Set("X-Seen-Te", strings.Join(r.TransferEncoding, ","))
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/sum", func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		fmt.Fprintf(w, "%d %x", n, h.Sum(nil))
	})
	mux.HandleFunc("/big", func(w http.ResponseWriter, r *http.Request) {
		chunk := bytes.Repeat([]byte("0123456789abcdef"), 4096) // 64 KiB
		for range 128 {                                         // 8 MiB
			w.Write(chunk)
		}
	})
	mux.HandleFunc("/trailers", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Checksum")
		w.Write([]byte("part1;"))
		w.(http.Flusher).Flush()
		w.Write([]byte("part2"))
		w.Header().Set("X-Checksum", "abc")
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		w.Write([]byte("first\n"))
		w.(http.Flusher).Flush()
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		w.Write([]byte("second\n"))
	})
	mux.HandleFunc("/status/{code}", func(w http.ResponseWriter, r *http.Request) {
		var code int
		fmt.Sscan(r.PathValue("code"), &code)
		w.WriteHeader(code)
	})
	mux.HandleFunc("/reject", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusExpectationFailed)
	})
	mux.HandleFunc("/upgrade", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want Upgrade: echo", http.StatusBadRequest)
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		brw.Flush()
		io.Copy(c, brw)
	})
	return startHTTPBackend(t, mux)
}

// TestHTTP1 runs on the fast path and, with it disabled, on net/http.
func TestHTTP1(t *testing.T) {
	for _, disable := range []bool{false, true} {
		t.Run(fmt.Sprintf("DisableFastPath=%v", disable), func(t *testing.T) {
			testHTTP1(t, disable)
		})
	}
}

func testHTTP1(t *testing.T, disableFastPath bool) {
	release := make(chan struct{})
	app := testBackend(t, release)
	p := startProxy(t, Config{InboundTarget: app, DisableFastPath: disableFastPath})
	base := "http://" + p.InboundAddr()
	c := newClient(t)

	t.Run("keep-alive reuses one connection", func(t *testing.T) {
		before := metricSum(scrape(t, p), "tcp_open_total", `direction="inbound"`, `peer="src"`)
		for i := range 5 {
			resp, err := c.Post(base+"/echo", "text/plain", strings.NewReader(fmt.Sprint("hello ", i)))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != fmt.Sprint("hello ", i) {
				t.Fatalf("body = %q", b)
			}
		}
		after := metricSum(scrape(t, p), "tcp_open_total", `direction="inbound"`, `peer="src"`)
		if after-before != 1 {
			t.Errorf("5 keep-alive requests opened %v connections, want 1", after-before)
		}
	})

	t.Run("chunked request and large streamed bodies", func(t *testing.T) {
		data := bytes.Repeat([]byte("x"), 5<<20+3)
		pr, pw := io.Pipe()
		go func() {
			for b := data; len(b) > 0; {
				n := min(len(b), 100_000)
				pw.Write(b[:n])
				b = b[n:]
			}
			pw.Close()
		}()
		req, _ := http.NewRequest("POST", base+"/sum", pr) // unknown length: chunked
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := fmt.Sprintf("%d %x", len(data), sha256.Sum256(data))
		if string(got) != want {
			t.Errorf("backend saw %q, want %q", got, want)
		}
		resp, err = c.Get(base + "/big")
		if err != nil {
			t.Fatal(err)
		}
		n, err := io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil || n != 8<<20 {
			t.Errorf("downloaded %d bytes (err %v), want %d", n, err, 8<<20)
		}
	})

	t.Run("trailers", func(t *testing.T) {
		resp, err := c.Get(base + "/trailers")
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "part1;part2" || resp.Trailer.Get("X-Checksum") != "abc" {
			t.Errorf("body %q trailer %v", b, resp.Trailer)
		}
	})

	t.Run("response streams before it ends", func(t *testing.T) {
		resp, err := c.Get(base + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		br := bufio.NewReader(resp.Body)
		line, err := br.ReadString('\n')
		if err != nil || line != "first\n" {
			t.Fatalf("first line %q, %v", line, err)
		}
		close(release) // the backend sends the rest only now
		rest, _ := io.ReadAll(br)
		if string(rest) != "second\n" {
			t.Errorf("rest = %q", rest)
		}
	})

	t.Run("hop-by-hop headers are removed", func(t *testing.T) {
		req, _ := http.NewRequest("GET", base+"/echo", nil)
		req.Header.Set("Connection", "X-Private, keep-alive")
		req.Header.Set("X-Private", "secret")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("X-Forwarded-For", "10.0.0.9")
		req.Header.Set("X-End-To-End", "kept")
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		h := resp.Header
		if h.Get("X-Seen-X-Private") != "" || h.Get("X-Seen-Keep-Alive") != "" || h.Get("X-Seen-Connection") != "" {
			t.Errorf("hop-by-hop headers reached the app: %v", h)
		}
		if h.Get("X-Seen-X-End-To-End") != "kept" {
			t.Errorf("end-to-end header lost: %v", h)
		}
		if h.Get("X-Seen-X-Forwarded-For") != "10.0.0.9" {
			t.Errorf("X-Forwarded-For = %q, want the client's unchanged", h.Get("X-Seen-X-Forwarded-For"))
		}
		if h.Get("X-Seen-User-Agent") != "Go-http-client/1.1" {
			t.Errorf("User-Agent = %q", h.Get("X-Seen-User-Agent"))
		}
		// The same on the wire, with the token in another case.
		conn, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: app\r\nConnection: x-private\r\nX-Private: secret\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nX-Kept: yes\r\n\r\n")
		raw, err := http.ReadResponse(bufio.NewReader(conn), nil)
		if err != nil {
			t.Fatal(err)
		}
		raw.Body.Close()
		for _, hop := range []string{"X-Private", "Connection", "Proxy-Connection", "Te"} {
			if v := raw.Header.Get("X-Seen-" + hop); v != "" {
				t.Errorf("hop-by-hop %s: %q reached the app", hop, v)
			}
		}
		if raw.Header.Get("X-Seen-X-Kept") != "yes" {
			t.Errorf("end-to-end header lost: %v", raw.Header)
		}
	})

	t.Run("expect 100-continue", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(conn)
		io.WriteString(conn, "POST /echo HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		line, err := br.ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Fatalf("before the body: %q, %v", line, err)
		}
		br.ReadString('\n') // blank line after 100
		io.WriteString(conn, "hello")
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != 200 || string(b) != "hello" {
			t.Errorf("got %d %q", resp.StatusCode, b)
		}
		// A final status before the body: the client never sends it.
		io.WriteString(conn, "POST /reject HTTP/1.1\r\nHost: app\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
		resp, err = http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusExpectationFailed {
			t.Errorf("status %d, want 417", resp.StatusCode)
		}
	})

	t.Run("upgrade passthrough", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET /upgrade HTTP/1.1\r\nHost: app\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
		br := bufio.NewReader(conn)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != 101 {
			t.Fatalf("status %d, want 101", resp.StatusCode)
		}
		io.WriteString(conn, "ping over the upgraded stream")
		buf := make([]byte, len("ping over the upgraded stream"))
		if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "ping over the upgraded stream" {
			t.Errorf("echo %q, %v", buf, err)
		}
	})

	t.Run("proxy-made errors", func(t *testing.T) {
		resp, err := c.Get(base + "/status/503")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 || resp.Header.Get(ErrorHeader) != "" {
			t.Errorf("an application 503 must pass unchanged: %d %q", resp.StatusCode, resp.Header.Get(ErrorHeader))
		}
	})

	wantMetric(t, p, 1, "response_total", `direction="inbound"`, `status_code="503"`, `classification="failure"`)
	waitFor(t, "every request to have its response counted", func() bool {
		m := scrape(t, p)
		req, resp := metricSum(m, "request_total", `direction="inbound"`), metricSum(m, "response_total", `direction="inbound"`)
		return req == resp && req >= 10
	})
}

func TestHTTP1Errors(t *testing.T) {
	// A port nobody listens on.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	p := startProxy(t, Config{InboundTarget: dead})
	c := newClient(t)

	resp, err := c.Get("http://" + p.InboundAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 502 || resp.Header.Get(ErrorHeader) != "connection refused" {
		t.Errorf("got %d %q, want 502 connection refused", resp.StatusCode, resp.Header.Get(ErrorHeader))
	}
	wantMetric(t, p, 1, "conduit_proxy_errors_total", `direction="inbound"`, `error="connect_refused"`)
	wantMetric(t, p, 1, "response_total", `direction="inbound"`, `status_code="502"`)
}

func TestHeaderLimits(t *testing.T) {
	app := testBackend(t, nil)
	p := startProxy(t, Config{InboundTarget: app, MaxHeaderBytes: 4 << 10})
	big := strings.Repeat("a", 64<<10)
	status, _ := rawRequest(t, p.InboundAddr(), "GET /echo HTTP/1.1\r\nHost: x\r\nX-Big: "+big+"\r\n\r\n")
	if !strings.Contains(status, "431") {
		t.Errorf("oversized header: %q, want 431", status)
	}
	status, _ = rawRequest(t, p.InboundAddr(), "GET /echo HTTP/1.1\r\nHost: x\r\nX-Small: b\r\n\r\n")
	if !strings.Contains(status, "200") {
		t.Errorf("small header: %q, want 200", status)
	}
}

func TestConnectPassthrough(t *testing.T) {
	// The inbound application is itself a forward proxy that answers
	// CONNECT and then echoes.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != "CONNECT" || req.Host != "db.example:5432" {
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\n\r\n")
			return
		}
		io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		io.Copy(c, br)
	}()
	p := startProxy(t, Config{InboundTarget: ln.Addr().String()})
	conn, err := net.Dial("tcp", p.InboundAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "CONNECT db.example:5432 HTTP/1.1\r\nHost: db.example:5432\r\n\r\n")
	br := bufio.NewReader(conn)
	line, _ := br.ReadString('\n')
	if !strings.Contains(line, "200") {
		t.Fatalf("CONNECT answer %q", line)
	}
	br.ReadString('\n')
	io.WriteString(conn, "tunnelled bytes")
	buf := make([]byte, len("tunnelled bytes"))
	if _, err := io.ReadFull(br, buf); err != nil || string(buf) != "tunnelled bytes" {
		t.Errorf("echo %q, %v", buf, err)
	}
	conn.Close()
	wantMetric(t, p, 1, "response_total", `direction="inbound"`, `status_code="200"`)
}

func TestBodilessAndOldResponses(t *testing.T) {
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/204":
			w.WriteHeader(http.StatusNoContent)
		case "/304":
			w.Header().Set("ETag", `"x"`)
			w.WriteHeader(http.StatusNotModified)
		default:
			w.Header().Set("Content-Length", "5")
			if r.Method != http.MethodHead {
				io.WriteString(w, "hello")
			}
		}
	}))
	p := startProxy(t, Config{InboundTarget: app})
	conn, err := net.Dial("tcp", p.InboundAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(conn)
	// Pipelined on one keep-alive connection: a response with a body
	// length but no body must not swallow the next response.
	io.WriteString(conn, "HEAD /x HTTP/1.1\r\nHost: a\r\n\r\nGET /204 HTTP/1.1\r\nHost: a\r\n\r\nGET /304 HTTP/1.1\r\nHost: a\r\n\r\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n")
	for _, want := range []struct {
		method string
		status int
		body   string
	}{{"HEAD", 200, ""}, {"GET", 204, ""}, {"GET", 304, ""}, {"GET", 200, "hello"}} {
		resp, err := http.ReadResponse(br, &http.Request{Method: want.method})
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != want.status || string(b) != want.body {
			t.Errorf("%s: %d %q, want %d %q", want.method, resp.StatusCode, b, want.status, want.body)
		}
	}
	// HTTP/1.0 without a Host header: answered, then closed.
	got, _ := rawRequest(t, p.InboundAddr(), "GET /x HTTP/1.0\r\n\r\n")
	if !strings.HasPrefix(got, "HTTP/1.0 200") && !strings.HasPrefix(got, "HTTP/1.1 200") {
		t.Errorf("HTTP/1.0: %q", got)
	}
}

// TestHTTP1FullDuplex: the application streams its response while the
// client is still sending the request body, message by message.
func TestHTTP1FullDuplex(t *testing.T) {
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		br := bufio.NewReader(r.Body)
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return
			}
			io.WriteString(w, "echo "+line)
			w.(http.Flusher).Flush()
		}
	}))
	p := startProxy(t, Config{InboundTarget: app})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "http://"+p.InboundAddr()+"/", pr)
	resp, err := newClient(t).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	br := bufio.NewReader(resp.Body)
	for _, msg := range []string{"one\n", "two\n", "three\n"} {
		if _, err := io.WriteString(pw, msg); err != nil {
			t.Fatal(err)
		}
		got, err := br.ReadString('\n')
		if err != nil || got != "echo "+msg {
			t.Fatalf("got %q, %v; want %q", got, err, "echo "+msg)
		}
	}
	pw.Close()
	if rest, _ := io.ReadAll(br); len(rest) != 0 {
		t.Errorf("trailing %q", rest)
	}
}

// TestStaleUpstreamConnections: the application closes idle keep-alive
// connections quickly; the proxy's pooled connections go stale and
// requests must still succeed (a probe for old ones, a retry for bodiless
// requests on fresh-looking ones).
func TestStaleUpstreamConnections(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	app := &http.Server{IdleTimeout: 100 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, r.Method+" "+string(b))
	})}
	go app.Serve(ln)
	defer app.Close()
	p := startProxy(t, Config{InboundTarget: ln.Addr().String()})
	c := newClient(t)
	for i, step := range []struct {
		wait   time.Duration
		method string
		body   string
	}{
		{0, "GET", ""},
		{300 * time.Millisecond, "GET", ""},   // stale but not probed: retried
		{700 * time.Millisecond, "POST", "x"}, // stale and probed: a new connection
		{700 * time.Millisecond, "GET", ""},
	} {
		time.Sleep(step.wait)
		req, _ := http.NewRequest(step.method, "http://"+p.InboundAddr()+"/", strings.NewReader(step.body))
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != step.method+" "+step.body {
			t.Errorf("step %d: %d %q", i, resp.StatusCode, b)
		}
	}
	wantMetric(t, p, 0, "conduit_proxy_errors_total", `direction="inbound"`)
}

// TestResponseTransferCodings: a response whose transfer codings are more
// than chunked reaches the client with its header and bytes unchanged.
func TestResponseTransferCodings(t *testing.T) {
	const body = "3\r\nabc\r\n0\r\n\r\n"
	app := startTCPBackend(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"+body)
		}
	})
	p := startProxy(t, Config{InboundTarget: app})
	conn, err := net.Dial("tcp", p.InboundAddr())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	io.WriteString(conn, "GET / HTTP/1.1\r\nHost: a\r\n\r\n")
	br := bufio.NewReader(conn)
	var head []string
	for {
		line, err := br.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		if line == "\r\n" {
			break
		}
		head = append(head, strings.TrimSpace(line))
	}
	got := strings.Join(head, "|")
	if !strings.Contains(got, "Transfer-Encoding: gzip, chunked") || strings.Count(got, "Transfer-Encoding") != 1 {
		t.Errorf("head %q: want the codings forwarded once, unchanged", got)
	}
	rest := make([]byte, len(body))
	if _, err := io.ReadFull(br, rest); err != nil || string(rest) != body {
		t.Errorf("body %q, %v", rest, err)
	}
}
