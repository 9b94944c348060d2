// Package sniff serves TLS and plaintext on one port: each accepted
// connection's first byte tells a TLS handshake record (0x16) from anything
// else. The proxy's admin port (plaintext /metrics and probes, mTLS tap)
// and the controller's gRPC port (mTLS proxies, plaintext CLI) use it. It
// imports only the standard library, so the proxy may use it.
package sniff

import (
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"
)

// tlsRecordHandshake is the first byte of a TLS ClientHello record.
const tlsRecordHandshake = 0x16

// Listener hands out sniffed connections. Its own accept loop gives each
// connection a goroutine that reads the first byte within the timeout, so a
// silent client holds only its own goroutine. A TLS connection is wrapped in
// tls.Server with the configuration of the moment (closed when there is
// none); others are returned as they are, first byte included.
type Listener struct {
	ln        net.Listener
	timeout   time.Duration
	tlsConfig func() *tls.Config
	log       *slog.Logger

	conns chan net.Conn
	done  chan struct{}
	once  sync.Once

	mu      sync.Mutex            // guards pending
	pending map[net.Conn]struct{} // connections being sniffed, cut short by Close
	wg      sync.WaitGroup        // the accept loop and the sniffing goroutines
}

// NewListener starts sniffing ln's connections. tlsConfig may return nil
// (no identity yet): TLS connections are then refused.
func NewListener(ln net.Listener, timeout time.Duration, tlsConfig func() *tls.Config, log *slog.Logger) *Listener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	l := &Listener{ln: ln, timeout: timeout, tlsConfig: tlsConfig, log: log,
		conns: make(chan net.Conn), done: make(chan struct{}), pending: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *Listener) closed() bool {
	select {
	case <-l.done:
		return true
	default:
		return false
	}
}

func (l *Listener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.closed() || errors.Is(err, net.ErrClosed) {
				l.Close()
				return
			}
			// Temporary failures (EMFILE, ...): back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("accept failed", "addr", l.ln.Addr(), "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-l.done:
				return
			}
			continue
		}
		delay = 0
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.sniff(c)
		}()
	}
}

// sniff reads c's first byte and hands c to Accept, as TLS or plaintext.
func (l *Listener) sniff(c net.Conn) {
	l.mu.Lock()
	if l.closed() {
		l.mu.Unlock()
		c.Close()
		return
	}
	l.pending[c] = struct{}{}
	c.SetReadDeadline(time.Now().Add(l.timeout))
	l.mu.Unlock()
	var first [1]byte
	_, err := io.ReadFull(c, first[:])
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	var conn net.Conn = &prefixed{Conn: c, first: first[0]}
	if first[0] == tlsRecordHandshake {
		cfg := l.tlsConfig()
		if cfg == nil {
			l.log.Debug("TLS connection refused: no identity yet", "addr", l.ln.Addr(), "remote", c.RemoteAddr())
			c.Close()
			return
		}
		conn = tls.Server(conn, cfg)
	}
	select {
	case l.conns <- conn:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next sniffed connection.
func (l *Listener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting and cuts short the connections being sniffed;
// connections already handed out stay open.
func (l *Listener) Close() error {
	var err error
	l.once.Do(func() {
		l.mu.Lock()
		close(l.done)
		for c := range l.pending {
			c.SetReadDeadline(time.Now())
		}
		l.mu.Unlock()
		err = l.ln.Close()
	})
	return err
}

// Wait returns once the accept loop and every sniffing goroutine are done.
func (l *Listener) Wait() { l.wg.Wait() }

// Addr is the listening address.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// prefixed gives back the sniffed byte before reading on.
type prefixed struct {
	net.Conn
	first byte
	read  bool
}

func (c *prefixed) Read(p []byte) (int, error) {
	if !c.read && len(p) > 0 {
		c.read = true
		p[0] = c.first
		return 1, nil
	}
	return c.Conn.Read(p)
}
