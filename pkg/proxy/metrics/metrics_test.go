package metrics

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestExposition(t *testing.T) {
	r := NewRegistry()
	in := r.Route(HTTPLabels{Direction: "inbound", Authority: "web:80", TargetAddr: "127.0.0.1:8080"})
	in.Request()
	in.Request()
	in.Response(200, "", Classify(200, "", false), 3*time.Millisecond)
	in.Response(503, "", Classify(503, "", false), 1500*time.Millisecond)
	out := r.Route(HTTPLabels{
		Direction: "outbound", Authority: `a"b\c` + "\n", TLS: true, ServerID: "spiffe://cluster.local/ns/x/sa/y",
		Dst: DstLabels(map[string]string{"namespace": "x", "deployment": "y", "pod-template-hash": "z"}),
	})
	out.Request()
	out.Response(200, "14", Classify(200, "14", false), 250*time.Microsecond)
	routed := r.Route(HTTPLabels{Direction: "outbound", Authority: "books.shop.svc.cluster.local:8080", TargetAddr: "10.0.0.7:8080",
		RouteKind: "httproute", RouteName: "books-canary"})
	routed.Request()
	routed.Response(200, "", Classify(200, "", false), 2*time.Millisecond)
	tcp := r.TCP(TCPLabels{Direction: "inbound", Peer: "src", TLS: true, ClientID: "spiffe://cluster.local/ns/a/sa/b"})
	tcp.Open()
	tcp.AddRead(10)
	tcp.AddWritten(20)
	tcp.Close(2*time.Second, true)
	tcp.Open()
	r.Error("outbound", "unknown_authority")
	r.Error("outbound", "unknown_authority")
	r.Panic("inbound")
	const web = "spiffe://cluster.local/ns/shop/sa/web"
	r.Authz(AuthzLabels{Allowed: true, TargetAddr: "127.0.0.1:8080", TLS: true, ClientID: web, SrvKind: "server", SrvName: "books-http",
		RouteKind: "httproute", RouteName: "books-get", AuthzKind: "authorizationpolicy", AuthzName: "web-may-read"})
	r.Authz(AuthzLabels{TargetAddr: "127.0.0.1:8080", SrvKind: "server", SrvName: "books-http", RouteKind: "httproute", RouteName: "books-get"})
	r.Authz(AuthzLabels{TCP: true, TargetAddr: "127.0.0.1:6379", SrvKind: "default", SrvName: "deny"})
	r.Authz(AuthzLabels{TCP: true, TargetAddr: "127.0.0.1:6379", SrvKind: "default", SrvName: "deny"})
	books := r.Await("books.shop.svc.cluster.local:8080")
	books.Start()
	books.Done(AwaitReady, 1200*time.Millisecond)
	books.Start()
	books.Done(AwaitNoEndpoints, 5*time.Second)
	books.Start() // still waiting
	r.Await("10.96.0.12:6379").Start()
	r.Await("10.96.0.12:6379").Done(AwaitCanceled, 40*time.Millisecond)

	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	golden := filepath.Join("testdata", "exposition.golden")
	if *update {
		if err := os.WriteFile(golden, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(buf.Bytes(), want) {
		t.Errorf("exposition differs from %s (run with -update):\n%s", golden, buf.String())
	}
}

func TestClassify(t *testing.T) {
	tests := []struct {
		status    int
		grpc      string
		streamErr bool
		want      Classification
	}{
		{200, "", false, Success},
		{404, "", false, Success},
		{500, "", false, Failure},
		{200, "0", false, Success},
		{200, "2", false, Failure},
		{503, "0", false, Success},
		{200, "", true, Failure},
		{0, "", false, Failure},
	}
	for _, tt := range tests {
		if got := Classify(tt.status, tt.grpc, tt.streamErr); got != tt.want {
			t.Errorf("Classify(%d, %q, %v) = %v, want %v", tt.status, tt.grpc, tt.streamErr, got, tt.want)
		}
	}
}

func TestConcurrentUse(t *testing.T) {
	r := NewRegistry()
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range 200 {
				rt := r.Route(HTTPLabels{Direction: "inbound", Authority: string(rune('a' + i%3))})
				rt.Request()
				rt.Response(200+j%2, "", Success, time.Millisecond)
				r.WriteTo(&bytes.Buffer{})
			}
		}()
	}
	wg.Wait()
	var total uint64
	for _, rt := range r.routeOrd {
		total += rt.requests.Load()
	}
	if total != 1600 {
		t.Errorf("requests = %d, want 1600", total)
	}
}

func BenchmarkRouteResponse(b *testing.B) {
	r := NewRegistry()
	l := HTTPLabels{Direction: "inbound", Authority: "web:80"}
	b.ReportAllocs()
	for b.Loop() {
		rt := r.Route(l)
		rt.Request()
		rt.Response(200, "", Success, time.Millisecond)
	}
}

func TestProcessMetrics(t *testing.T) {
	r := NewRegistry()
	r.Process = true
	var buf bytes.Buffer
	if _, err := r.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	want := []string{"process_start_time_seconds "}
	if _, err := os.Stat("/proc/self/stat"); err == nil {
		want = append(want, "process_resident_memory_bytes ", "process_cpu_seconds_total ", "process_open_fds ")
	}
	for _, w := range want {
		if !bytes.Contains(buf.Bytes(), []byte("\n"+w)) {
			t.Errorf("no %q in\n%s", w, buf.String())
		}
	}
}

func TestSeriesAreBounded(t *testing.T) {
	r := NewRegistry()
	for i := range MaxSeries + 500 {
		r.Route(HTTPLabels{Direction: "inbound", Authority: strconv.Itoa(i)}).Request()
		r.TCP(TCPLabels{Direction: "outbound", Peer: "dst", TargetAddr: strconv.Itoa(i)}).Open()
		r.Authz(AuthzLabels{Allowed: true, ClientID: strconv.Itoa(i), SrvKind: "default", SrvName: "all-authenticated"})
		r.Await(strconv.Itoa(i)).Start()
	}
	if n := len(r.awaits); n != MaxSeries+1 {
		t.Errorf("%d endpoint-wait series, want %d", n, MaxSeries+1)
	}
	if got := r.awaits[Overflow].waiting.Load(); got != 500 {
		t.Errorf("overflow endpoint-wait series has %d waiting, want 500", got)
	}
	if n := len(r.authz); n != MaxSeries+1 {
		t.Errorf("%d authz series, want %d", n, MaxSeries+1)
	}
	if n := len(r.routes); n != MaxSeries+1 {
		t.Errorf("%d route series, want %d", n, MaxSeries+1)
	}
	if n := len(r.tcp); n != MaxSeries+1 {
		t.Errorf("%d tcp series, want %d", n, MaxSeries+1)
	}
	if got := r.routes[HTTPLabels{Direction: "inbound", Authority: Overflow}].requests.Load(); got != 500 {
		t.Errorf("overflow series counted %d requests, want 500", got)
	}
}
