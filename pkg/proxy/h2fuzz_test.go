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
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// FuzzH2Connection sends a client connection's worth of HTTP/2 frames,
// chosen by the fuzzer, to one of the proxy's h2c servers (inbound or
// outbound, fast path or net/http's), reads what comes back until the
// proxy goes quiet, and closes.
// Whatever the frames, the proxy must not panic (a recovered panic is
// counted and fails the test too), must serve a well-behaved client on
// another connection, and must drop the connection's state once it is
// closed.
//
// The input is a list of frames, 4 bytes of header each (type, flags,
// stream ID, payload length) and the payload. Types 0-11 are sent raw (10
// and 11 are unknown types, which a peer must ignore); 12 is a HEADERS
// frame with a well-formed request head, 13 one with trailers, so that the
// fuzzer reaches streams that the proxy forwards.
func FuzzH2Connection(f *testing.F) {
	get := []byte{12, 0x5, 1, 1, 'a'}                         // GET /fa, END_STREAM
	post := []byte{12, 0x4, 3, 2, 'b', 1}                     // POST /fb with content-length 1
	data := []byte{0, 0x1, 3, 1, 'x'}                         // DATA, END_STREAM
	rst := []byte{3, 0, 3, 4, 0, 0, 0, 8}                     // RST_STREAM CANCEL
	window := []byte{8, 0, 0, 4, 0x7f, 0xff, 0xff, 0xff}      // connection WINDOW_UPDATE past 2^31-1
	settings := []byte{4, 0, 0, 6, 0, 4, 0xff, 0xff, 0xff, 0} // INITIAL_WINDOW_SIZE too large
	trailers := []byte{13, 0x5, 3, 0}
	ping := []byte{6, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8}
	for _, seed := range [][]byte{
		get,
		frames(post, data),
		frames(post, rst, get),
		frames(post, trailers),
		frames(get, get),    // a stream ID used twice
		frames(post, post),  // HEADERS again on an open stream
		frames(window, get), // flow-control error
		frames(settings, get),
		frames(ping, []byte{10, 0, 0, 2, 'h', 'i'}, get),         // an unknown frame type
		{1, 0x4, 1, 3, 0xff, 0xff, 0xff},                         // HEADERS with a broken HPACK block
		{9, 0x4, 1, 0},                                           // CONTINUATION without HEADERS
		frames([]byte{12, 0x1, 5, 1, 'c'}, []byte{9, 0x4, 5, 0}), // HEADERS without END_HEADERS, then CONTINUATION
	} {
		for _, fast := range []bool{true, false} {
			f.Add(seed, fast, false)
			f.Add(seed, fast, true)
		}
	}
	app := startHTTPBackend(f, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-T")
		io.WriteString(w, "ok")
		w.Header().Set("X-T", "done")
	}))
	// A proxy on each path; its outbound listener routes the requests'
	// authority, app, to the backend too.
	proxies := map[bool]*Proxy{}
	for _, fast := range []bool{true, false} {
		proxies[fast] = startProxy(f, Config{InboundTarget: app, Resolver: resolve.Static{"app:80": {{Addr: app}}}, DisableFastPath: !fast})
	}
	f.Fuzz(func(t *testing.T, input []byte, fast, outbound bool) {
		p, in, listener := proxies[fast], input, proxies[fast].InboundAddr()
		if outbound {
			listener = p.OutboundAddr()
		}
		c, err := net.Dial("tcp", listener)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var out bytes.Buffer
		out.WriteString(http2.ClientPreface)
		fr := http2.NewFramer(&out, nil)
		fr.WriteSettings()
		block := newBlockEncoder()
		for sent := 0; len(in) >= 4 && sent < 64; sent++ {
			typ, flags, sid, n := in[0], http2.Flags(in[1]), uint32(in[2]&0x7f), min(int(in[3]), len(in)-4)
			payload := in[4 : 4+n]
			in = in[4+n:]
			switch typ % 14 {
			case 12:
				// Path from the payload's printable bytes; a length from
				// its first byte when POST (flags 0x4 without 0x1).
				path := "/f"
				for _, b := range payload {
					if b > ' ' && b < 0x7f {
						path += string(rune(b))
					}
				}
				fields := []string{":method", "GET", ":scheme", "http", ":path", path, ":authority", "app"}
				if flags&http2.FlagHeadersEndStream == 0 {
					fields[1] = "POST"
					if len(payload) > 1 {
						fields = append(fields, "content-length", strconv.Itoa(int(payload[1])))
					}
				}
				fr.WriteRawFrame(http2.FrameHeaders, (flags|http2.FlagHeadersEndHeaders)&^(http2.FlagHeadersPadded|http2.FlagHeadersPriority), sid, block(fields...))
			case 13:
				fr.WriteRawFrame(http2.FrameHeaders, (flags|http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream)&^(http2.FlagHeadersPadded|http2.FlagHeadersPriority), sid, block("x-t", "v"))
			default:
				fr.WriteRawFrame(http2.FrameType(typ%14), flags, sid, payload)
			}
		}
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(out.Bytes()); err != nil {
			t.Logf("write: %v", err) // the proxy may close early
		}
		// Read until the proxy closes or is quiet for a moment.
		buf := make([]byte, 32<<10)
		for {
			c.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
			if _, err := c.Read(buf); err != nil {
				break
			}
		}
		c.Close()

		// Another client is served.
		client := newH2CClient(t)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+listener+"/second", nil)
		req.Host = "app"
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("after %x a well-behaved request failed: %v", input, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || string(b) != "ok" {
			t.Fatalf("after %x a well-behaved request got %d %q", input, resp.StatusCode, b)
		}
		client.CloseIdleConnections()
		if got := metricSum(scrape(t, p), "conduit_proxy_panics_total"); got != 0 {
			t.Fatalf("after %x the proxy panicked %v times", input, got)
		}
		// The closed connections' state is dropped.
		deadline := time.Now().Add(5 * time.Second)
		for {
			p.mu.Lock()
			n := len(p.h2Downs)
			p.mu.Unlock()
			if n == 0 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d HTTP/2 client connections still tracked 5 s after they closed", n)
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

// newBlockEncoder returns a connection's HPACK encoder: each call encodes
// name, value pairs into a header block.
func newBlockEncoder() func(fields ...string) []byte {
	var buf bytes.Buffer
	enc := hpack.NewEncoder(&buf)
	return func(fields ...string) []byte {
		buf.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return bytes.Clone(buf.Bytes())
	}
}

// frames concatenates encoded frames.
func frames(list ...[]byte) []byte {
	return bytes.Join(list, nil)
}

// FuzzH2Upstream is FuzzH2Connection's other side: the upstream answers the
// proxy's first request with frames the fuzzer chooses, then closes the
// connection. Whatever the frames, the client must get an answer (a
// response, the proxy's error or a reset) rather than wait, the proxy must
// not panic, and the next requests must be served on a new connection.
//
// The input is as FuzzH2Connection's, except that the stream ID byte
// selects (mod 4) stream 0, the request's stream, the next client stream
// or an even (server-initiated) one; 12 is a HEADERS frame with a response
// head (its status from the payload's first byte, a content-length from
// its second), 13 one with trailers.
func FuzzH2Upstream(f *testing.F) {
	head := []byte{12, 0x4, 1, 1, 0}          // 200, no END_STREAM
	headEnd := []byte{12, 0x5, 1, 1, 0}       // 200, END_STREAM
	data := []byte{0, 0x1, 1, 2, 'o', 'k'}    // DATA "ok", END_STREAM
	withLength := []byte{12, 0x4, 1, 2, 0, 5} // 200, content-length 5
	interim := []byte{12, 0x4, 1, 1, 3}       // 100 Continue
	trailers := []byte{13, 0x5, 1, 0}
	rst := []byte{3, 0, 1, 4, 0, 0, 0, 2} // RST_STREAM INTERNAL_ERROR
	goaway := []byte{7, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0}
	for _, seed := range [][]byte{
		headEnd,
		frames(head, data),
		frames(withLength, data), // shorter than its content-length
		frames(interim, head, data),
		frames(head, trailers),
		frames(head, rst),
		frames(goaway, head, data),
		frames([]byte{12, 0x5, 2, 1, 0}, headEnd), // an answer on a stream the proxy never opened
		frames([]byte{12, 0x5, 3, 1, 0}),          // on an even stream
		frames(data),                              // DATA before HEADERS
		frames([]byte{12, 0x4, 1, 1, 7}, data),    // a malformed :status
		{1, 0x4, 1, 3, 0xff, 0xff, 0xff},          // a broken HPACK block
		frames([]byte{8, 0, 1, 4, 0x7f, 0xff, 0xff, 0xff}, []byte{8, 0, 1, 4, 0x7f, 0xff, 0xff, 0xff}), // window overflow
	} {
		f.Add(seed, true)
		f.Add(seed, false)
	}
	f.Fuzz(func(t *testing.T, input []byte, fast bool) {
		p := startProxy(t, Config{InboundTarget: fuzzUpstream(t, input), DisableFastPath: !fast})
		client := newH2CClient(t)
		do := func(path string) (int, string, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.InboundAddr()+path, nil)
			req.Host = "app"
			return doRequest(client, req)
		}
		if _, _, err := do("/first"); errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("after %x and the upstream's close, no answer in 5 s", input)
		}
		servedAgain(t, fmt.Sprintf("%x", input), p, func() (int, string, error) { return do("/second") },
			func(code int, body string) bool { return code == 200 && body == "ok" })
	})
}

// servedAgain requires the next requests after an upstream's misbehaviour
// and close to be served (served says which answer is right), and the
// proxy not to have panicked. The first may race with the close (the proxy
// answers it 502, as it cannot know whether the upstream took it); one of
// the two after it must go to a new connection.
func servedAgain(t *testing.T, after string, p *Proxy, do func() (int, string, error), served func(code int, body string) bool) {
	t.Helper()
	for try := 1; ; try++ {
		code, body, err := do()
		if served(code, body) {
			break
		}
		if try == 3 {
			t.Fatalf("after %s the next requests got %d %q (%v), want a new connection's answer", after, code, body, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := metricSum(scrape(t, p), "conduit_proxy_panics_total"); got != 0 {
		t.Fatalf("after %s the proxy panicked %v times", after, got)
	}
}

// fuzzUpstream serves h2c on a loopback address it returns. Its first
// connection answers the first request with script's frames (see
// FuzzH2Upstream) and closes; later ones answer each request 200 "ok".
func fuzzUpstream(t *testing.T, script []byte) string {
	return fuzzServer(t, func(c net.Conn, num int32) {
		if num == 1 {
			serveFuzzUpstream(c, script)
		} else {
			serveFuzzUpstream(c, nil)
		}
	})
}

// fuzzServer listens on loopback, serves each connection on its own
// goroutine with serve (numbered from 1, closed after it), and returns the
// address.
func fuzzServer(t *testing.T, serve func(c net.Conn, num int32)) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var n atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
			go func(num int32) {
				defer c.Close()
				serve(c, num)
			}(n.Add(1))
		}
	}()
	return ln.Addr().String()
}

func serveFuzzUpstream(c net.Conn, script []byte) {
	br, bw := bufio.NewReader(c), bufio.NewWriter(c)
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(br, preface[:]); err != nil {
		return
	}
	fr := http2.NewFramer(bw, br)
	block := newBlockEncoder()
	fr.WriteSettings()
	bw.Flush()
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			return
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.HeadersFrame:
			id := f.StreamID
			if script == nil {
				fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(":status", "200"), EndHeaders: true})
				fr.WriteData(id, true, []byte("ok"))
				break
			}
			for in, sent := script, 0; len(in) >= 4 && sent < 64; sent++ {
				typ, flags, n := in[0], http2.Flags(in[1]), min(int(in[3]), len(in)-4)
				sid := [4]uint32{0, id, id + 2, id + 1}[in[2]%4]
				payload := in[4 : 4+n]
				in = in[4+n:]
				noPad := ^(http2.FlagHeadersPadded | http2.FlagHeadersPriority)
				switch typ % 14 {
				case 12:
					status := "200"
					if len(payload) > 0 {
						status = [8]string{"200", "204", "304", "100", "103", "404", "502", "2x0"}[payload[0]%8]
					}
					fields := []string{":status", status}
					if len(payload) > 1 {
						fields = append(fields, "content-length", strconv.Itoa(int(payload[1])))
					}
					fr.WriteRawFrame(http2.FrameHeaders, (flags|http2.FlagHeadersEndHeaders)&noPad, sid, block(fields...))
				case 13:
					fr.WriteRawFrame(http2.FrameHeaders, (flags|http2.FlagHeadersEndHeaders|http2.FlagHeadersEndStream)&noPad, sid, block("x-t", "v"))
				default:
					fr.WriteRawFrame(http2.FrameType(typ%14), flags, sid, payload)
				}
			}
			bw.Flush()
			return
		}
		bw.Flush()
	}
}

