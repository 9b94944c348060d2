package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair returns both ends of a loopback TCP connection.
func tcpPair(t *testing.T) (client, server *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	acc := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		acc <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-acc
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c.(*net.TCPConn), s.(*net.TCPConn)
}

// TestRawIO: a meteredConn over a TCP socket reads and writes with raw
// system calls (rawIO) and behaves as net.TCPConn does: what is read and
// written, EOF, deadlines, Close from another goroutine, a write that
// must wait for the peer, and the errors' kinds and text.
func TestRawIO(t *testing.T) {
	// Each case runs on net.TCPConn itself and on a meteredConn over one,
	// and the outcomes must agree.
	type outcome struct {
		n                             int
		err                           string // with the connection's addresses cut out
		eof, timeout, closed, failure bool
	}
	run := func(t *testing.T, f func(c, peer *net.TCPConn, use net.Conn) (int, error)) [2]outcome {
		var out [2]outcome
		for i := range out {
			c, peer := tcpPair(t)
			var use net.Conn = c
			if i == 1 {
				mc := newMeteredConn(c)
				if mc.raw == nil {
					t.Fatal("a meteredConn over a *net.TCPConn does not use rawIO")
				}
				use = mc
			}
			n, err := f(c, peer, use)
			o := outcome{n: n}
			if err != nil {
				var ne net.Error
				o.err = strings.NewReplacer(c.LocalAddr().String(), "L", c.RemoteAddr().String(), "R").Replace(err.Error())
				o.eof = err == io.EOF
				o.timeout = errors.As(err, &ne) && ne.Timeout() && errors.Is(err, os.ErrDeadlineExceeded)
				o.closed = errors.Is(err, net.ErrClosed)
				o.failure = isFailure(err)
			}
			out[i] = o
		}
		return out
	}
	same := func(t *testing.T, out [2]outcome, want outcome) {
		t.Helper()
		if out[0] != out[1] {
			t.Errorf("net.TCPConn: %+v; meteredConn: %+v", out[0], out[1])
		}
		if out[1] != want {
			t.Errorf("meteredConn: %+v; want %+v", out[1], want)
		}
	}

	t.Run("echo", func(t *testing.T) {
		out := run(t, func(c, peer *net.TCPConn, use net.Conn) (int, error) {
			if _, err := use.Write([]byte("ping")); err != nil {
				return 0, err
			}
			b := make([]byte, 4)
			if _, err := io.ReadFull(peer, b); err != nil || string(b) != "ping" {
				t.Fatalf("peer read %q, %v", b, err)
			}
			peer.Write([]byte("pong!"))
			b = make([]byte, 64)
			n, err := io.ReadAtLeast(use, b, 5)
			if string(b[:n]) != "pong!" {
				t.Errorf("read %q", b[:n])
			}
			if n, err := use.Read(nil); n != 0 || err != nil {
				t.Errorf("zero-length read: %d, %v", n, err)
			}
			return n, err
		})
		same(t, out, outcome{n: 5})
	})
	t.Run("eof", func(t *testing.T) {
		out := run(t, func(c, peer *net.TCPConn, use net.Conn) (int, error) {
			peer.Write([]byte("last"))
			peer.CloseWrite()
			if b, err := io.ReadAll(use); string(b) != "last" || err != nil {
				t.Errorf("read %q, %v", b, err)
			}
			return use.Read(make([]byte, 8))
		})
		same(t, out, outcome{err: "EOF", eof: true})
	})
	t.Run("read deadline", func(t *testing.T) {
		out := run(t, func(c, peer *net.TCPConn, use net.Conn) (int, error) {
			use.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
			return use.Read(make([]byte, 8))
		})
		same(t, out, outcome{err: "read tcp L->R: i/o timeout", timeout: true})
	})
	t.Run("close while reading", func(t *testing.T) {
		out := run(t, func(c, peer *net.TCPConn, use net.Conn) (int, error) {
			time.AfterFunc(20*time.Millisecond, func() { c.Close() })
			return use.Read(make([]byte, 8))
		})
		same(t, out, outcome{err: "read tcp L->R: use of closed network connection", closed: true})
	})
	t.Run("write waits for the peer", func(t *testing.T) {
		// Far more than the socket buffers hold: the write must wait
		// for the poller (EAGAIN) and go on where it stopped.
		payload := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
		out := run(t, func(c, peer *net.TCPConn, use net.Conn) (int, error) {
			got := make(chan []byte)
			go func() {
				time.Sleep(20 * time.Millisecond)
				b, _ := io.ReadAll(peer)
				got <- b
			}()
			n, err := use.Write(payload)
			c.CloseWrite()
			if b := <-got; !bytes.Equal(b, payload) {
				t.Errorf("peer read %d bytes, not the %d written", len(b), len(payload))
			}
			return n, err
		})
		same(t, out, outcome{n: len(payload)})
	})
	t.Run("write deadline", func(t *testing.T) {
		payload := make([]byte, 32<<20)
		out := run(t, func(c, peer *net.TCPConn, use net.Conn) (int, error) {
			use.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
			n, err := use.Write(payload) // nobody reads
			if n <= 0 || n >= len(payload) {
				t.Errorf("wrote %d of %d before the deadline", n, len(payload))
			}
			return 0, err
		})
		same(t, out, outcome{err: "write tcp L->R: i/o timeout", timeout: true})
	})
	t.Run("write after reset", func(t *testing.T) {
		out := run(t, func(c, peer *net.TCPConn, use net.Conn) (int, error) {
			peer.SetLinger(0)
			peer.Close()
			time.Sleep(20 * time.Millisecond)
			var err error
			for range 10 { // the first write may still be accepted
				if _, err = use.Write([]byte("x")); err != nil {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			return 0, err
		})
		same(t, out, outcome{err: "write tcp L->R: write: connection reset by peer", failure: true})
	})
}

// TestRawIOConcurrent: concurrent writers and readers of one meteredConn
// (net.Conn allows it) each move whole buffers, as with net.TCPConn.
func TestRawIOConcurrent(t *testing.T) {
	c, peer := tcpPair(t)
	mc := newMeteredConn(c)
	// Broken state would hang rather than fail: bound both ends.
	mc.SetDeadline(time.Now().Add(10 * time.Second))
	peer.SetDeadline(time.Now().Add(10 * time.Second))
	const writers, each, size = 8, 50, 4096
	var wg sync.WaitGroup
	for w := range writers {
		wg.Go(func() {
			msg := bytes.Repeat([]byte{byte('a' + w)}, size)
			for range each {
				if n, err := mc.Write(msg); n != size || err != nil {
					t.Errorf("write: %d, %v", n, err)
					return
				}
			}
		})
	}
	got := make(chan error, 1)
	go func() {
		buf := make([]byte, size)
		for range writers * each {
			if _, err := io.ReadFull(peer, buf); err != nil {
				got <- err
				return
			}
			if bytes.Count(buf, buf[:1]) != size {
				got <- fmt.Errorf("interleaved writes: a buffer starting %q holds other bytes", buf[:1])
				return
			}
		}
		got <- nil
	}()
	wg.Wait()
	if err := <-got; err != nil {
		t.Fatal(err)
	}
	// Two readers at once share what comes, byte for byte.
	var total atomic.Int64
	for range 2 {
		wg.Go(func() {
			buf := make([]byte, 1000)
			for {
				n, err := mc.Read(buf)
				total.Add(int64(n))
				if err != nil {
					return
				}
			}
		})
	}
	peer.Write(make([]byte, 1<<20))
	peer.CloseWrite()
	wg.Wait()
	if total.Load() != 1<<20 {
		t.Errorf("two readers read %d bytes, not %d", total.Load(), 1<<20)
	}
}

// TestRawIOCounts: a meteredConn's raw reads and writes are counted as
// its own were.
func TestRawIOCounts(t *testing.T) {
	c, peer := tcpPair(t)
	mc := newMeteredConn(c)
	mc.Write([]byte("hello"))
	peer.Write([]byte("hi"))
	io.ReadFull(mc, make([]byte, 2))
	if r, w := mc.preRead.Load(), mc.preWrite.Load(); r != 2 || w != 5 {
		t.Errorf("counted %d read and %d written; want 2 and 5", r, w)
	}
}
