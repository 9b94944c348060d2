package main

import (
	"bufio"
	"crypto/tls"
	"errors"
	"net"
	"sync"
	"time"
)

// sniffTimeout bounds how long a new connection may take to send its first byte.
const sniffTimeout = 10 * time.Second

// tlsRecordHandshake is the first byte of a TLS ClientHello.
const tlsRecordHandshake = 0x16

// sniffListener serves TLS and plaintext on one port: connections whose
// first byte starts a TLS handshake are wrapped in TLS with cfg, the others
// (HTTP/2's "PRI * ...") are passed through. Proxies use TLS with the
// controller's identity; `conduit` through a port-forward and `conduit demo`
// on loopback use plaintext.
type sniffListener struct {
	net.Listener
	cfg *tls.Config

	conns     chan net.Conn
	done      chan struct{}
	mu        sync.Mutex            // guards pending
	pending   map[net.Conn]struct{} // connections being sniffed, cut short by Close
	closeOnce sync.Once
	wg        sync.WaitGroup // the accept loop and the connections being sniffed
}

func newSniffListener(ln net.Listener, cfg *tls.Config) *sniffListener {
	l := &sniffListener{Listener: ln, cfg: cfg, conns: make(chan net.Conn), done: make(chan struct{}), pending: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *sniffListener) acceptLoop() {
	defer l.wg.Done()
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			l.Close()
			return
		}
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.sniff(c)
		}()
	}
}

// sniff reads the connection's first byte, without blocking other accepts.
func (l *sniffListener) sniff(c net.Conn) {
	br := bufio.NewReader(c)
	l.mu.Lock()
	select {
	case <-l.done:
		l.mu.Unlock()
		c.Close()
		return
	default:
	}
	l.pending[c] = struct{}{}
	c.SetReadDeadline(time.Now().Add(sniffTimeout))
	l.mu.Unlock()
	first, err := br.Peek(1)
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	var conn net.Conn = &peekedConn{Conn: c, r: br}
	if first[0] == tlsRecordHandshake {
		conn = tls.Server(conn, l.cfg)
	}
	select {
	case l.conns <- conn:
	case <-l.done:
		c.Close()
	}
}

// Accept returns the next sniffed connection.
func (l *sniffListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

// Close stops accepting; connections already handed out stay open.
func (l *sniffListener) Close() error {
	var err error
	l.closeOnce.Do(func() {
		l.mu.Lock()
		close(l.done)
		for c := range l.pending {
			c.SetReadDeadline(time.Now())
		}
		l.mu.Unlock()
		err = l.Listener.Close()
	})
	return err
}

// peekedConn reads through the buffer that holds the sniffed byte.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }
