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
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// Item 7 of issue 12: HTTP/2 abuse against the proxy's inbound and
// outbound h2c servers, written as raw frames over real sockets. Each
// attack must leave the proxy's memory bounded, start a bounded number of
// upstream requests, and leave other connections served.

// h2Backend counts the upstream requests the proxy starts for attackers
// (path /attack) and how many run at once.
type h2Backend struct {
	addr               string
	started, now, peak atomic.Int64
}

func startH2Backend(t *testing.T) *h2Backend {
	b := &h2Backend{}
	b.addr = startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" {
			// Reads nothing of the body until the request ends: what
			// the proxy receives for it has nowhere to go.
			select {
			case <-r.Context().Done():
			case <-time.After(10 * time.Second):
			}
			return
		}
		if r.URL.Path != "/attack" {
			io.WriteString(w, "ok")
			return
		}
		b.started.Add(1)
		n := b.now.Add(1)
		defer b.now.Add(-1)
		for p := b.peak.Load(); n > p && !b.peak.CompareAndSwap(p, n); p = b.peak.Load() {
		}
		select { // a little work, as an application's
		case <-time.After(5 * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		io.WriteString(w, "ok")
	}))
	return b
}

// h2Target is one of the proxy's h2 servers and the authority it routes.
type h2Target struct {
	name string
	p    *Proxy
	addr string
	b    *h2Backend
}

func h2Targets(t *testing.T) []h2Target {
	var out []h2Target
	b := startH2Backend(t)
	p := startProxy(t, Config{InboundTarget: b.addr})
	out = append(out, h2Target{"inbound", p, p.InboundAddr(), b})
	b = startH2Backend(t)
	p = startProxy(t, Config{Resolver: resolve.Static{"app:80": {{Addr: b.addr}}}})
	out = append(out, h2Target{"outbound", p, p.OutboundAddr(), b})
	return out
}

// goodClient sends requests on its own h2c connection every few
// milliseconds until stop is closed, and reports the failures.
func goodClient(t *testing.T, addr string, stop <-chan struct{}) (done func() (ok, failed int)) {
	client := newH2CClient(t)
	var okN, failN atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(5 * time.Millisecond):
			}
			req, _ := http.NewRequest("GET", "http://"+addr+"/", nil)
			req.Host = "app"
			resp, err := client.Do(req)
			if err == nil {
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "ok" {
					err = errors.New(resp.Status)
				}
			}
			if err != nil {
				failN.Add(1)
				t.Logf("well-behaved request failed: %v", err)
				continue
			}
			okN.Add(1)
		}
	}()
	return func() (int, int) {
		wg.Wait()
		return int(okN.Load()), int(failN.Load())
	}
}

// h2Attacker is a raw HTTP/2 client connection.
type h2Attacker struct {
	c   net.Conn
	bw  *bufio.Writer
	fr  *http2.Framer
	enc *hpack.Encoder
	buf bytes.Buffer
	// Set by the reader: the GOAWAY code received, if any, and closed
	// when the connection ended.
	goaway atomic.Int64
	ended  chan struct{}
	// rst is the RST_STREAM codes received, by stream.
	rst sync.Map
}

// dialH2 opens a prior-knowledge h2c connection. With read, a goroutine
// reads (and drops) every frame the proxy sends; without, nothing is read.
func dialH2(t *testing.T, addr string, read bool) *h2Attacker {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	a := &h2Attacker{c: c, bw: bufio.NewWriterSize(c, 64<<10), ended: make(chan struct{})}
	a.goaway.Store(-1)
	a.fr = http2.NewFramer(a.bw, c)
	a.enc = hpack.NewEncoder(&a.buf)
	io.WriteString(a.bw, http2.ClientPreface)
	a.fr.WriteSettings()
	a.bw.Flush()
	if !read {
		c.(*net.TCPConn).SetReadBuffer(4 << 10)
		return a
	}
	go func() {
		defer close(a.ended)
		for {
			f, err := a.fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				a.goaway.Store(int64(f.ErrCode))
			case *http2.RSTStreamFrame:
				a.rst.Store(f.StreamID, f.ErrCode)
			}
		}
	}()
	return a
}

