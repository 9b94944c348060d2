package tap

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/proxy"
)

// BenchmarkProxyTap measures a real proxy's request latency (HTTP/1.1,
// keep-alive, through the inbound side) without tap and with a tap client
// that matches every request and reads as fast as it can, over the real
// Observe stream. It reports p50 and p99 in microseconds:
//
//	go test -run XXX -bench ProxyTap -benchtime 20000x ./pkg/proxy/tap
func BenchmarkProxyTap(b *testing.B) {
	for _, tapped := range []bool{false, true} {
		name := "off"
		if tapped {
			name = "tapped"
		}
		b.Run(name, func(b *testing.B) {
			backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "ok")
			}))
			defer backend.Close()
			ts := NewServer(Config{})
			p, err := proxy.New(proxy.Config{InboundAddr: "127.0.0.1:0", InboundTarget: strings.TrimPrefix(backend.URL, "http://"), Observer: ts})
			if err != nil {
				b.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			go func() { done <- p.Run(ctx) }()
			defer func() { cancel(); <-done }()
			if tapped {
				stop := startTapReader(b, ts)
				defer stop()
			}
			url := "http://" + p.InboundAddr() + "/bench"
			client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 1}}
			lat := make([]time.Duration, 0, b.N)
			for b.Loop() {
				start := time.Now()
				resp, err := client.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				lat = append(lat, time.Since(start))
			}
			slices.Sort(lat)
			if len(lat) > 0 {
				b.ReportMetric(float64(lat[len(lat)/2].Microseconds()), "p50-µs")
				b.ReportMetric(float64(lat[len(lat)*99/100].Microseconds()), "p99-µs")
			}
			b.ReportMetric(float64(ts.Dropped()), "dropped")
		})
	}
}

// startTapReader serves ts on h2c and reads an unfiltered Observe stream.
func startTapReader(b *testing.B, ts *Server) func() {
	hs := httptest.NewUnstartedServer(ts.Handler())
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	cc, err := grpc.NewClient(hs.Listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	st, err := tapv1.NewTapClient(cc).Observe(ctx, &tapv1.ObserveRequest{})
	if err != nil {
		b.Fatal(err)
	}
	read := make(chan struct{})
	go func() {
		defer close(read)
		for {
			if _, err := st.Recv(); err != nil {
				return
			}
		}
	}()
	for ts.Subscribers() == 0 {
		time.Sleep(time.Millisecond)
	}
	return func() { cancel(); <-read; cc.Close(); hs.Close() }
}
