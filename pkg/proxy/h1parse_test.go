package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"strings"
	"testing"
)

func TestParseH1Head(t *testing.T) {
	tests := []struct {
		name    string
		head    string
		wantErr error
		odd     bool
		cl      int64
		hops    []string // names not forwarded
	}{
		{name: "simple", head: "GET / HTTP/1.1\r\nHost: a\r\n\r\n", cl: -1},
		{name: "content length", head: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n", cl: 12},
		{name: "same length twice", head: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n", wantErr: errBadLength},
		{name: "conflicting lengths", head: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", wantErr: errBadLength},
		{name: "negative length", head: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n", wantErr: errBadLength},
		{name: "length with sign", head: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\n", wantErr: errBadLength},
		{name: "length and chunked", head: "POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", wantErr: errBadLength},
		{name: "gzip transfer coding", head: "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", wantErr: errBadLength},
		{name: "obs-fold", head: "GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", wantErr: errBadHead},
		{name: "space before colon", head: "GET / HTTP/1.1\r\nHost: a\r\nX : b\r\n\r\n", wantErr: errBadHead},
		{name: "two hosts", head: "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", wantErr: errBadHead},
		{name: "no host", head: "GET / HTTP/1.1\r\n\r\n", odd: true, cl: -1},
		{name: "http/1.0", head: "GET / HTTP/1.0\r\n\r\n", odd: true, cl: -1},
		{name: "http/2 line", head: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", wantErr: errBadHead},
		{name: "http/1.2", head: "GET / HTTP/1.2\r\nHost: a\r\n\r\n", wantErr: errVersion},
		{name: "http/1.10", head: "GET / HTTP/1.10\r\nHost: a\r\n\r\n", wantErr: errVersion},
		{name: "absolute form", head: "GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", odd: true, cl: -1},
		{name: "absolute form, HTTPS, no path", head: "GET HTTPS://a HTTP/1.1\r\nHost: a\r\n\r\n", odd: true, cl: -1},
		{name: "absolute form without authority", head: "GET http:///a HTTP/1.1\r\nHost: a\r\n\r\n", wantErr: errBadTarget},
		{name: "other scheme", head: "GET a: HTTP/1.1\r\nHost: a\r\n\r\n", wantErr: errBadTarget},
		{name: "relative target", head: "GET a/b HTTP/1.1\r\nHost: a\r\n\r\n", wantErr: errBadTarget},
		{name: "asterisk", head: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n", odd: true, cl: -1},
		{name: "asterisk for GET", head: "GET * HTTP/1.1\r\nHost: a\r\n\r\n", wantErr: errBadTarget},
		{name: "authority form", head: "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n", odd: true, cl: -1},
		{name: "upgrade", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", odd: true, cl: -1, hops: []string{"Connection", "Upgrade"}},
		{name: "expect", head: "POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\n", odd: true, cl: 1},
		{name: "hop-by-hop and connection tokens", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-Private\r\nX-Private: s\r\nKeep-Alive: 5\r\nTE: trailers\r\nX-Kept: k\r\n\r\n", cl: -1,
			hops: []string{"Connection", "X-Private", "Keep-Alive", "TE"}},
		{name: "nul in value", head: "GET / HTTP/1.1\r\nHost: a\r\nX: a\x00b\r\n\r\n", wantErr: errBadHead},
		{name: "bad method", head: "G(T / HTTP/1.1\r\nHost: a\r\n\r\n", wantErr: errBadHead},
		{name: "leading zeros", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 007\r\n\r\n", cl: 7},
		{name: "19 digits", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1234567890123456789\r\n\r\n", wantErr: errBadLength},
		{name: "length in OWS", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length:\t5 \r\n\r\n", cl: 5},
		{name: "two numbers", head: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5 5\r\n\r\n", wantErr: errBadLength},
		{name: "Chunked", head: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n", odd: true, cl: -1, hops: []string{"Transfer-Encoding"}},
		{name: "Connection: TE", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, TE\r\nTE: trailers\r\n\r\n", cl: -1, hops: []string{"Connection", "TE"}},
		{name: "Connection names Content-Length", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: CONTENT-LENGTH\r\n\r\n", wantErr: errBadConnection},
		{name: "Connection option not a token", head: "GET / HTTP/1.1\r\nHost: a\r\nConnection: a b\r\n\r\n", wantErr: errBadHead},
		{name: "space in host", head: "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", wantErr: errBadHead},
		{name: "DEL in value", head: "GET / HTTP/1.1\r\nHost: a\r\nX: \x7f\r\n\r\n", wantErr: errBadHead},
		{name: "bare LF", head: "GET / HTTP/1.1\nHost: a\n\n", wantErr: errBadHead},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var h h1Head
			err := parseH1Head([]byte(tt.head), true, &h)
			if tt.wantErr != nil || err != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if h.odd != tt.odd || h.contentLength != tt.cl {
				t.Errorf("odd %v cl %d, want %v %d", h.odd, h.contentLength, tt.odd, tt.cl)
			}
			var hops []string
			for _, hdr := range h.headers {
				if hdr.hop {
					hops = append(hops, string(hdr.name))
				}
			}
			if strings.Join(hops, ",") != strings.Join(tt.hops, ",") {
				t.Errorf("hop-by-hop %q, want %q", hops, tt.hops)
			}
		})
	}
}

func TestParseH1Response(t *testing.T) {
	tests := []struct {
		head    string
		status  int
		close   bool
		err     bool
		cl      int64 // checked when status is set
		chunked bool
	}{
		{"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n", 200, false, false, 2, false},
		{"HTTP/1.1 204\r\n\r\n", 204, false, false, -1, false},
		{"HTTP/1.0 200 OK\r\n\r\n", 200, true, false, -1, false},
		{"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", 200, true, false, -1, false},
		{"HTTP/1.1 99 Low\r\n\r\n", 0, false, true, 0, false},
		{"HTTP/1.1 2000 Long\r\n\r\n", 0, false, true, 0, false},
		{"HTTQ/1.1 200 OK\r\n\r\n", 0, false, true, 0, false},
		{"HTTP/1.2 200 OK\r\n\r\n", 0, false, true, 0, false},
		{"HTTP/1.1 200 OK\x01\r\n\r\n", 0, false, true, 0, false},
		// Transfer-Encoding frames the response, which closes the
		// connection after it when Content-Length disagreed or chunked is
		// not the final coding (read until the close).
		{"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 200, true, false, -1, true},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n", 200, true, false, -1, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 200, false, false, -1, true},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", 0, false, true, 0, false},
		{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n", 0, false, true, 0, false},
		{"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 0, false, true, 0, false},
	}
	for _, tt := range tests {
		var h h1Head
		err := parseH1Head([]byte(tt.head), false, &h)
		if tt.err {
			if err == nil {
				t.Errorf("%q: accepted", tt.head)
			}
			continue
		}
		if err != nil || h.status != tt.status || h.close != tt.close || h.contentLength != tt.cl || h.chunked != tt.chunked {
			t.Errorf("%q: status %d close %v length %d chunked %v err %v", tt.head, h.status, h.close, h.contentLength, h.chunked, err)
		}
	}
}

func TestCopyChunked(t *testing.T) {
	tests := []struct {
		in      string
		wantErr bool
		data    int64 // body bytes, without the framing
	}{
		{"5\r\nhello\r\n0\r\n\r\n", false, 5},
		{"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n", false, 11},
		{"A\r\n0123456789\r\n0\r\n\r\n", false, 10},
		{"zz\r\nhello\r\n", true, 0},
		{"5\r\nhelloXX0\r\n\r\n", true, 5},
		{"5\r\nhel", true, 3},
		{"-1\r\n", true, 0},
		{"ffffffffffffffffff\r\n", true, 0},
		{"5\x01\r\nhello\r\n0\r\n\r\n", true, 0},
	}
	for _, tt := range tests {
		var out bytes.Buffer
		w := bufio.NewWriter(&out)
		n, err := copyChunked(w, bufio.NewReader(strings.NewReader(tt.in)), make([]byte, 4))
		w.Flush()
		if (err != nil) != tt.wantErr {
			t.Errorf("%q: err %v, want error %v", tt.in, err, tt.wantErr)
		}
		if n != tt.data {
			t.Errorf("%q: %d data bytes counted, want %d", tt.in, n, tt.data)
		}
		if err == nil && out.String() != tt.in {
			t.Errorf("%q copied as %q", tt.in, out.String())
		}
	}
}

// FuzzParseH1Head: any bytes parse without panicking, and an accepted head
// never has both framings (the request-smuggling case).
func FuzzParseH1Head(f *testing.F) {
	f.Add([]byte("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), true)
	f.Add([]byte("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"), true)
	f.Add([]byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\nConnection: x\r\nX: y\r\n\r\n"), false)
	f.Fuzz(func(t *testing.T, b []byte, isRequest bool) {
		var h h1Head
		if err := parseH1Head(b, isRequest, &h); err != nil {
			return
		}
		if h.chunked && h.contentLength >= 0 {
			t.Fatalf("accepted both Content-Length and chunked: %q", b)
		}
		if isRequest && (len(h.method) == 0 || len(h.target) == 0) {
			t.Fatalf("accepted a request without method or target: %q", b)
		}
	})
}

// BenchmarkParseH1Head parses a typical request head and response head
// (the fast path does both for every request).
func BenchmarkParseH1Head(b *testing.B) {
	req := []byte("POST /api/v1/items?id=42 HTTP/1.1\r\nHost: app.default.svc.cluster.local:8080\r\nUser-Agent: bench/1.0\r\n" +
		"Accept: */*\r\nContent-Type: application/json\r\nContent-Length: 27\r\nConnection: keep-alive\r\nX-Request-Id: 0f9e8d7c\r\n\r\n")
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nDate: Fri, 04 Dec 2026 03:00:00 GMT\r\n\r\n")
	var h h1Head
	b.ReportAllocs()
	for b.Loop() {
		if parseH1Head(req, true, &h) != nil || parseH1Head(resp, false, &h) != nil {
			b.Fatal("not parsed")
		}
	}
}