// block is a HEADERS block for GET http://app/attack plus extra fields.
func (a *h2Attacker) block(extra ...hpack.HeaderField) []byte {
	a.buf.Reset()
	for _, f := range append([]hpack.HeaderField{
		{Name: ":method", Value: "GET"}, {Name: ":scheme", Value: "http"},
		{Name: ":path", Value: "/attack"}, {Name: ":authority", Value: "app"},
	}, extra...) {
		a.enc.WriteField(f)
	}
	return bytes.Clone(a.buf.Bytes())
}

// closedWithin reports whether the proxy ended the connection (after a
// GOAWAY or not) within d.
func (a *h2Attacker) closedWithin(d time.Duration) bool {
	select {
	case <-a.ended:
		return true
	case <-time.After(d):
		return false
	}
}

func (a *h2Attacker) goAwayCode() string {
	if c := a.goaway.Load(); c >= 0 {
		return http2.ErrCode(c).String()
	}
	return "none"
}

// heapWatch samples the heap in use until stopped and returns the growth
// of its peak over the start.
func heapWatch() (stop func() (growth uint64)) {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	base, peak := ms.HeapInuse, ms.HeapInuse
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			var ms runtime.MemStats
			runtime.ReadMemStats(&ms)
			peak = max(peak, ms.HeapInuse)
			select {
			case <-done:
				return
			case <-time.After(10 * time.Millisecond):
			}
		}
	}()
	return func() uint64 {
		close(done)
		wg.Wait()
		return peak - base
	}
}

// maxHeapGrowth bounds the test process's heap growth during one attack:
// the proxy, the backend and the clients all live in it.
const maxHeapGrowth = 32 << 20

// runAttack runs attack against each h2 server with a well-behaved client
// on another connection, and checks what every attack must leave.
func runAttack(t *testing.T, attack func(t *testing.T, tg h2Target)) {
	for _, tg := range h2Targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			stop := make(chan struct{})
			done := goodClient(t, tg.addr, stop)
			time.Sleep(20 * time.Millisecond)
			startedBefore := tg.b.started.Load()
			heap := heapWatch()
			attack(t, tg)
			growth := heap()
			time.Sleep(50 * time.Millisecond)
			close(stop)
			ok, failed := done()
			t.Logf("heap growth %.1f MiB; upstream requests %d (at most %d at once); well-behaved requests %d ok, %d failed",
				float64(growth)/(1<<20), tg.b.started.Load()-startedBefore, tg.b.peak.Load(), ok, failed)
			if growth > maxHeapGrowth {
				t.Errorf("heap grew by %d MiB during the attack, want at most %d", growth>>20, maxHeapGrowth>>20)
			}
			if failed > 0 || ok == 0 {
				t.Errorf("well-behaved client: %d ok, %d failed during the attack, want all ok", ok, failed)
			}
			// The proxy itself still answers a new connection.
			req, _ := http.NewRequest("GET", "http://"+tg.addr+"/", nil)
			req.Host = "app"
			resp, err := newH2CClient(t).Do(req)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("after the attack: %v %v", resp, err)
			}
			resp.Body.Close()
			if text := scrape(t, tg.p); strings.Contains(text, "h2_") {
				for _, l := range strings.Split(text, "\n") {
					if strings.Contains(l, `error="h2_`) {
						t.Logf("metric: %s", l)
					}
				}
			}
		})
	}
}

// TestH2RapidReset: CVE-2023-44487, HEADERS then RST_STREAM at once, as
// fast as the socket takes them. net/http runs at most MaxConcurrentStreams
// handlers per connection (and sends GOAWAY ENHANCE_YOUR_CALM when reset
// streams queue behind them); the proxy closes a connection whose client
// resets most streams before their response, so the attack starts a few
// hundred upstream requests at most, not one per stream.
func TestH2RapidReset(t *testing.T) {
	runAttack(t, func(t *testing.T, tg h2Target) {
		before := tg.b.started.Load()
		a := dialH2(t, tg.addr, true)
		block := a.block()
		const streams = 20000
		sent := 0
		a.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		for i := range streams {
			id := uint32(2*i + 1)
			a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndStream: true, EndHeaders: true})
			a.fr.WriteRSTStream(id, http2.ErrCodeCancel)
			if i%64 == 63 {
				if a.bw.Flush() != nil {
					break
				}
			}
			sent++
		}
		a.bw.Flush()
		closed := a.closedWithin(5 * time.Second)
		started := tg.b.started.Load() - before
		t.Logf("rapid reset: %d streams sent, %d upstream requests started; connection closed %v, GOAWAY %s", sent, started, closed, a.goAwayCode())
		if !closed {
			t.Errorf("rapid reset: the connection stayed open")
		}
		if limit := int64(rapidResetMin + 2*100); started > limit {
			t.Errorf("rapid reset started %d upstream requests, want at most %d", started, limit)
		}
		if peak := tg.b.peak.Load(); peak > 2*100 {
			t.Errorf("%d upstream requests ran at once, want them bounded by the 100 streams a connection may have", peak)
		}
	})
}

