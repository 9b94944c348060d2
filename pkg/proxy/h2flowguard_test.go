package proxy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"testing"

	"golang.org/x/net/http2"
)

// scriptConn reads from in and records what is written.
type scriptConn struct {
	net.Conn
	in  *bytes.Reader
	out bytes.Buffer
	// chunk bounds each Read (1: byte by byte).
	chunk int
}

func (c *scriptConn) Read(b []byte) (int, error) {
	if c.chunk > 0 && len(b) > c.chunk {
		b = b[:c.chunk]
	}
	return c.in.Read(b)
}

func (c *scriptConn) Write(b []byte) (int, error) { return c.out.Write(b) }

// wire encodes frames written by f.
func wire(f func(fr *http2.Framer)) []byte {
	var b bytes.Buffer
	f(http2.NewFramer(&b, nil))
	return b.Bytes()
}

// readAll reads g until an error, returning the bytes and the error.
func readAll(g *h2FlowGuard) ([]byte, error) {
	var got []byte
	buf := make([]byte, 7)
	for {
		n, err := g.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return got, err
		}
	}
}

// TestH2FlowGuard: the guard passes the peer's frames on until one would
// overflow a stream's send window as net/http's client counts it (initial
// window from SETTINGS, plus WINDOW_UPDATEs, less the DATA it sent), and
// fails the read before that frame is whole, however the bytes are split.
func TestH2FlowGuard(t *testing.T) {
	const max = 1<<31 - 1
	hdrs := func(id uint32, end bool) func(*http2.Framer) {
		return func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x82}, EndHeaders: true, EndStream: end})
		}
	}
	for _, tc := range []struct {
		name     string
		sent     []func(*http2.Framer) // by the client, before the peer's frames
		peer     []func(*http2.Framer)
		overflow bool
	}{
		{name: "credit up to the maximum",
			sent: []func(*http2.Framer){hdrs(1, false)},
			peer: []func(*http2.Framer){func(fr *http2.Framer) { fr.WriteWindowUpdate(1, max-65535) }}},
		{name: "one past it",
			sent:     []func(*http2.Framer){hdrs(1, false)},
			peer:     []func(*http2.Framer){func(fr *http2.Framer) { fr.WriteWindowUpdate(1, max-65535) }, func(fr *http2.Framer) { fr.WriteWindowUpdate(1, 1) }},
			overflow: true},
		{name: "credit for data sent",
			sent: []func(*http2.Framer){hdrs(1, false), func(fr *http2.Framer) { fr.WriteData(1, false, make([]byte, 16384)) }},
			peer: []func(*http2.Framer){func(fr *http2.Framer) { fr.WriteWindowUpdate(1, max-65535+16384) }}},
		{name: "a larger initial window",
			sent: []func(*http2.Framer){hdrs(1, false)},
			peer: []func(*http2.Framer){func(fr *http2.Framer) {
				fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
			}, func(fr *http2.Framer) { fr.WriteWindowUpdate(1, max-(1<<20)+1) }},
			overflow: true},
		{name: "a SETTINGS frame too long to follow: the largest initial window assumed",
			sent: []func(*http2.Framer){hdrs(1, false)},
			peer: []func(*http2.Framer){func(fr *http2.Framer) {
				many := make([]http2.Setting, 200) // 1,200 bytes of unknown settings
				for i := range many {
					many[i] = http2.Setting{ID: 0x100, Val: 1}
				}
				fr.WriteSettings(many...)
			}, func(fr *http2.Framer) { fr.WriteWindowUpdate(1, 1) }},
			overflow: true},
		{name: "the connection's window is the client's business",
			sent: []func(*http2.Framer){hdrs(1, false)},
			peer: []func(*http2.Framer){func(fr *http2.Framer) { fr.WriteWindowUpdate(0, max) }}},
		{name: "a stream not yet written, guessed",
			peer:     []func(*http2.Framer){func(fr *http2.Framer) { fr.WriteWindowUpdate(1, 1<<30) }, func(fr *http2.Framer) { fr.WriteWindowUpdate(1, 1<<30) }},
			overflow: true},
		{name: "a stream reset",
			sent: []func(*http2.Framer){hdrs(1, false), func(fr *http2.Framer) { fr.WriteRSTStream(1, http2.ErrCodeCancel) }},
			peer: []func(*http2.Framer){func(fr *http2.Framer) { fr.WriteWindowUpdate(1, 1<<30) }, func(fr *http2.Framer) { fr.WriteWindowUpdate(1, 1<<30) }}},
		{name: "a stream ended both ways is still followed",
			sent:     []func(*http2.Framer){hdrs(1, true)},
			peer:     []func(*http2.Framer){hdrs(1, true), func(fr *http2.Framer) { fr.WriteWindowUpdate(1, 1<<30) }, func(fr *http2.Framer) { fr.WriteWindowUpdate(1, 1<<30) }},
			overflow: true},
	} {
		for _, chunk := range []int{0, 1, 5} {
			var peer [][]byte
			for _, f := range tc.peer {
				peer = append(peer, wire(f))
			}
			c := &scriptConn{in: bytes.NewReader(bytes.Join(peer, nil)), chunk: chunk}
			g := newH2FlowGuard(c)
			out := []byte(http2.ClientPreface)
			for _, f := range tc.sent {
				out = append(out, wire(f)...)
			}
			for i := range out { // the client's writes, byte by byte
				g.Write(out[i : i+1])
			}
			got, err := readAll(g)
			if !tc.overflow {
				if err != io.EOF || !bytes.Equal(got, bytes.Join(peer, nil)) {
					t.Errorf("%s (reads of %d): %d bytes, %v; want all %d and EOF", tc.name, chunk, len(got), err, len(bytes.Join(peer, nil)))
				}
				continue
			}
			// Everything before the last frame, and never all of it
			// (bytes of it read before it was whole may have gone on).
			all, before := bytes.Join(peer, nil), len(bytes.Join(peer[:len(peer)-1], nil))
			if !errors.Is(err, errH2WindowOverflow) || len(got) < before || len(got) >= len(all) || !bytes.HasPrefix(all, got) {
				t.Errorf("%s (reads of %d): %d bytes, %v; want %d to %d and the overflow", tc.name, chunk, len(got), err, before, len(all)-1)
			}
		}
	}
}

// TestH2FlowGuardForgets: streams ended both ways are remembered up to a
// bound, then forgotten.
func TestH2FlowGuardForgets(t *testing.T) {
	g := newH2FlowGuard(&scriptConn{in: bytes.NewReader(nil)})
	g.Write([]byte(http2.ClientPreface))
	for id := uint32(1); id < 1000; id += 2 {
		g.Write(wire(func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x82}, EndHeaders: true, EndStream: true})
		}))
		g.in.scan(wire(func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: []byte{0x88}, EndHeaders: true, EndStream: true})
		}), g.received)
	}
	if len(g.streams) != h2GuardDone || len(g.done) != h2GuardDone {
		t.Errorf("%d streams followed, %d ended remembered; want %d", len(g.streams), len(g.done), h2GuardDone)
	}
}
