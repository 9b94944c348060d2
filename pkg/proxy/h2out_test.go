package proxy

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"

	"github.com/conduitmesh/conduit/internal/testenv"
)

// headersWrites counts the writes to a connection that carry a HEADERS
// frame (frames are followed across writes).
type headersWrites struct {
	w    io.Writer
	mu   sync.Mutex
	n    int
	skip int    // bytes of a frame begun in an earlier write
	part []byte // a frame header split across writes
}

func (h *headersWrites) Write(p []byte) (int, error) {
	h.mu.Lock()
	b := append(h.part, p...)
	h.part = nil
	headers := false
	for len(b) > 0 {
		if h.skip > 0 {
			k := min(h.skip, len(b))
			h.skip -= k
			b = b[k:]
			continue
		}
		if len(b) < 9 {
			h.part = append([]byte(nil), b...)
			break
		}
		length := int(binary.BigEndian.Uint32(b[:4]) >> 8)
		headers = headers || http2.FrameType(b[3]) == http2.FrameHeaders
		h.skip = 9 + length
	}
	if headers {
		h.n++
	}
	h.mu.Unlock()
	return h.w.Write(p)
}

func (h *headersWrites) count() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.n
}

// TestH2SharedUpstreamWritesCoalesce: requests that several client
// connections' readers take from one network poll, bound for one pooled
// upstream connection, leave in one write rather than one per reader
// (h2Flusher yields before it flushes a shared connection, so that the
// goroutines runnable with it write first). One P makes the poll's batch
// certain.
func TestH2SharedUpstreamWritesCoalesce(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	b := startH2Backend(t)
	p := startProxy(t, Config{InboundTarget: b.addr})
	const clients, rounds = 4, 5
	var cs []*h2Attacker
	for range clients {
		cs = append(cs, dialH2(t, p.InboundAddr(), true))
	}
	var frames [clients][]byte
	waitStarted := func(want int64) {
		t.Helper()
		testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
			if n := b.started.Load(); n < want {
				return fmt.Errorf("the backend started %d requests, want %d", n, want)
			}
			return nil
		})
	}
	send := func(id uint32) {
		for i, c := range cs {
			var fb bytes.Buffer
			http2.NewFramer(&fb, nil).WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: c.block(), EndStream: true, EndHeaders: true})
			frames[i] = fb.Bytes()
		}
		for i, c := range cs { // back to back: the proxy's readers wake together
			if _, err := c.c.Write(frames[i]); err != nil {
				t.Fatal(err)
			}
		}
	}
	// One request each first: the upstream connection is dialed and
	// every connection's preface read.
	send(1)
	waitStarted(clients)
	time.Sleep(50 * time.Millisecond) // the responses, and their credit, sent
	p.h2Ups.mu.Lock()
	var ups []*h2Up
	for _, l := range p.h2Ups.m {
		ups = append(ups, l...)
	}
	p.h2Ups.mu.Unlock()
	if len(ups) != 1 {
		t.Fatalf("%d upstream connections, want 1", len(ups))
	}
	out := ups[0].out
	hw := &headersWrites{w: out.conn}
	out.mu.Lock()
	if n := out.bw.Buffered(); n != 0 {
		out.mu.Unlock()
		t.Fatalf("%d bytes unflushed on the upstream connection", n)
	}
	out.bw.Reset(hw)
	out.mu.Unlock()

	for r := range rounds {
		send(uint32(3 + 2*r))
		waitStarted(int64(clients * (r + 2)))
	}
	// Without the yield each reader flushes its own request: one write
	// per request. With it a round leaves in one, now and then two.
	if n := hw.count(); n > rounds*clients/2 {
		t.Errorf("%d requests left in %d upstream writes, want at most %d", rounds*clients, n, rounds*clients/2)
	} else {
		t.Logf("%d requests left in %d upstream writes", rounds*clients, n)
	}
}

// countingConn counts the writes made to it.
type countingConn struct {
	net.Conn
	n atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.n.Add(1)
	return len(p), nil
}

// TestH2FlusherYieldsAfterOwnConnections: a flush writes the connections
// no other reader writes to before it yields for a shared one, so that
// what the upstream reader relays to clients never waits for the
// goroutines run by the yield. The goroutine started before the flush
// runs at the yield (one P) and sees the client's write done, the
// upstream's not yet.
func TestH2FlusherYieldsAfterOwnConnections(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	client, upstream := &countingConn{}, &countingConn{}
	c, u := newH2Out(client, 0), newH2Out(upstream, 0)
	defer c.release()
	defer u.release()
	u.shared = true
	var fl h2Flusher
	for _, o := range []*h2Out{u, c} { // the shared one marked first
		o.mu.Lock()
		o.windowLocked(0, 1)
		o.mu.Unlock()
		fl.mark(o)
	}
	atYield := make(chan [2]int32, 1)
	go func() { atYield <- [2]int32{client.n.Load(), upstream.n.Load()} }()
	fl.flush()
	if got := <-atYield; got != [2]int32{1, 0} {
		t.Errorf("at the yield: %d client and %d upstream writes, want 1 and 0", got[0], got[1])
	}
	if n := upstream.n.Load(); n != 1 {
		t.Errorf("%d upstream writes after the flush, want 1", n)
	}
}