// TestH2ResetsBelowTheBound: a client that cancels a third of its requests
// before their response, more than rapidResetMin in all, keeps its
// connection.
func TestH2ResetsBelowTheBound(t *testing.T) {
	b := startH2Backend(t)
	p := startProxy(t, Config{InboundTarget: b.addr})
	a := dialH2(t, p.InboundAddr(), true)
	id := uint32(1)
	for range rapidResetMin + 100 {
		for k := range 3 {
			a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: a.block(), EndStream: true, EndHeaders: true})
			if k == 0 {
				a.fr.WriteRSTStream(id, http2.ErrCodeCancel)
			}
			id += 2
		}
		a.bw.Flush()
		time.Sleep(time.Millisecond) // stay well under the 100 concurrent streams
	}
	if a.closedWithin(time.Second) {
		t.Errorf("a connection with %d early resets among %d streams was closed (GOAWAY %s)", rapidResetMin+100, 3*(rapidResetMin+100), a.goAwayCode())
	}
}

// TestH2ContinuationFlood: CVE-2023-45288, a header block that never ends.
// CONTINUATION frames carrying fields are refused once the block passes
// MaxHeaderBytes, and the connection closed; empty ones cost one frame
// read each and hold nothing.
func TestH2ContinuationFlood(t *testing.T) {
	runAttack(t, func(t *testing.T, tg h2Target) {
		before := tg.b.started.Load()
		a := dialH2(t, tg.addr, true)
		a.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block()})
		pad := strings.Repeat("p", 1000)
		var sent int64
		for sent < 64<<20 { // 64 MiB of header fields, if the proxy took them
			frag := a.block(hpack.HeaderField{Name: "x-pad", Value: pad})
			if a.fr.WriteContinuation(1, false, frag) != nil || a.bw.Flush() != nil {
				break
			}
			sent += int64(len(frag))
		}
		closed := a.closedWithin(5 * time.Second)
		t.Logf("CONTINUATION with fields: %d KiB sent before the proxy stopped reading; closed %v, GOAWAY %s", sent>>10, closed, a.goAwayCode())
		if !closed {
			t.Errorf("an endless header block did not close the connection")
		}

		// Empty CONTINUATION frames: 200,000 of them.
		e := dialH2(t, tg.addr, true)
		e.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		e.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: e.block()})
		n := 0
		for ; n < 200000; n++ {
			if e.fr.WriteContinuation(1, false, nil) != nil {
				break
			}
			if n%1024 == 1023 && e.bw.Flush() != nil {
				break
			}
		}
		e.bw.Flush()
		t.Logf("empty CONTINUATION: %d frames sent; closed %v", n, e.closedWithin(100*time.Millisecond))
		if got := tg.b.started.Load() - before; got != 0 {
			t.Errorf("%d upstream requests started from header blocks that never ended", got)
		}
	})
}

// TestH2ControlFrameFlood: SETTINGS and PING floods. A peer that reads the
// acknowledgements costs a frame each; one that does not read them is
// disconnected once the proxy has 10,000 queued (net/http's bound), or
// at least no longer read from.
func TestH2ControlFrameFlood(t *testing.T) {
	runAttack(t, func(t *testing.T, tg h2Target) {
		a := dialH2(t, tg.addr, true)
		a.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		n := 0
		for ; n < 50000; n++ {
			a.fr.WritePing(false, [8]byte{byte(n)})
			a.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
			if n%256 == 255 && a.bw.Flush() != nil {
				break
			}
		}
		a.bw.Flush()
		t.Logf("reading flooder: %d PING and %d SETTINGS sent; closed %v", n, n, a.closedWithin(100*time.Millisecond))

		// The same flood from a peer that never reads the answers.
		q := dialH2(t, tg.addr, false)
		var err error
		q.c.SetWriteDeadline(time.Now().Add(30 * time.Second))
		for n = 0; n < 2000000 && err == nil; n++ {
			q.fr.WritePing(false, [8]byte{byte(n)})
			q.fr.WriteSettings()
			if n%256 == 255 {
				err = q.bw.Flush()
			}
		}
		// Disconnected (net/http's bound on queued control frames), or
		// back-pressured: the proxy stopped reading the flood, so it costs
		// nothing more. Taking it all is what must not happen.
		t.Logf("non-reading flooder: %d PING and SETTINGS sent; then %v", n, err)
		if err == nil {
			t.Errorf("a peer that never reads its acknowledgements sent %d frames unhindered", 2*n)
		}
	})
}

