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
	return &meteredConn{Conn: c, opened: time.Now()}
}

func (m *meteredConn) attach(s *metrics.TCP) {
	if !m.series.CompareAndSwap(nil, s) {
		return
	}
	s.Open()
	s.AddRead(int(m.preRead.Swap(0)))
	s.AddWritten(int(m.preWrite.Swap(0)))
}

func (m *meteredConn) Read(b []byte) (int, error) {
	n, err := m.Conn.Read(b)
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

func (m *meteredConn) Write(b []byte) (int, error) {
	n, err := m.Conn.Write(b)
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
	return c.Conn.Read(b)
}

func (c *servedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// isRefused reports a connection refused by the upstream.
func isRefused(err error) bool { return errors.Is(err, syscall.ECONNREFUSED) }
