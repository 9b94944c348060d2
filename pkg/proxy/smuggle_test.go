package proxy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// appRecorder is an HTTP/1.1 application that parses what reaches it with
// net/http.ReadRequest (lenient, as many applications are), records every
// request it parsed and answers "you asked METHOD TARGET". A request the
// proxy did not see, or an answer that reaches the wrong client, shows.
type appRecorder struct {
	ln net.Listener
	// respond, when set, answers instead of the default; it returns
	// whether the connection can carry another request.
	respond func(c net.Conn, req *http.Request) bool

	mu     sync.Mutex // guards seen, conns and active
	seen   []seenRequest
	conns  int
	active int            // connections being served
	wg     sync.WaitGroup // connection handlers
}

// seenRequest is a request the application parsed: "METHOD TARGET BODYLEN"
// with BODYLEN -1 when the body could not be read to its end.
type seenRequest struct {
	line string
	conn int // which upstream connection carried it
}

func startAppRecorder(t testing.TB) *appRecorder {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &appRecorder{ln: ln}
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r.mu.Lock()
			r.conns++
			r.active++
			id := r.conns
			r.mu.Unlock()
			r.wg.Add(1)
			go func() {
				defer r.wg.Done()
				defer func() {
					c.Close()
					r.mu.Lock()
					r.active--
					r.mu.Unlock()
				}()
				r.serve(c, id)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); r.wg.Wait() })
	return r
}

func (r *appRecorder) addr() string { return r.ln.Addr().String() }

func (r *appRecorder) serve(c net.Conn, id int) {
	c.SetDeadline(time.Now().Add(20 * time.Second))
	br := bufio.NewReader(c)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if strings.EqualFold(req.Header.Get("Expect"), "100-continue") {
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\n")
		}
		n, berr := io.Copy(io.Discard, req.Body)
		if berr != nil {
			n = -1
		}
		r.mu.Lock()
		r.seen = append(r.seen, seenRequest{fmt.Sprintf("%s %s %d", req.Method, req.RequestURI, n), id})
		r.mu.Unlock()
		if berr != nil {
			return
		}
		if req.Method == http.MethodConnect {
			// A tunnel: what follows is not HTTP to the application.
			io.WriteString(c, "HTTP/1.1 200 OK\r\n\r\n")
			io.Copy(io.Discard, br)
			return
		}
		if r.respond != nil {
			if !r.respond(c, req) {
				return
			}
			continue
		}
		body := "you asked " + req.Method + " " + req.RequestURI
		head := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: " + strconv.Itoa(len(body)) + "\r\n\r\n"
		if req.Method == http.MethodHead {
			body = ""
		}
		if _, err := io.WriteString(c, head+body); err != nil || req.Close {
			return
		}
	}
}

// take returns and forgets what the application saw.
func (r *appRecorder) take() []seenRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	s := r.seen
	r.seen = nil
	return s
}

// settle lets the application parse whatever reached it: it closes p's
// pooled upstream connections until the application has served all its
// connections to their end, for up to d. A request whose body broke can
// reach the application after its client had its answer.
func (r *appRecorder) settle(p *Proxy, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		r.mu.Lock()
		idle := r.active == 0
		r.mu.Unlock()
		if idle {
			return
		}
		p.fastUps.closeAll()
		p.ups.closeIdle()
		time.Sleep(time.Millisecond)
	}
}

func lines(s []seenRequest) []string {
	var l []string
	for _, r := range s {
		l = append(l, r.line)
	}
	return l
}

// clientResponse is one response a raw client read.
type clientResponse struct {
	status   int
	body     string
	proxyErr string // the conduit-proxy-error header: the proxy answered
	err      error  // the body did not arrive whole
}

// exchange sends raw bytes on a new connection to addr and reads
// responses until the proxy closes the connection. If nothing arrives for
// idle, the client half-closes and waits up to timeout for the rest.
func exchange(t testing.TB, addr, raw string, idle, timeout time.Duration) ([]clientResponse, error) {
	t.Helper()
	got, _, err := exchangeFrom(t, addr, raw, idle, timeout)
	return got, err
}