// TestH2FlowControlViolations: a client that sends past the windows the
// proxy advertised, to an upstream that reads nothing. The proxy holds
// request data until the upstream takes it, so without the check one
// stream could make it hold anything; past a stream's window the stream
// is reset (FLOW_CONTROL_ERROR), past the connection's the connection
// ends with GOAWAY FLOW_CONTROL_ERROR.
func TestH2FlowControlViolations(t *testing.T) {
	runAttack(t, func(t *testing.T, tg h2Target) {
		post := func(a *h2Attacker, id uint32) {
			a.buf.Reset()
			for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
				{Name: ":path", Value: "/hold"}, {Name: ":authority", Value: "app"}} {
				a.enc.WriteField(f)
			}
			a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: a.buf.Bytes(), EndHeaders: true})
		}
		chunk := make([]byte, 16<<10)

		// One stream, 64 MiB, windows ignored.
		a := dialH2(t, tg.addr, true)
		a.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		post(a, 1)
		var sent int
		for sent < 64<<20 {
			if a.fr.WriteData(1, false, chunk) != nil {
				break
			}
			sent += len(chunk)
			if sent%(256<<10) == 0 {
				if a.bw.Flush() != nil {
					break
				}
				if _, ok := a.rst.Load(uint32(1)); ok {
					break
				}
			}
		}
		a.bw.Flush()
		deadline := time.Now().Add(5 * time.Second)
		code, ok := a.rst.Load(uint32(1))
		for ; !ok && time.Now().Before(deadline); code, ok = a.rst.Load(uint32(1)) {
			time.Sleep(10 * time.Millisecond)
		}
		t.Logf("one stream past its window: %d KiB sent; RST_STREAM %v", sent>>10, code)
		if !ok || code != http2.ErrCodeFlowControl {
			t.Errorf("a stream sent past its window was not reset with FLOW_CONTROL_ERROR (got %v)", code)
		}

		// Many streams, each within its window, past the connection's.
		c := dialH2(t, tg.addr, true)
		c.c.SetWriteDeadline(time.Now().Add(10 * time.Second))
		sent = 0
		for i := range 60 {
			id := uint32(2*i + 1)
			post(c, id)
			for range (h2StreamWindow - 16<<10) / len(chunk) {
				if c.fr.WriteData(id, false, chunk) != nil {
					break
				}
				sent += len(chunk)
			}
			if c.bw.Flush() != nil {
				break
			}
		}
		closed := c.closedWithin(5 * time.Second)
		t.Logf("streams within their windows, past the connection's: %d KiB sent; closed %v, GOAWAY %s", sent>>10, closed, c.goAwayCode())
		if !closed || c.goAwayCode() != http2.ErrCodeFlowControl.String() {
			t.Errorf("a connection sent past its window: closed %v, GOAWAY %s; want closed with FLOW_CONTROL_ERROR", closed, c.goAwayCode())
		}
	})
}

