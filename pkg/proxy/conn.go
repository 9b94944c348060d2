package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
)

// connInfo is what the proxy knows about an accepted connection; HTTP
// handlers find it in the request context.
type connInfo struct {
	dir      string
	origDst  netip.AddrPort // invalid when the connection was not redirected
	target   string         // where inbound traffic goes: the explicit target or origDst
	tls      bool           // terminated proxy-to-proxy mTLS
	clientID string         // the meshed client's identity when tls
	remote   netip.AddrPort
	// port is the inbound port whose policy applies: the original
	// destination's, or the inbound target's.
	port uint16
	// streams counts an HTTP/2 connection's requests and those the client
	// reset before their response started (see guard: rapid reset).
	streams, earlyResets atomic.Int64
	resetClosed          atomic.Bool
	conn                 net.Conn // what the HTTP server serves, to close
}

type connInfoKey struct{}

func infoFrom(ctx context.Context) *connInfo {
	ci, _ := ctx.Value(connInfoKey{}).(*connInfo)
	if ci == nil {
		return &connInfo{}
	}
	return ci
}

// meteredConn counts a raw TCP connection's bytes and lifetime into a
// tcp_* series. The series is attached once the connection's labels are
// known (after detection and any TLS handshake); bytes moved before that
// are carried over. Reads and writes each come from a single goroutine.
type meteredConn struct {
	net.Conn
	raw      *rawIO // nil: Conn's own Read and Write (see rawIO)
	series   atomic.Pointer[metrics.TCP]
	preRead  atomic.Int64
	preWrite atomic.Int64
	opened   time.Time
	failed   atomic.Bool
	// detecting is set while the connection's first bytes are awaited, so
	// that drain can cut the wait short.
	detecting atomic.Bool
	once      sync.Once
	onClose   func(*meteredConn)
	fallback  func() *metrics.TCP // series for a connection closed before attach
}

func newMeteredConn(c net.Conn) *meteredConn {
	return &meteredConn{Conn: c, raw: newRawIO(c), opened: time.Now()}
}

func (m *meteredConn) attach(s *metrics.TCP) {
	if !m.series.CompareAndSwap(nil, s) {
		return
	}
	s.Open()
	s.AddRead(int(m.preRead.Swap(0)))
	s.AddWritten(int(m.preWrite.Swap(0)))
}

func (m *meteredConn) Read(b []byte) (n int, err error) {
	if m.raw != nil {
		n, err = m.raw.read(m.Conn, b)
	} else {
		n, err = m.Conn.Read(b)
	}
	if s := m.series.Load(); s != nil {
		s.AddRead(n)
	} else {
		m.preRead.Add(int64(n))
	}
	if err != nil && isFailure(err) {
		m.failed.Store(true)
	}
	return n, err
}

func (m *meteredConn) Write(b []byte) (n int, err error) {
	if m.raw != nil {
		n, err = m.raw.write(m.Conn, b)
	} else {
		n, err = m.Conn.Write(b)
	}
	if s := m.series.Load(); s != nil {
		s.AddWritten(n)
	} else {
		m.preWrite.Add(int64(n))
	}
	if err != nil && isFailure(err) {
		m.failed.Store(true)
	}
	return n, err
}

// CloseWrite half-closes the connection (opaque TCP keeps half-close).
func (m *meteredConn) CloseWrite() error {
	if cw, ok := m.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

func (m *meteredConn) Close() error {
	err := m.Conn.Close()
	m.once.Do(func() {
		s := m.series.Load()
		if s == nil && m.fallback != nil {
			m.attach(m.fallback())
			s = m.series.Load()
		}
		if s != nil {
			s.Close(time.Since(m.opened), !m.failed.Load())
		}
		if m.onClose != nil {
			m.onClose(m)
		}
	})
	return err
}

// isFailure tells errors that mean the connection broke from orderly ends.
func isFailure(err error) bool {
	return !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded)
}

// servedConn is what the HTTP servers and relays see: it replays the bytes
// consumed by detection, carries the connection's info, and hides a
// terminated *tls.Conn so that net/http treats the stream inside as
// cleartext (and detects h2c in it).
type servedConn struct {
	net.Conn
	prefix []byte
	info   *connInfo
	// stall, when set (the HTTP/1.1 fast path), bounds every read and
	// write that no explicit deadline covers: a request body the client
	// stops sending, or a response it stops reading, fails after stall.
	stall time.Duration
	// onStall is called when a write fails for the stall bound.
	onStall func()
	// mu guards the fields below and orders their deadline updates, so
	// that a concurrent explicit deadline (watchClient's stop) is never
	// overwritten by a stale stall deadline.
	mu         sync.Mutex
	explicit   bool      // the user set a read deadline
	readArmed  time.Time // when the stall read deadline was last set
	writeArmed time.Time
}

func (c *servedConn) Read(b []byte) (int, error) {
	if len(c.prefix) > 0 {
		n := copy(b, c.prefix)
		c.prefix = c.prefix[n:]
		if len(c.prefix) == 0 {
			c.prefix = nil
		}
		return n, nil
	}
	if c.stall > 0 {
		c.mu.Lock()
		if now := time.Now(); !c.explicit && now.Sub(c.readArmed) > c.stall/16 {
			c.readArmed = now
			c.Conn.SetReadDeadline(now.Add(c.stall))
		}
		c.mu.Unlock()
	}
	return c.Conn.Read(b)
}

func (c *servedConn) Write(b []byte) (int, error) {
	if c.stall > 0 {
		c.mu.Lock()
		if now := time.Now(); now.Sub(c.writeArmed) > c.stall/16 {
			c.writeArmed = now
			c.Conn.SetWriteDeadline(now.Add(c.stall))
		}
		c.mu.Unlock()
	}
	n, err := c.Conn.Write(b)
	if err != nil && c.onStall != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		c.onStall()
	}
	return n, err
}

// SetReadDeadline sets an explicit deadline; the zero time gives reads back
// to the stall bound.
func (c *servedConn) SetReadDeadline(t time.Time) error {
	if c.stall <= 0 {
		return c.Conn.SetReadDeadline(t)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.explicit, c.readArmed = !t.IsZero(), time.Time{}
	return c.Conn.SetReadDeadline(t)
}

func (c *servedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// isRefused reports a connection refused by the upstream.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