// exchangeFrom is exchange that also says which address the client used.
func exchangeFrom(t testing.TB, addr, raw string, idle, timeout time.Duration) ([]clientResponse, netip.AddrPort, error) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	local := c.LocalAddr().(*net.TCPAddr).AddrPort()
	c.SetDeadline(time.Now().Add(timeout))
	if _, err := io.WriteString(c, raw); err != nil {
		return nil, local, err
	}
	c.SetReadDeadline(time.Now().Add(idle))
	got, err := readResponses(bufio.NewReader(&halfCloser{TCPConn: c.(*net.TCPConn), timeout: timeout}))
	return got, local, err
}

// halfCloser half-closes the connection the first time a read times out
// (the proxy is waiting for more), then reads on until timeout.
type halfCloser struct {
	*net.TCPConn
	timeout time.Duration
	closed  bool
}

func (h *halfCloser) Read(b []byte) (int, error) {
	n, err := h.TCPConn.Read(b)
	if n == 0 && !h.closed && errors.Is(err, os.ErrDeadlineExceeded) {
		h.closed = true
		h.CloseWrite()
		h.SetReadDeadline(time.Now().Add(h.timeout))
		return h.TCPConn.Read(b)
	}
	return n, err
}

// readResponses reads responses until EOF; err is set when the bytes were
// not a sequence of whole responses.
func readResponses(br *bufio.Reader) ([]clientResponse, error) {
	var out []clientResponse
	for {
		if _, err := br.Peek(1); err == io.EOF {
			return out, nil
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return out, err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode >= 100 && resp.StatusCode < 200 {
			continue
		}
		out = append(out, clientResponse{resp.StatusCode, string(b), resp.Header.Get(ErrorHeader), err})
		if err != nil {
			return out, err
		}
	}
}

// askSecond is a second, well-behaved client: it must get its own answer.
func askSecond(t *testing.T, addr string) {
	t.Helper()
	got, err := exchange(t, addr, "GET /second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 10*time.Second, 10*time.Second)
	if err != nil || len(got) != 1 || got[0].body != "you asked GET /second" {
		t.Errorf("the second client got %+v (%v), want its own answer: responses are crossed", got, err)
	}
}

// h1Paths runs f on each HTTP/1.1 path: a proxy on the fast path and one
// that serves HTTP/1.1 with net/http (DisableFastPath), each inbound and
// outbound; f gets the proxy and the listener's address.
func h1Paths(t *testing.T, app string, f func(t *testing.T, p *Proxy, addr string)) {
	for _, fast := range []bool{true, false} {
		name := "fast path"
		if !fast {
			name = "net/http path"
		}
		t.Run(name, func(t *testing.T) {
			p := startProxy(t, Config{InboundTarget: app, Resolver: resolve.Static{"x:80": {{Addr: app}}}, DisableFastPath: !fast})
			t.Run("inbound", func(t *testing.T) { f(t, p, p.InboundAddr()) })
			t.Run("outbound", func(t *testing.T) { f(t, p, p.OutboundAddr()) })
		})
	}
}

const smuggled = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n"

// smuggleCase is a request stream and what must come of it.
type smuggleCase struct {
	name string
	raw  string
	// want are the statuses of the responses, in order; after a 400 the
	// connection must be closed.
	want []int
	// upstream is exactly what the application may parse from raw
	// ("METHOD TARGET BODYLEN").
	upstream []string
	// truncated: the application may also see the request of upstream
	// with a body cut short (-1), or nothing, because the body broke its
	// framing after the head was forwarded.
	truncated bool
}

// requestSmuggling lists the request-side desync families.
func requestSmuggling() []smuggleCase {
	cl := strconv.Itoa(len(smuggled))
	chunkedSmuggle := "0\r\n\r\n" + smuggled
	te := strconv.Itoa(len(chunkedSmuggle))
	return []smuggleCase{
		// The request of issue 12, verbatim.
		{name: "issue 12: Connection: content-length",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 36\r\nConnection: content-length\r\n\r\n" + smuggled,
			want: []int{400}},
		{name: "Connection: content-length, exact length",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: " + cl + "\r\nConnection: content-length\r\n\r\n" + smuggled,
			want: []int{400}},
		{name: "Connection: close, Content-Length",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: " + cl + "\r\nConnection: close, Content-Length\r\n\r\n" + smuggled,
			want: []int{400}},
		{name: "Connection: transfer-encoding",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: transfer-encoding\r\n\r\n" + chunkedSmuggle,
			want: []int{400}},
		{name: "Connection: host",
			raw:  "GET /first HTTP/1.1\r\nHost: x\r\nConnection: host\r\n\r\n",
			want: []int{400}},
		{name: "Connection-listed framing header after Expect",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: " + cl + "\r\nConnection: content-length\r\n\r\n" + smuggled,
			want: []int{400}},

		// Line endings.
		{name: "bare LF line endings",
			raw:  strings.ReplaceAll("POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: "+cl+"\r\n\r\n", "\r\n", "\n") + smuggled,
			want: []int{400}},
		{name: "one bare LF",
			raw:  "POST /first HTTP/1.1\r\nHost: x\nContent-Length: " + cl + "\r\n\r\n" + smuggled,
			want: []int{400}},
		{name: "bare LF ends the head",
			raw:  "GET /first HTTP/1.1\r\nHost: x\r\n\n" + smuggled,
			want: []int{400}},
		{name: "bare CR as a line ending",
			raw:  "POST /first HTTP/1.1\r\nHost: x\rContent-Length: " + cl + "\r\n\r\n" + smuggled,
			want: []int{400}},
		{name: "bare CR in a value",
			raw:  "GET /first HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
			want: []int{400}},

		// Content-Length.
		{name: "Content-Length: +N",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: +" + cl + "\r\n\r\n" + smuggled,
			want: []int{400}},
		{name: "duplicate Content-Length",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: " + cl + "\r\nContent-Length: " + cl + "\r\n\r\n" + smuggled,
			want: []int{400}},
		{name: "conflicting Content-Length",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nContent-Length: " + cl + "\r\n\r\n" + smuggled,
			want: []int{400}},
		{name: "Content-Length list",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: " + cl + ", " + cl + "\r\n\r\n" + smuggled,
			want: []int{400}},
		{name: "Content-Length hex",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 0x" + strconv.FormatInt(int64(len(smuggled)), 16) + "\r\n\r\n" + smuggled,
			want: []int{400}},

		// CL.TE and TE.CL.
		{name: "CL.TE",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: " + te + "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunkedSmuggle,
			want: []int{400}},
		{name: "TE.CL",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n" + "1\r\nA\r\n0\r\n\r\n" + smuggled,
			want: []int{400}},

		// TE.TE obfuscations.
		{name: "Transfer-Encoding: xchunked",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: xchunked\r\n\r\n" + chunkedSmuggle,
			want: []int{400}},
		{name: "Transfer-Encoding: chunked, identity",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, identity\r\n\r\n" + chunkedSmuggle,
			want: []int{400}},
		{name: "Transfer-Encoding twice",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n" + chunkedSmuggle,
			want: []int{400}},
		{name: "whitespace before the colon",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding : chunked\r\nContent-Length: " + te + "\r\n\r\n" + chunkedSmuggle,
			want: []int{400}},
		{name: "vertical tab in Transfer-Encoding",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: \vchunked\r\n\r\n" + chunkedSmuggle,
			want: []int{400}},
		{name: "obs-fold Transfer-Encoding",
			raw:  "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding:\r\n chunked\r\n\r\n" + chunkedSmuggle,
			want: []int{400}},
		{name: "obs-fold elsewhere",
			raw:  "GET /first HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
			want: []int{400}},
		{name: "HTTP/1.0 with Transfer-Encoding",
			raw:  "POST /first HTTP/1.0\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n" + chunkedSmuggle,
			want: []int{400}},
		{name: "mixed-case chunked is chunked",
			raw:      "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: cHuNkEd\r\n\r\n" + chunkedSmuggle,
			want:     []int{200, 200},
			upstream: []string{"POST /first 0", "GET /smuggled 0"}},

		// Chunk sizes and extensions: the head has gone upstream when the
		// body breaks.
		{name: "chunk size 0x", raw: "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" + smuggled,
			want: []int{400}, upstream: []string{"POST /first -1"}, truncated: true},
		{name: "chunk size with a sign", raw: "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n+5\r\nhello\r\n0\r\n\r\n" + smuggled,
			want: []int{400}, upstream: []string{"POST /first -1"}, truncated: true},
		{name: "chunk size overflow", raw: "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n10000000000000005\r\nhello\r\n0\r\n\r\n" + smuggled,
			want: []int{400}, upstream: []string{"POST /first -1"}, truncated: true},
		{name: "chunk size then space", raw: "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n" + smuggled,
			want: []int{400}, upstream: []string{"POST /first -1"}, truncated: true},
		{name: "chunk size with bare LF", raw: "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n" + smuggled,
			want: []int{400}, upstream: []string{"POST /first -1"}, truncated: true},
		{name: "chunk extension with a control character", raw: "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a\x01b\r\nhello\r\n0\r\n\r\n" + smuggled,
			want: []int{400}, upstream: []string{"POST /first -1"}, truncated: true},
		{name: "chunk extension ending in bare LF", raw: "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b\nhello\r\n0\r\n\r\n" + smuggled,
			want: []int{400}, upstream: []string{"POST /first -1"}, truncated: true},
		{name: "chunk data longer than its size", raw: "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nhello\r\n0\r\n\r\n" + smuggled,
			want: []int{400}, upstream: []string{"POST /first -1"}, truncated: true},
		{name: "bare LF in the last chunk", raw: "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\n\n" + smuggled,
			want: []int{400}, upstream: []string{"POST /first -1"}, truncated: true},
		{name: "valid chunk extensions and trailers",
			raw:      "POST /first HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5;a=b;c=\"d e\"\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
			want:     []int{200, 200},
			upstream: []string{"POST /first 5", "GET /next 0"}},

		// 100-continue and Upgrade.
		{name: "100-continue",
			raw:      "POST /first HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhelloGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
			want:     []int{200, 200},
			upstream: []string{"POST /first 5", "GET /next 0"}},
		{name: "declined Upgrade, then a request",
			raw:      "GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n" + smuggled,
			want:     []int{200, 200},
			upstream: []string{"GET /first 0", "GET /smuggled 0"}},
		{name: "declined Upgrade, then a bare-LF request",
			raw:      "GET /first HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\nGET /smuggled HTTP/1.1\nHost: x\n\n",
			want:     []int{200, 400},
			upstream: []string{"GET /first 0"}},
		// Request targets (RFC 9112 3.2).
		{name: "absolute form without a path",
			raw:      "GET http://x HTTP/1.1\r\nHost: x\r\n\r\n",
			want:     []int{200},
			upstream: []string{"GET / 0"}},
		{name: "absolute form of another scheme",
			raw:  "GET a: HTTP/1.1\r\nHost: x\r\n\r\n",
			want: []int{400}},
		{name: "asterisk form for GET",
			raw:  "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
			want: []int{400}},

		// Versions: HTTP/1.2 is not forwarded (an application might read
		// it other than the proxy), on either path.
		{name: "HTTP/1.2",
			raw:  "GET /first HTTP/1.2\r\nHost: x\r\n\r\n",
			want: []int{505}},
		{name: "pipelined, then HTTP/1.2",
			raw:      "GET /first HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled HTTP/1.2\r\nHost: x\r\n\r\n",
			want:     []int{200, 505},
			upstream: []string{"GET /first 0"}},
		{name: "pipelined, well formed",
			raw:      "POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhiGET /next HTTP/1.1\r\nHost: x\r\n\r\n",
			want:     []int{200, 200},
			upstream: []string{"POST /first 2", "GET /next 0"}},
	}
}

// TestRequestSmuggling sends each desync family to both HTTP/1.1 paths,
// then a second client on its own connection: the application must parse
// exactly the requests the proxy accepted, and each answer must reach the
// client that asked.
func TestRequestSmuggling(t *testing.T) {
	app := startAppRecorder(t)
	h1Paths(t, app.addr(), func(t *testing.T, p *Proxy, addr string) {
		for _, tc := range requestSmuggling() {
			t.Run(tc.name, func(t *testing.T) {
				// A last request closes the connection where the others
				// leave it open.
				want, upstream := tc.want, tc.upstream
				if want[len(want)-1] == http.StatusOK {
					want = append(slices.Clip(want), http.StatusOK)
					upstream = append(slices.Clip(upstream), "GET /end 0")
				}
				got, err := exchange(t, addr, tc.raw+"GET /end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5*time.Second, 10*time.Second)
				var statuses []int
				for _, r := range got {
					statuses = append(statuses, r.status)
				}
				if !slices.Equal(statuses, want) {
					t.Errorf("statuses %v (%v), want %v; responses %+v", statuses, err, want, got)
				}
				for _, r := range got {
					if r.status == 200 && !strings.HasPrefix(r.body, "you asked ") {
						t.Errorf("a 200 without the application's answer: %q", r.body)
					}
					// Both paths give the proxy's own answer, not net/http's.
					if r.status != 200 && !strings.HasPrefix(r.body, "malformed request") && !strings.HasPrefix(r.body, "HTTP version not supported") {
						t.Errorf("a %d without the proxy's reason: %q", r.status, r.body)
					}
				}
				askSecond(t, addr)
				app.settle(p, 5*time.Second)
				seen := lines(app.take())
				if i := slices.Index(seen, "GET /second 0"); i >= 0 {
					seen = slices.Delete(seen, i, i+1)
				}
				if !slices.Equal(seen, upstream) && !(tc.truncated && len(seen) == 0) {
					t.Errorf("the application parsed %q, want %q", seen, upstream)
				}
			})
		}
	})
}

// responseCase is an upstream's answer to GET /bad.
type responseCase struct {
	name, raw string
	// want is the status the client gets (0: the response is cut short
	// or the connection closes without one); body, when set, its body.
	want int
	body string
}

func responseSmuggling() []responseCase {
	poison := "HTTP/1.1 200 OK\r\nContent-Length: 24\r\n\r\nyou asked GET /smuggled"
	return []responseCase{
		{"Transfer-Encoding and Content-Length: framed by chunked",
			"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + poison, 200, "hello"},
		{"Content-Length and Transfer-Encoding: framed by chunked",
			"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 200\r\n\r\n5\r\nhello\r\n0\r\n\r\n" + poison, 200, "hello"},
		{"bytes after the response", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" + poison, 200, "hello"},
		{"duplicate Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 502, ""},
		{"conflicting Content-Length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 50\r\n\r\nhello" + poison, 502, ""},
		{"Content-Length: +5", "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello", 502, ""},
		{"bare LF head", "HTTP/1.1 200 OK\nContent-Length: 5\n\nhello" + poison, 502, ""},
		{"obs-fold", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX: a\r\n b\r\n\r\nhello", 502, ""},
		{"Connection: content-length", "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: content-length\r\n\r\nhello" + poison, 502, ""},
		{"HTTP/1.0 with Transfer-Encoding", "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n", 502, ""},
		{"bad chunk size", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n0\r\n\r\n" + poison, 0, ""},
		{"chunk with bare LF", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n" + poison, 0, ""},
	}
}

// TestResponseSmuggling: an application's malformed or ambiguous response
// is refused (502) or framed as the proxy reads it, the connection it came
// on is not used again, and the next client gets its own answer.
func TestResponseSmuggling(t *testing.T) {
	app := startAppRecorder(t)
	var bad string // the current case's answer; set before each request
	app.respond = func(c net.Conn, req *http.Request) bool {
		if req.URL.Path == "/bad" {
			io.WriteString(c, bad)
			return true // keep reading: a proxy that reuses the connection gets the leftovers
		}
		body := "you asked " + req.Method + " " + req.RequestURI
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		return true
	}
	h1Paths(t, app.addr(), func(t *testing.T, p *Proxy, addr string) {
		for _, tc := range responseSmuggling() {
			t.Run(tc.name, func(t *testing.T) {
				bad = tc.raw
				// A pooled connection to the application first, so that the
				// bad response comes on a connection the proxy could reuse.
				askSecond(t, addr)
				app.take()
				got, _ := exchange(t, addr, "GET /bad HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", 5*time.Second, 10*time.Second)
				switch {
				case tc.want == 0:
					if len(got) > 0 && got[0].err == nil {
						t.Errorf("a broken response was passed on whole: %+v", got)
					}
				case len(got) == 0 || got[0].status != tc.want || (tc.body != "" && got[0].body != tc.body) || got[0].err != nil:
					t.Errorf("got %+v, want %d %q", got, tc.want, tc.body)
				}
				for range 3 {
					askSecond(t, addr)
				}
				seen := app.take()
				if len(seen) != 4 || seen[0].line != "GET /bad 0" {
					t.Fatalf("the application saw %q, want GET /bad then three GET /second", lines(seen))
				}
				for _, s := range seen[1:] {
					if s.conn == seen[0].conn {
						t.Errorf("the connection of the bad response (%d) was used again", s.conn)
					}
				}
			})
		}
	})
}

// TestNoReplay: an application that reads a request on a pooled connection
// and closes it without answering (it may have acted on the request) gets
// an idempotent request again on a new connection, but never a POST: the
// client gets 502 for it instead.
func TestNoReplay(t *testing.T) {
	app := startAppRecorder(t)
	var mu sync.Mutex
	served := map[net.Conn]int{}
	app.respond = func(c net.Conn, req *http.Request) bool {
		mu.Lock()
		served[c]++
		n := served[c]
		mu.Unlock()
		if n == 2 {
			return false // read, then closed unanswered
		}
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		return true
	}
	h1Paths(t, app.addr(), func(t *testing.T, p *Proxy, addr string) {
		for _, tc := range []struct {
			method, body string
			want         int // the second request's status
			seen         int // requests the application reads
		}{
			{"GET", "", http.StatusOK, 3},
			{"POST", "", http.StatusBadGateway, 2},
			{"POST", "payload", http.StatusBadGateway, 2},
			{"PATCH", "", http.StatusBadGateway, 2},
		} {
			t.Run(tc.method+" "+strconv.Itoa(len(tc.body)), func(t *testing.T) {
				app.take()
				mu.Lock()
				clear(served) // counted afresh: the proxy keeps its pooled connections
				mu.Unlock()
				// One client connection: its second request is read once
				// the first exchange is over, pooled connection returned.
				c, err := net.Dial("tcp", addr)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(c)
				var statuses []int
				for range 2 {
					fmt.Fprintf(c, "%s /replay HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", tc.method, len(tc.body), tc.body)
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					statuses = append(statuses, resp.StatusCode)
				}
				if want := []int{http.StatusOK, tc.want}; !slices.Equal(statuses, want) {
					t.Errorf("statuses %v, want %v", statuses, want)
				}
				if seen := app.take(); len(seen) != tc.seen {
					t.Errorf("the application read %q, want %d requests", lines(seen), tc.seen)
				}
			})
		}
	})
}