// TestH2UpstreamFlowControlViolations: an upstream that answers past the
// windows the proxy advertised to it, to a client that reads nothing. The
// proxy resets a stream sent past its window (FLOW_CONTROL_ERROR) and ends
// a connection sent past its own with GOAWAY FLOW_CONTROL_ERROR, instead of
// holding whatever the upstream sends.
func TestH2UpstreamFlowControlViolations(t *testing.T) {
	for _, tc := range []struct {
		name    string
		streams int
		each    int
	}{
		{"stream", 1, 4 << 20},
		{"connection", 8, h2StreamWindow - 16<<10},
	} {
		t.Run(tc.name, func(t *testing.T) {
			// What the proxy told the fake upstream: RST_STREAM or GOAWAY codes.
			got := make(chan string, 16)
			var hbuf bytes.Buffer
			hpack.NewEncoder(&hbuf).WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
			chunk := make([]byte, 16<<10)
			addr := fakeH2Upstream(t, func(f http2.Frame, write func(func(*http2.Framer))) {
				switch f := f.(type) {
				case *http2.HeadersFrame:
					// Written on another goroutine, so that what the
					// proxy says is read even once writes fail.
					id := f.StreamID
					go write(func(fr *http2.Framer) {
						fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true})
						for sent := 0; sent < tc.each; sent += len(chunk) {
							fr.WriteData(id, false, chunk)
						}
					})
				case *http2.RSTStreamFrame:
					got <- "RST_STREAM " + f.ErrCode.String()
				case *http2.GoAwayFrame:
					got <- "GOAWAY " + f.ErrCode.String()
				}
			})
			p := startProxy(t, Config{InboundTarget: addr})
			a := dialH2(t, p.InboundAddr(), true) // reads, never credits
			for i := range tc.streams {
				a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: a.block(), EndStream: true, EndHeaders: true})
			}
			a.bw.Flush()
			want := "RST_STREAM FLOW_CONTROL_ERROR"
			if tc.streams > 1 {
				want = "GOAWAY FLOW_CONTROL_ERROR"
			}
			deadline := time.After(5 * time.Second)
			for {
				select {
				case s := <-got:
					t.Logf("the upstream got %s", s)
					if s == want {
						return
					}
				case <-deadline:
					t.Fatalf("an upstream sending past the proxy's windows got no %s", want)
				}
			}
		})
	}
}

// TestH2ContentLengthMismatch: a request whose DATA does not add up to
// its content-length is malformed (RFC 9113 §8.1.1): its stream is reset
// with PROTOCOL_ERROR and the upstream never gets a whole request, which an
// HTTP/1.1 upstream could read as something else (request smuggling).
func TestH2ContentLengthMismatch(t *testing.T) {
	for _, dir := range []string{"inbound", "outbound"} {
		t.Run(dir, func(t *testing.T) {
			var whole atomic.Int64
			sum := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				if err == nil {
					whole.Add(1)
				}
				fmt.Fprintf(w, "%d", len(b))
			}))
			p := startProxy(t, Config{InboundTarget: sum, Resolver: resolve.Static{"app:80": {{Addr: sum}}}})
			addr := p.InboundAddr()
			if dir == "outbound" {
				addr = p.OutboundAddr()
			}
			a := dialH2(t, addr, true)
			send := func(id uint32, cl string, chunks []string, endOnHeaders bool) {
				a.buf.Reset()
				for _, f := range []hpack.HeaderField{{Name: ":method", Value: "POST"}, {Name: ":scheme", Value: "http"},
					{Name: ":path", Value: "/"}, {Name: ":authority", Value: "app"}, {Name: "content-length", Value: cl}} {
					a.enc.WriteField(f)
				}
				a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: a.buf.Bytes(), EndHeaders: true, EndStream: endOnHeaders})
				for i, c := range chunks {
					a.fr.WriteData(id, i == len(chunks)-1, []byte(c))
				}
				a.bw.Flush()
			}
			send(1, "10", []string{"12345"}, false)        // less
			send(3, "5", []string{"123", "456789"}, false) // more
			send(5, "3", nil, true)                        // none, ended
			send(7, "x1", []string{"1"}, false)            // not a number
			send(9, "4", []string{"12", "34"}, false)      // right
			for _, id := range []uint32{1, 3, 5, 7} {
				deadline := time.Now().Add(5 * time.Second)
				code, ok := a.rst.Load(id)
				for ; !ok && time.Now().Before(deadline); code, ok = a.rst.Load(id) {
					time.Sleep(5 * time.Millisecond)
				}
				if !ok || code != http2.ErrCodeProtocol {
					t.Errorf("stream %d: RST_STREAM %v, want PROTOCOL_ERROR", id, code)
				}
			}
			for deadline := time.Now().Add(5 * time.Second); whole.Load() == 0 && time.Now().Before(deadline); {
				time.Sleep(5 * time.Millisecond) // the right one's body
			}
			if n := whole.Load(); n != 1 {
				t.Errorf("the upstream read %d whole request bodies, want 1 (the request whose content-length was right)", n)
			}
			if _, ok := a.rst.Load(uint32(9)); ok {
				t.Errorf("the request whose content-length was right was reset")
			}
		})
	}
}