// TestH2UpstreamSettingsOnNetHTTPPath: net/http's path speaks h2c upstream,
// through h2FlowGuard, with the windows the proxy's memory budget sets
// (256 KiB a stream, 1 MiB a connection), not an HTTP/2 client's defaults
// (x/net's: 4 MiB and 1 GiB).
func TestH2UpstreamSettingsOnNetHTTPPath(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	type seen struct{ streamWindow, connCredit uint32 }
	got := make(chan seen, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		var preface [len(http2.ClientPreface)]byte
		if _, err := io.ReadFull(br, preface[:]); err != nil {
			return
		}
		fr := http2.NewFramer(c, br)
		var s seen
		for s.streamWindow == 0 || s.connCredit == 0 {
			f, err := fr.ReadFrame()
			if err != nil {
				return
			}
			switch f := f.(type) {
			case *http2.SettingsFrame:
				if v, ok := f.Value(http2.SettingInitialWindowSize); ok {
					s.streamWindow = v
				}
			case *http2.WindowUpdateFrame:
				if f.StreamID == 0 {
					s.connCredit = f.Increment
				}
			}
		}
		got <- s
	}()
	p := startProxy(t, Config{InboundTarget: ln.Addr().String(), DisableFastPath: true})
	go func() {
		req, _ := http.NewRequest("GET", "http://"+p.InboundAddr()+"/", nil)
		if resp, err := newH2CClient(t).Do(req); err == nil {
			resp.Body.Close()
		}
	}()
	select {
	case s := <-got:
		if s.streamWindow != 256<<10 || s.connCredit != 1<<20 {
			t.Errorf("the upstream connection's stream window %d and connection credit %d, want %d and %d", s.streamWindow, s.connCredit, 256<<10, 1<<20)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no SETTINGS and connection WINDOW_UPDATE from the proxy's upstream connection")
	}
}
