package detect

import (
	"crypto/tls"
	"net"
	"slices"
	"testing"
	"time"
)

// clientHelloBytes captures a real ClientHello from crypto/tls.
func clientHelloBytes(t testing.TB, sni string, alpn ...string) []byte {
	t.Helper()
	c, s := net.Pipe()
	defer s.Close()
	go func() {
		defer c.Close()
		tc := tls.Client(c, &tls.Config{ServerName: sni, NextProtos: alpn, InsecureSkipVerify: true})
		_ = tc.Handshake()
	}()
	_ = s.SetReadDeadline(time.Now().Add(5 * time.Second))
	var out []byte
	buf := make([]byte, 4096)
	for {
		n, err := s.Read(buf)
		out = append(out, buf[:n]...)
		if r := Classify(out); r.Protocol != Unknown || err != nil {
			return out
		}
	}
}

func TestClassify(t *testing.T) {
	hello := clientHelloBytes(t, "web.default.svc", "conduit.io/proxy", "h2")
	tests := []struct {
		name  string
		in    string
		want  Protocol
		final Protocol
	}{
		{"empty", "", Unknown, Opaque},
		{"h2 preface", h2Preface, HTTP2, HTTP2},
		{"h2 preface prefix", h2Preface[:10], Unknown, Opaque},
		{"h2 preface and frames", h2Preface + "\x00\x00\x00\x04", HTTP2, HTTP2},
		{"get", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", HTTP1, HTTP1},
		{"http/1.0", "POST /a?b=c HTTP/1.0\r\n", HTTP1, HTTP1},
		{"bare lf", "GET / HTTP/1.1\n", HTTP1, HTTP1},
		{"empty lines first", "\r\n\r\nGET /admin HTTP/1.1\r\n", HTTP1, HTTP1},
		{"empty lines only", "\r\n\r\n\r", Unknown, Opaque},
		{"bare lf first", "\nGET / HTTP/1.1\r\n", Opaque, Opaque},
		{"connect", "CONNECT example.com:443 HTTP/1.1\r\n", HTTP1, HTTP1},
		{"partial method", "GE", Unknown, Opaque},
		{"partial target", "GET /abc", Unknown, Opaque},
		{"partial version", "GET / HTTP/1", Unknown, Opaque},
		{"http/1.2: HTTP/1, for the HTTP path to refuse", "GET /admin HTTP/1.2\r\n", HTTP1, HTTP1},
		{"three-digit minor version", "GET / HTTP/1.123\r\n", HTTP1, HTTP1},
		{"minor version in pieces", "GET / HTTP/1.12", Unknown, Opaque},
		{"four-digit minor version", "GET / HTTP/1.1234\r\n", Opaque, Opaque},
		{"no minor version", "GET / HTTP/1.\r\n", Opaque, Opaque},
		{"http/2 request line", "GET / HTTP/2.0\r\n", Opaque, Opaque},
		{"lowercase version", "GET / http/1.1\r\n", Opaque, Opaque},
		{"space first", " GET / HTTP/1.1\r\n", Opaque, Opaque},
		{"ctl in target", "GET /\x01 HTTP/1.1\r\n", Opaque, Opaque},
		{"empty target", "GET  HTTP/1.1\r\n", Opaque, Opaque},
		{"redis", "*1\r\n$4\r\nPING\r\n", Opaque, Opaque},
		{"ssh", "SSH-2.0-OpenSSH_9.6\r\n", Opaque, Opaque},
		{"binary", "\x00\x01\x02\x03", Opaque, Opaque},
		{"tls", string(hello), TLS, TLS},
		{"tls header only", string(hello[:5]), Unknown, TLS},
		{"not a handshake record", "\x16\x02\x00\x00", Opaque, Opaque},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Classify([]byte(tt.in)).Protocol; got != tt.want {
				t.Errorf("Classify(%q) = %v, want %v", tt.in, got, tt.want)
			}
			if got := Final([]byte(tt.in)).Protocol; got != tt.final {
				t.Errorf("Final(%q) = %v, want %v", tt.in, got, tt.final)
			}
		})
	}
}

func TestClassifyTLSDetails(t *testing.T) {
	hello := clientHelloBytes(t, "web.default.svc", "conduit.io/proxy", "h2")
	r := Classify(hello)
	if r.SNI != "web.default.svc" {
		t.Errorf("SNI = %q, want web.default.svc", r.SNI)
	}
	if !slices.Equal(r.ALPN, []string{"conduit.io/proxy", "h2"}) {
		t.Errorf("ALPN = %q", r.ALPN)
	}
	// The same hello split across two records is reassembled.
	body := hello[5:]
	split := append([]byte{0x16, 3, 1, 0, 10}, body[:10]...)
	rest := body[10:]
	split = append(split, 0x16, 3, 1, byte(len(rest)>>8), byte(len(rest)))
	split = append(split, rest...)
	r = Classify(split)
	if r.Protocol != TLS || r.SNI != "web.default.svc" {
		t.Errorf("split records: got %+v", r)
	}
	// Byte by byte, it stays Unknown until complete.
	for i := 1; i < len(hello); i++ {
		if p := Classify(hello[:i]).Protocol; p != Unknown {
			t.Fatalf("Classify(hello[:%d]) = %v, want unknown", i, p)
		}
	}
	// No SNI, no ALPN (an IP address target).
	r = Classify(clientHelloBytes(t, ""))
	if r.Protocol != TLS || r.SNI != "" || len(r.ALPN) != 0 {
		t.Errorf("bare hello: got %+v", r)
	}
}

func TestPeek(t *testing.T) {
	tests := []struct {
		name   string
		writes []string
		close  bool
		want   Protocol
	}{
		{"http1 in pieces", []string{"GET / H", "TTP/1.1\r\n"}, false, HTTP1},
		{"silent client times out to opaque", nil, false, Opaque},
		{"half-closed empty client is opaque", nil, true, Opaque},
		{"partial then silence", []string{"GET /"}, false, Opaque},
		{"h2", []string{h2Preface}, false, HTTP2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// Real sockets: a net.Pipe refuses SetReadDeadline once its
			// other end has closed, which a TCP connection does not.
			c, s := tcpPair(t)
			defer s.Close()
			go func() {
				for _, w := range tt.writes {
					c.Write([]byte(w))
				}
				if tt.close {
					c.Close()
				}
			}()
			defer c.Close()
			b, r, err := Peek(s, 200*time.Millisecond, make([]byte, 0, 64))
			if err != nil {
				t.Fatal(err)
			}
			if r.Protocol != tt.want {
				t.Errorf("got %v (%q), want %v", r.Protocol, b, tt.want)
			}
		})
	}
}

// tcpPair is a connected pair of loopback TCP connections.
func tcpPair(t *testing.T) (client, server net.Conn) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	client, err = net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, err = l.Accept()
	if err != nil {
		client.Close()
		t.Fatal(err)
	}
	return client, server
}

func TestPeekLongRequestLine(t *testing.T) {
	c, s := net.Pipe()
	defer s.Close()
	defer c.Close()
	long := "GET /" + string(make([]byte, 0))
	for len(long) < MaxPeek+100 {
		long += "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	}
	go c.Write([]byte(long))
	b, r, err := Peek(s, 2*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Protocol != HTTP1 || len(b) != MaxPeek {
		t.Errorf("got %v after %d bytes, want http/1 after %d", r.Protocol, len(b), MaxPeek)
	}
}