// TestH2UpstreamContentLengthMismatch: a response whose DATA does not add
// up to its content-length is malformed (RFC 9113 §8.1.1): the client gets
// the proxy's 502, or a reset once the response began (and the upstream's
// stream, if still open, is reset); a HEAD response's content-length, and a
// right one, pass.
func TestH2UpstreamContentLengthMismatch(t *testing.T) {
	dec := hpack.NewDecoder(4<<10, nil)
	addr := fakeH2Upstream(t, func(f http2.Frame, write func(func(*http2.Framer))) {
		hf, ok := f.(*http2.HeadersFrame)
		if !ok {
			return
		}
		path := requestPath(dec, hf)
		var b bytes.Buffer
		enc := hpack.NewEncoder(&b)
		enc.WriteField(hpack.HeaderField{Name: ":status", Value: "200"})
		cl, body, endOnHeaders := map[string]string{"/short": "10", "/long": "3", "/head": "10", "/right": "4", "/ended": "5",
			"/invalid": "4x", "/conflict": "4"}[path], "", false
		switch path {
		case "/short", "/long":
			body = "12345"
		case "/right", "/invalid", "/conflict":
			body = "1234"
		case "/head", "/ended":
			endOnHeaders = true
		}
		enc.WriteField(hpack.HeaderField{Name: "content-length", Value: cl})
		if path == "/conflict" {
			enc.WriteField(hpack.HeaderField{Name: "content-length", Value: "5"})
		}
		write(func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: hf.StreamID, BlockFragment: b.Bytes(), EndHeaders: true, EndStream: endOnHeaders})
			if !endOnHeaders {
				fr.WriteData(hf.StreamID, true, []byte(body))
			}
		})
	})
	p := startProxy(t, Config{InboundTarget: addr})
	client := newH2CClient(t)
	do := func(method, path string) (int, string, error) {
		req, _ := http.NewRequest(method, "http://"+p.InboundAddr()+path, nil)
		return doRequest(client, req)
	}
	if code, body, err := do("GET", "/right"); err != nil || code != 200 || body != "1234" {
		t.Errorf("right content-length: %d %q %v", code, body, err)
	}
	if code, _, err := do("HEAD", "/head"); err != nil || code != 200 {
		t.Errorf("HEAD with a content-length: %d %v", code, err)
	}
	if code, _, err := do("GET", "/ended"); err != nil || code != http.StatusBadGateway {
		t.Errorf("a response ended with its headers and content-length 5: %d %v, want the proxy's 502", code, err)
	}
	// A content-length that is not a number, or two that differ: the
	// response is malformed (RFC 9113 8.1.1), never forwarded.
	for _, path := range []string{"/invalid", "/conflict"} {
		if code, body, err := do("GET", path); err != nil || code != http.StatusBadGateway {
			t.Errorf("%s: %d %q %v, want the proxy's 502", path, code, body, err)
		}
	}
	for _, path := range []string{"/short", "/long"} {
		if code, body, err := do("GET", path); err == nil {
			t.Errorf("%s: %d %q, want the stream reset", path, code, body)
		}
	}
	// Each stream was over both ways (the upstream ended it): nothing to
	// reset upstream; the proxy counts them.
	wantMetric(t, p, 5, "conduit_proxy_errors_total", `direction="inbound"`, `error="h2_upstream_content_length"`)
}

// fakeH2Upstream serves one HTTP/2 connection, raw, on a loopback address
// it returns: the client's preface read, SETTINGS exchanged, and every
// other frame given to handle, with write to send frames (serialized,
// flushed; it may be called from other goroutines).
func fakeH2Upstream(t *testing.T, handle func(f http2.Frame, write func(func(*http2.Framer)))) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br, bw := bufio.NewReader(c), bufio.NewWriterSize(c, 64<<10)
		fr := http2.NewFramer(bw, br)
		var mu sync.Mutex
		write := func(f func(*http2.Framer)) {
			mu.Lock()
			defer mu.Unlock()
			f(fr)
			bw.Flush()
		}
		var preface [len(http2.ClientPreface)]byte
		if _, err := io.ReadFull(br, preface[:]); err != nil {
			return
		}
		write(func(fr *http2.Framer) { fr.WriteSettings() })
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			if sf, ok := f.(*http2.SettingsFrame); ok {
				if !sf.IsAck() {
					write(func(fr *http2.Framer) { fr.WriteSettingsAck() })
				}
				continue
			}
			handle(f, write)
		}
	}()
	return ln.Addr().String()
}

