package proxy

import (
	"encoding/binary"
	"errors"
	"net"
	"sync"

	"golang.org/x/net/http2"
)

// h2FlowGuard sits under net/http's HTTP/2 client on an h2c upstream
// connection (the net/http path: --http1-fast-path=false) and keeps from
// it the one frame that deadlocks Go 1.26's: a WINDOW_UPDATE that overflows
// a stream's send window. h2_bundle.go's processWindowUpdate aborts that
// stream while it holds the connection's lock, which abortStream takes
// again; every request on the connection, and the proxy's shutdown
// (CloseIdleConnections), then wait forever (FuzzH2Upstream found it).
// golang.org/x/net's Transport has the fix, but linking it costs every
// sidecar about 0.3 MB of peak RSS on the fast path, which never uses it.
//
// The guard follows the frame headers both ways: the peer's
// SETTINGS_INITIAL_WINDOW_SIZE and WINDOW_UPDATEs, and the DATA the client
// sends, per stream. On an overflow its Read fails before the frame
// reaches the client: a connection error, as a connection-level overflow
// already is to the client.
type h2FlowGuard struct {
	net.Conn
	in, out h2FrameScan

	mu      sync.Mutex // guards the fields below: Read and Write run on different goroutines
	initWin int64
	streams map[uint32]*h2FlowStream
	// done are streams ended both ways, kept a while: the client may
	// still hold them (a response body not yet read) and so be deadlocked
	// by an overflow on one. Past h2GuardDone they are forgotten, and only
	// an increment that overflows a fresh window alone is refused on them:
	// a client that holds a stream while 64 later ones end is not covered.
	done     []uint32
	lastSent uint32 // the highest stream the client opened
	err      error
}

type h2FlowStream struct {
	credit            int64 // the peer's increments less the DATA sent
	localEnd, peerEnd bool
}

const (
	h2MaxWindow       = 1<<31 - 1
	h2GuardDone       = 64   // ended streams remembered
	h2GuardMaxStreams = 1024 // streams followed at most
	h2ScanMaxPay      = 1 << 10
)

var errH2WindowOverflow = errors.New("upstream WINDOW_UPDATE overflows a stream's flow-control window")

func newH2FlowGuard(c net.Conn) *h2FlowGuard {
	g := &h2FlowGuard{Conn: c, initWin: 65535, streams: map[uint32]*h2FlowStream{}}
	g.out.skip = len(http2.ClientPreface)
	return g
}

func (g *h2FlowGuard) Write(b []byte) (int, error) {
	g.mu.Lock()
	g.out.scan(b, func(h http2.FrameHeader, _ []byte) bool {
		g.sent(h)
		return true
	})
	g.mu.Unlock()
	return g.Conn.Write(b)
}

func (g *h2FlowGuard) Read(b []byte) (int, error) {
	g.mu.Lock()
	err := g.err
	g.mu.Unlock()
	if err != nil {
		return 0, err
	}
	n, err := g.Conn.Read(b)
	g.mu.Lock()
	defer g.mu.Unlock()
	// Pass on the bytes before an overflowing frame; fail after them.
	n = g.in.scan(b[:n], g.received)
	if g.err != nil && n == 0 {
		return 0, g.err
	}
	return n, err
}

// sent follows a frame the client writes. Called with mu.
func (g *h2FlowGuard) sent(h http2.FrameHeader) {
	switch h.Type {
	case http2.FrameHeaders:
		g.lastSent = max(g.lastSent, h.StreamID)
		st := g.streams[h.StreamID]
		if st == nil {
			st = &h2FlowStream{}
			g.streams[h.StreamID] = st
		}
		if h.Flags.Has(http2.FlagHeadersEndStream) {
			g.end(h.StreamID, st, true)
		}
	case http2.FrameData:
		if st := g.streams[h.StreamID]; st != nil {
			st.credit -= int64(h.Length)
			if h.Flags.Has(http2.FlagDataEndStream) {
				g.end(h.StreamID, st, true)
			}
		}
	case http2.FrameRSTStream:
		delete(g.streams, h.StreamID)
	}
}

