package sniff

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"testing"
	"time"
)

// FuzzListener sends arbitrary first bytes to a real Listener over
// loopback TCP, read back in pieces of arbitrary sizes. A connection whose
// first byte is not a TLS handshake record is handed out with every byte,
// in order, the first one exactly once (also when read with empty buffers);
// one that starts like TLS is handed out as a *tls.Conn whose handshake
// fails on garbage instead of hanging or panicking; an empty one is closed
// by the listener.
func FuzzListener(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), []byte{1, 0, 3})
	f.Add([]byte("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"), []byte{0})
	f.Add([]byte{0x16, 0x03, 0x01, 0x00, 0x05, 0x01, 0x00, 0x00, 0x01, 0x00}, []byte{2})
	f.Add([]byte{0x16}, []byte{})
	f.Add([]byte{}, []byte{})
	f.Add([]byte{0x80, 0x16, 0x03}, []byte{1, 1, 1})
	raw, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	cfg := selfSigned(f)
	l := NewListener(raw, 2*time.Second, func() *tls.Config { return cfg }, nil)
	f.Cleanup(func() { l.Close(); l.Wait() })
	f.Fuzz(func(t *testing.T, in, sizes []byte) {
		c, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Write(in); err != nil {
			t.Fatal(err)
		}
		c.(*net.TCPConn).CloseWrite()
		if len(in) == 0 {
			// Nothing to sniff: the listener closes the connection.
			if n, err := c.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
				t.Fatalf("an empty connection read %d, %v; want it closed", n, err)
			}
			return
		}
		sc, err := l.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer sc.Close()
		sc.SetDeadline(time.Now().Add(5 * time.Second))
		if tc, ok := sc.(*tls.Conn); ok {
			if in[0] != tlsRecordHandshake {
				t.Fatalf("first byte %#x made a TLS connection", in[0])
			}
			if err := tc.Handshake(); err == nil {
				t.Fatalf("a TLS handshake succeeded with %q from a client that says nothing more", in)
			}
			return
		}
		if in[0] == tlsRecordHandshake {
			t.Fatalf("a TLS record came out as %T", sc)
		}
		var got []byte
		for i := 0; ; i++ {
			size := 1
			if len(sizes) > 0 {
				size = int(sizes[i%len(sizes)]) % 40 // 0: an empty read
			}
			if size == 0 {
				// An empty read returns nothing and loses nothing.
				if n, err := sc.Read(nil); n != 0 || err != nil && err != io.EOF {
					t.Fatalf("an empty read returned %d, %v", n, err)
				}
				size = 1
			}
			buf := make([]byte, size)
			n, err := sc.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			if i > 10*len(in)+100 {
				t.Fatalf("no end after %d reads: got %q of %q", i, got, in)
			}
		}
		if !bytes.Equal(got, in) {
			t.Fatalf("read %q, sent %q", got, in)
		}
	})
}