// TestH2UpstreamMalformedResponseHead: a response head without a
// three-digit :status, with 101 (which HTTP/2 does not have), or an
// informational one that ends the stream is malformed (RFC 9113 8.1, 8.3.2,
// 8.6): an intermediary must not forward it. The client gets the proxy's
// 502 instead of the head (or, for 100 with END_STREAM, instead of waiting
// for a final response that cannot come); a well-formed 100 before the
// final response passes.
func TestH2UpstreamMalformedResponseHead(t *testing.T) {
	heads := map[string][]string{
		"/no-status":     {"x-a", "b"},
		"/two-x-zero":    {":status", "2x0"},
		"/four-digits":   {":status", "2000"},
		"/switching":     {":status", "101"},
		"/continue-ends": {":status", "100"},
	}
	dec := hpack.NewDecoder(4<<10, nil)
	block := newBlockEncoder()
	addr := fakeH2Upstream(t, func(f http2.Frame, write func(func(*http2.Framer))) {
		hf, ok := f.(*http2.HeadersFrame)
		if !ok {
			return
		}
		path := requestPath(dec, hf)
		write(func(fr *http2.Framer) {
			if head, ok := heads[path]; ok {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: hf.StreamID, BlockFragment: block(head...), EndHeaders: true, EndStream: true})
				return
			}
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: hf.StreamID, BlockFragment: block(":status", "100"), EndHeaders: true})
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: hf.StreamID, BlockFragment: block(":status", "200"), EndHeaders: true})
			fr.WriteData(hf.StreamID, true, []byte("ok"))
		})
	})
	p := startProxy(t, Config{InboundTarget: addr})
	client := newH2CClient(t)
	for path := range heads {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.InboundAddr()+path, nil)
		code, body, err := doRequest(client, req)
		cancel()
		if code != http.StatusBadGateway || !strings.Contains(body, errUpstreamHead.Error()) {
			t.Errorf("%s: %d %q %v, want the proxy's 502", path, code, body, err)
		}
	}
	req, _ := http.NewRequest("GET", "http://"+p.InboundAddr()+"/continue-then-ok", nil)
	if code, body, err := doRequest(client, req); code != 200 || body != "ok" {
		t.Errorf("100 then 200: %d %q %v", code, body, err)
	}
	wantMetric(t, p, float64(len(heads)), "conduit_proxy_errors_total", `direction="inbound"`, `error="h2_upstream_malformed_response"`)
}

// requestPath is the :path of a request's HEADERS frame, decoded with the
// connection's decoder.
func requestPath(dec *hpack.Decoder, hf *http2.HeadersFrame) string {
	fields, _ := dec.DecodeFull(hf.HeaderBlockFragment())
	for _, fld := range fields {
		if fld.Name == ":path" {
			return fld.Value
		}
	}
	return ""
}

// TestH2LowerStreamID: a client's new stream must have a higher ID than
// any it opened (RFC 9113 5.1.1). HEADERS on an ID the client skipped is
// a connection error (GOAWAY PROTOCOL_ERROR), where the fast path used to
// drop it and leave the client waiting; HEADERS on a stream that was
// opened and has ended (trailers in flight after the proxy's answer or
// reset) is dropped, and the connection goes on.
func TestH2LowerStreamID(t *testing.T) {
	for _, tg := range h2Targets(t) {
		t.Run(tg.name, func(t *testing.T) {
			a := dialH2(t, tg.addr, true)
			a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: a.block(), EndStream: true, EndHeaders: true})
			a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: a.block(), EndStream: true, EndHeaders: true})
			a.bw.Flush()
			if !a.closedWithin(5*time.Second) || a.goAwayCode() != "PROTOCOL_ERROR" {
				t.Errorf("a new stream below one opened: GOAWAY %s, want PROTOCOL_ERROR and a close", a.goAwayCode())
			}

			a = dialH2(t, tg.addr, true)
			a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block(), EndStream: true, EndHeaders: true})
			a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: a.block(), EndStream: true, EndHeaders: true})
			a.bw.Flush()
			time.Sleep(50 * time.Millisecond) // stream 1 answered and ended
			a.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: a.block(), EndStream: true, EndHeaders: true})
			a.bw.Flush()
			if a.closedWithin(300*time.Millisecond) || a.goAwayCode() != "none" {
				t.Errorf("HEADERS on a stream opened and ended: GOAWAY %s, want it dropped", a.goAwayCode())
			}
		})
	}
}
