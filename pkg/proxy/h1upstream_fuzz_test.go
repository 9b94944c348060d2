package proxy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzH1Upstream: the upstream answers the proxy's first HTTP/1.1 request
// with bytes the fuzzer chooses, then closes the connection. Whatever the
// bytes, on the fast path and on net/http's, the client must get an answer
// (a response or a closed connection) rather than wait, the proxy must not
// panic, and the next requests must get their own answers from a new
// upstream connection: never bytes left over from the first (a response
// desync), on the client's connection or the upstream's.
func FuzzH1Upstream(f *testing.F) {
	for _, seed := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi",
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhiHTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nok /second #1",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n0\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 13\r\n\r\nok /second #1",
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nuntil the close",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nhi",
		"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
		"HTTP/1.1 2000 OK\r\n\r\n",
		"garbage\r\n\r\n",
	} {
		f.Add([]byte(seed), true)
		f.Add([]byte(seed), false)
	}
	f.Fuzz(func(t *testing.T, script []byte, fast bool) {
		p := startProxy(t, Config{InboundTarget: fuzzH1Upstream(t, script), DisableFastPath: !fast})
		client := newClient(t)
		get := func(path string) (int, string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.InboundAddr()+path, nil)
			return doRequest(client, req)
		}
		if _, _, err := get("/first"); errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("after %q and the upstream's close, no answer in 5 s", script)
		}
		servedAgain(t, fmt.Sprintf("%q", script), p, func() (int, string, error) { return get("/second") },
			func(code int, body string) bool {
				if code == 200 && body != "" && (!strings.HasPrefix(body, "ok /second #") || body == "ok /second #1") {
					t.Fatalf("after %q the next request got %q: not its answer", script, body)
				}
				return code == 200 && body != ""
			})
	})
}

// fuzzH1Upstream serves HTTP/1.1 on a loopback address it returns. Its
// first connection answers the first request head with script and closes;
// the others (numbered from 2) answer each request "ok PATH #N".
func fuzzH1Upstream(t *testing.T, script []byte) string {
	return fuzzServer(t, func(c net.Conn, num int32) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if num == 1 {
				c.Write(script)
				return
			}
			body := fmt.Sprintf("ok %s #%d", req.URL.Path, num)
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(body), body)
		}
	})
}
