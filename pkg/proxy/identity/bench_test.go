package identity

import (
	"crypto/tls"
	"net"
	"testing"
	"time"
)

// BenchmarkMutualTLSHandshake measures one proxy-to-proxy mTLS handshake
// over a loopback connection, with a fresh client config (full handshake)
// and with the providers' cached config (session resumption).
func BenchmarkMutualTLSHandshake(b *testing.B) {
	c := startController(b, time.Hour)
	web := startProvider(b, c, webID, "web-token", nil)
	books := startProvider(b, c, booksID, "books-token", nil)
	waitReady(b, web)
	waitReady(b, books)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer lis.Close()
	go func() {
		for {
			conn, err := lis.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				tc := tls.Server(conn, books.ServerConfig())
				buf := make([]byte, 1)
				if tc.Handshake() == nil {
					tc.Read(buf)
					tc.Write(buf)
				}
			}()
		}
	}()
	run := func(b *testing.B, cfg func() *tls.Config, resumed bool) {
		for i := 0; b.Loop(); i++ {
			conn, err := net.Dial("tcp", lis.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			tc := tls.Client(conn, cfg())
			buf := []byte{1}
			if _, err := tc.Write(buf); err != nil {
				b.Fatal(err)
			}
			if _, err := tc.Read(buf); err != nil {
				b.Fatal(err)
			}
			if i > 0 && tc.ConnectionState().DidResume != resumed {
				b.Fatalf("DidResume = %v, want %v", !resumed, resumed)
			}
			conn.Close()
		}
	}
	b.Run("full", func(b *testing.B) {
		run(b, func() *tls.Config {
			cfg := web.ClientConfig(booksID).Clone()
			cfg.ClientSessionCache = nil
			return cfg
		}, false)
	})
	b.Run("resumed", func(b *testing.B) {
		run(b, func() *tls.Config { return web.ClientConfig(booksID) }, true)
	})
}