// received follows a frame the peer sent, and reports false (setting err)
// for one the client must not see. Called with mu.
func (g *h2FlowGuard) received(h http2.FrameHeader, payload []byte) bool {
	switch h.Type {
	case http2.FrameSettings:
		if h.Flags.Has(http2.FlagSettingsAck) {
			break
		}
		if int(h.Length) > len(payload) {
			// Too long to follow (a peer's SETTINGS is a few entries):
			// assume the largest initial window.
			g.initWin = h2MaxWindow
		}
		for p := payload; len(p) >= 6; p = p[6:] {
			if http2.SettingID(binary.BigEndian.Uint16(p)) == http2.SettingInitialWindowSize {
				g.initWin = int64(binary.BigEndian.Uint32(p[2:]))
			}
		}
	case http2.FrameWindowUpdate:
		if h.StreamID == 0 || len(payload) < 4 {
			break
		}
		inc := int64(binary.BigEndian.Uint32(payload) &^ (1 << 31))
		st := g.streams[h.StreamID]
		if st == nil && h.StreamID > g.lastSent && h.StreamID%2 == 1 && len(g.streams) < h2GuardMaxStreams {
			// A stream the client may have opened without having
			// written its HEADERS yet (the peer can guess the next ID).
			st = &h2FlowStream{}
			g.streams[h.StreamID] = st
		}
		if st == nil {
			// Forgotten: an increment that alone overflows a fresh
			// window is refused all the same.
			if g.initWin+inc > h2MaxWindow {
				g.err = errH2WindowOverflow
				return false
			}
			break
		}
		if st.credit += inc; g.initWin+st.credit > h2MaxWindow {
			g.err = errH2WindowOverflow
			return false
		}
	case http2.FrameHeaders, http2.FrameData:
		if st := g.streams[h.StreamID]; st != nil && h.Flags.Has(http2.FlagDataEndStream) {
			g.end(h.StreamID, st, false) // END_STREAM: the same bit in both
		}
	case http2.FrameRSTStream:
		delete(g.streams, h.StreamID)
	}
	return true
}

// end notes one side's END_STREAM; a stream ended both ways joins done,
// which forgets the oldest. Called with mu.
func (g *h2FlowGuard) end(id uint32, st *h2FlowStream, local bool) {
	if local {
		st.localEnd = true
	} else {
		st.peerEnd = true
	}
	if !st.localEnd || !st.peerEnd {
		return
	}
	g.done = append(g.done, id)
	if len(g.done) > h2GuardDone {
		delete(g.streams, g.done[0])
		g.done = append(g.done[:0], g.done[1:]...)
	}
}

// h2FrameScan follows the frames of one direction of an HTTP/2 byte
// stream, however its writes or reads split them.
type h2FrameScan struct {
	skip int // bytes still to pass: a payload not collected, or the preface
	hdr  [9]byte
	nhdr int
	h    http2.FrameHeader
	// pay collects the payload of a frame the scan reads (SETTINGS and
	// WINDOW_UPDATE, up to h2ScanMaxPay); want is what is left of it.
	pay  []byte
	want int
}

// scan follows b; at each frame whose header (and, for SETTINGS and
// WINDOW_UPDATE, payload) is complete it calls frame, and stops where
// frame returns false, returning how many bytes of b came before that
// frame. It returns len(b) otherwise.
func (s *h2FrameScan) scan(b []byte, frame func(h http2.FrameHeader, payload []byte) bool) int {
	start, i := 0, 0
	for i < len(b) {
		switch {
		case s.want > 0:
			n := min(s.want, len(b)-i)
			s.pay = append(s.pay, b[i:i+n]...)
			s.want -= n
			i += n
			if s.want == 0 {
				if !frame(s.h, s.pay) {
					return start
				}
				start = i
			}
		case s.skip > 0:
			n := min(s.skip, len(b)-i)
			s.skip -= n
			i += n
			if s.skip == 0 && s.nhdr == 0 {
				start = i
			}
		default:
			n := copy(s.hdr[s.nhdr:], b[i:])
			s.nhdr += n
			i += n
			if s.nhdr < len(s.hdr) {
				continue
			}
			s.nhdr = 0
			s.h = h2FrameHeader(s.hdr[:])
			if (s.h.Type == http2.FrameSettings || s.h.Type == http2.FrameWindowUpdate) && s.h.Length > 0 && s.h.Length <= h2ScanMaxPay {
				s.pay, s.want = s.pay[:0], int(s.h.Length)
				continue
			}
			s.skip = int(s.h.Length)
			if !frame(s.h, nil) {
				return start
			}
			if s.skip == 0 {
				start = i
			}
		}
	}
	return len(b)
}
