package proxy

import (
	"bufio"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestHostileInput throws malformed and abusive input at the inbound
// listener. Every case must end in a 4xx/5xx or a closed connection, and the
// proxy must keep serving (checked after each case).
func TestHostileInput(t *testing.T) {
	app := testBackend(t, nil)
	p := startProxy(t, Config{
		InboundTarget:     app,
		DetectTimeout:     300 * time.Millisecond,
		HeaderReadTimeout: 500 * time.Millisecond,
		MaxHeaderBytes:    8 << 10,
	})
	c := newClient(t)
	healthy := func(t *testing.T) {
		t.Helper()
		resp, err := c.Get("http://" + p.InboundAddr() + "/echo")
		if err != nil {
			t.Fatalf("proxy no longer serves: %v", err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("proxy no longer serves: %d", resp.StatusCode)
		}
	}
	random := make([]byte, 64<<10)
	rand.Read(random)

	tests := []struct {
		name string
		send string
		// want is a status prefix, or "" for "closed without a response".
		want []string
	}{
		{"bad request line", "GET / HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n", []string{"HTTP/1.1 400"}},
		{"bad header name", "GET / HTTP/1.1\r\nHost: x\r\nX Y: z\r\n\r\n", []string{"HTTP/1.1 400"}},
		{"oversized header", "GET / HTTP/1.1\r\nHost: x\r\nX-A: " + strings.Repeat("a", 32<<10) + "\r\n\r\n", []string{"HTTP/1.1 431"}},
		{"many headers", "GET / HTTP/1.1\r\nHost: x\r\n" + strings.Repeat("X-A: b\r\n", 4000) + "\r\n", []string{"HTTP/1.1 431"}},
		{"conflicting lengths", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", []string{"HTTP/1.1 400"}},
		{"smuggling: CL and TE", "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", []string{"HTTP/1.1 400", "HTTP/1.1 200"}},
		{"bad chunk size", "POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n", []string{"HTTP/1.1 400", "HTTP/1.1 502", ""}},
		{"missing host", "GET / HTTP/1.1\r\n\r\n", []string{"HTTP/1.1 400"}},
		// The h2 server answers garbage frames with SETTINGS + GOAWAY.
		{"h2 preface then garbage", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + string(random[:200]), []string{"", "\x00\x00"}},
		{"truncated tls hello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", []string{""}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, _ := rawRequest(t, p.InboundAddr(), tt.send)
			ok := false
			for _, w := range tt.want {
				if (w == "" && got == "") || (w != "" && strings.HasPrefix(got, w)) {
					ok = true
				}
			}
			if !ok {
				t.Errorf("answer %q, want one of %q", got, tt.want)
			}
			healthy(t)
		})
	}

	t.Run("random bytes are relayed as opaque and never crash", func(t *testing.T) {
		for range 5 {
			conn, err := net.Dial("tcp", p.InboundAddr())
			if err != nil {
				t.Fatal(err)
			}
			conn.SetDeadline(time.Now().Add(5 * time.Second))
			conn.Write(random)
			conn.(*net.TCPConn).CloseWrite()
			io.Copy(io.Discard, conn) // the HTTP app answers 400 or closes
			conn.Close()
		}
		healthy(t)
	})

	t.Run("slowloris headers are cut off", func(t *testing.T) {
		conn, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(conn, "GET /echo HTTP/1.1\r\nHost: x\r\n")
		start := time.Now()
		// Trickle a header byte at a time, never finishing.
		closed := make(chan struct{})
		go func() {
			defer close(closed)
			io.Copy(io.Discard, conn)
		}()
	trickle:
		for {
			select {
			case <-closed:
				break trickle
			case <-time.After(100 * time.Millisecond):
				if _, err := io.WriteString(conn, "X"); err != nil {
					<-closed
					break trickle
				}
			}
			if time.Since(start) > 8*time.Second {
				t.Fatal("a slow client held the connection open past the header timeout")
			}
		}
		healthy(t)
	})

	t.Run("abrupt resets", func(t *testing.T) {
		for _, req := range []string{
			"POST /sum HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\npartial",
			"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n",
			"\x00\x01opaque",
		} {
			conn, err := net.Dial("tcp", p.InboundAddr())
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(conn, req)
			time.Sleep(50 * time.Millisecond)
			conn.(*net.TCPConn).SetLinger(0) // close with RST
			conn.Close()
		}
		healthy(t)
	})

	t.Run("h2 stream reset mid-body", func(t *testing.T) {
		h2 := newH2CClient(t)
		pr, pw := io.Pipe()
		req, _ := http.NewRequest("POST", "http://"+p.InboundAddr()+"/sum", pr)
		go func() {
			pw.Write([]byte("some bytes"))
			time.Sleep(50 * time.Millisecond)
			pw.CloseWithError(io.ErrUnexpectedEOF) // the client resets the stream
		}()
		if resp, err := h2.Do(req); err == nil {
			resp.Body.Close()
		}
		healthy(t)
	})
	// Only keep-alive connections of the healthy checks stay open.
	wantMetric(t, p, 1, "tcp_open_connections", `direction="inbound"`, `peer="src"`)
}

// TestUpstreamResetsMidResponse: an application that dies mid-response
// makes the proxy abort the client's stream, not hang or crash.
func TestUpstreamResetsMidResponse(t *testing.T) {
	app := startTCPBackend(t, func(c net.Conn) {
		http.ReadRequest(bufio.NewReader(c))
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly some")
		c.(*net.TCPConn).SetLinger(0)
	})
	p := startProxy(t, Config{InboundTarget: app})
	// Either the headers never left the proxy (the connection closes) or
	// the body ends early: never a complete-looking response.
	resp, err := newClient(t).Get("http://" + p.InboundAddr() + "/")
	if err == nil {
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
	}
	if err == nil {
		t.Error("a truncated response was passed on as complete")
	}
	wantMetric(t, p, 1, "response_total", `direction="inbound"`, `classification="failure"`)
}
