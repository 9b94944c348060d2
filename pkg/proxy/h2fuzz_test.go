package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzH2Connection sends a client connection's worth of HTTP/2 frames,
// chosen by the fuzzer, to the proxy's inbound h2c server (fast path or
// net/http's), reads what comes back until the proxy goes quiet, and closes.
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
		f.Add(seed, true)
		f.Add(seed, false)
	}
	app := startHTTPBackend(f, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Trailer", "X-T")
		io.WriteString(w, "ok")
		w.Header().Set("X-T", "done")
	}))
	proxies := map[bool]*Proxy{}
	for _, fast := range []bool{true, false} {
		proxies[fast] = startProxy(f, Config{InboundTarget: app, DisableFastPath: !fast})
	}
	f.Fuzz(func(t *testing.T, input []byte, fast bool) {
		p, in := proxies[fast], input
		c, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var out bytes.Buffer
		out.WriteString(http2.ClientPreface)
		fr := http2.NewFramer(&out, nil)
		fr.WriteSettings()
		var hbuf bytes.Buffer
		enc := hpack.NewEncoder(&hbuf)
		block := func(fields ...string) []byte {
			hbuf.Reset()
			for i := 0; i+1 < len(fields); i += 2 {
				enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
			}
			return bytes.Clone(hbuf.Bytes())
		}
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
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+p.InboundAddr()+"/second", nil)
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

// frames concatenates encoded frames.
func frames(list ...[]byte) []byte {
	return bytes.Join(list, nil)
}
