package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"
)

// startTCPBackend runs serve for each connection of a loopback listener.
func startTCPBackend(t *testing.T, serve func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(20 * time.Second))
				serve(c)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln.Addr().String()
}

// countThenReply reads until the client half-closes, then answers with the
// byte count: it only works if half-close is carried end to end.
func countThenReply(c net.Conn) {
	n, _ := io.Copy(io.Discard, c)
	fmt.Fprintf(c, "got %d bytes", n)
}

func TestOpaqueTCPHalfClose(t *testing.T) {
	app := startTCPBackend(t, countThenReply)
	p := startProxy(t, Config{InboundTarget: app, DetectTimeout: 200 * time.Millisecond})
	for _, payload := range []string{
		"\x00\x01binary protocol bytes",             // detected opaque at once
		strings.Repeat("not http at all ", 100_000), // large
		"", // nothing at all: the client only half-closes
	} {
		c, err := net.Dial("tcp", p.InboundAddr())
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		go func() {
			io.WriteString(c, payload)
			c.(*net.TCPConn).CloseWrite()
		}()
		b, err := io.ReadAll(c)
		c.Close()
		if want := "got " + strconv.Itoa(len(payload)) + " bytes"; string(b) != want || err != nil {
			t.Errorf("reply %q (%v), want %q", b, err, want)
		}
	}
	wantMetric(t, p, 3, "tcp_open_total", `direction="inbound"`, `peer="src"`)
	wantMetric(t, p, 3, "tcp_close_total", `direction="inbound"`, `peer="src"`)
	wantMetric(t, p, float64(1600000+len("\x00\x01binary protocol bytes")), "tcp_read_bytes_total", `direction="inbound"`, `peer="src"`)
}

func TestServerSpeaksFirst(t *testing.T) {
	banner := func(c net.Conn) {
		io.WriteString(c, "220 smtp ready\r\n")
		buf := make([]byte, 64)
		n, _ := c.Read(buf)
		c.Write(buf[:n])
	}
	app := startTCPBackend(t, banner)
	_, portStr, _ := net.SplitHostPort(app)
	port, _ := strconv.Atoi(portStr)

	tests := []struct {
		name   string
		cfg    Config
		within time.Duration
	}{
		// The target's port is opaque: no detection, the banner comes at once.
		{"opaque port", Config{InboundTarget: app, OpaquePorts: []uint16{uint16(port)}, DetectTimeout: time.Minute}, 5 * time.Second},
		// Not configured: detection times out, then the connection is opaque.
		{"detection timeout", Config{InboundTarget: app, DetectTimeout: 300 * time.Millisecond}, 5 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := startProxy(t, tt.cfg)
			c, err := net.Dial("tcp", p.InboundAddr())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(tt.within))
			buf := make([]byte, 64)
			n, err := c.Read(buf)
			if err != nil || string(buf[:n]) != "220 smtp ready\r\n" {
				t.Fatalf("banner %q, %v", buf[:n], err)
			}
			io.WriteString(c, "EHLO x")
			n, err = c.Read(buf)
			if err != nil || string(buf[:n]) != "EHLO x" {
				t.Errorf("echo %q, %v", buf[:n], err)
			}
		})
	}
}

func TestTLSPassthrough(t *testing.T) {
	app := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "secret app says hi")
	}))
	app.StartTLS()
	defer app.Close()
	p := startProxy(t, Config{InboundTarget: app.Listener.Addr().String()})

	// The client verifies the application's own certificate through the
	// proxy: the proxy does not terminate TLS it is not meant to.
	tr := app.Client().Transport.(*http.Transport).Clone()
	tr.TLSClientConfig.ServerName = "example.com" // in the test certificate
	tr.Proxy = nil
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("https://" + p.InboundAddr() + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "secret app says hi" || resp.TLS == nil {
		t.Errorf("got %q (tls %v)", b, resp.TLS != nil)
	}
	if len(resp.TLS.PeerCertificates) == 0 || !resp.TLS.PeerCertificates[0].Equal(app.Certificate()) {
		t.Errorf("certificate is not the application's")
	}
	wantMetric(t, p, 1, "tcp_open_total", `direction="inbound"`, `peer="src"`, `tls="false"`)
	wantMetric(t, p, 0, "request_total", `direction="inbound"`)
}
