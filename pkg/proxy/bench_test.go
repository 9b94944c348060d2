package proxy

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkHTTP1Inbound measures one proxied keep-alive HTTP/1.1 request
// (client and backend in the same process, so it is an upper bound).
func BenchmarkHTTP1Inbound(b *testing.B) {
	app := startHTTPBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	p := startProxy(b, Config{InboundTarget: app})
	c := newClient(b)
	url := "http://" + p.InboundAddr() + "/"
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkDirect is the same request without the proxy, for comparison.
func BenchmarkDirect(b *testing.B) {
	app := startHTTPBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	c := newClient(b)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get("http://" + app + "/")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}
