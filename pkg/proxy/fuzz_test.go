package proxy

import (
	"bufio"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzParseRequest sends arbitrary bytes to a real inbound listener as a
// request. Whatever arrives, the proxy answers with a well-formed status
// line or closes the connection, and keeps serving the next client.
func FuzzParseRequest(f *testing.F) {
	seeds := []string{
		"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello",
		"POST /echo HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n",
		"GET /upgrade HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\nbytes",
		"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n",
		"GET http://other/abs HTTP/1.0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
		"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00",
		"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",
		"GET / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab",
		"\x00\xff garbage",
	}
	for _, s := range seeds {
		f.Add([]byte(s))
	}
	app := testBackend(f, nil)
	p := startProxy(f, Config{
		InboundTarget:     app,
		DetectTimeout:     50 * time.Millisecond,
		HeaderReadTimeout: 300 * time.Millisecond,
		MaxHeaderBytes:    8 << 10,
		ConnectTimeout:    time.Second,
	})
	client := newClient(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		c.Write(in)
		c.(*net.TCPConn).CloseWrite()
		br := bufio.NewReader(c)
		line, _ := br.ReadString('\n')
		// Opaque bytes go to the app, which is HTTP: anything it or the
		// proxy says must be a status line (or an h2 frame after a preface).
		if line != "" && strings.HasPrefix(line, "HTTP/") {
			f := strings.Fields(line)
			if len(f) < 2 {
				t.Fatalf("malformed status line %q", line)
			}
			if code, err := strconv.Atoi(f[1]); err != nil || code < 100 || code > 599 {
				t.Fatalf("bad status in %q", line)
			}
		}
		io.Copy(io.Discard, br)

		resp, err := client.Get("http://" + p.InboundAddr() + "/echo")
		if err != nil {
			t.Fatalf("the proxy stopped serving after %q: %v", in, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("the proxy answers %d after %q", resp.StatusCode, in)
		}
	})
}
