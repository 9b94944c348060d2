package stats

import (
	"context"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
)

func TestQuantile(t *testing.T) {
	b := map[float64]float64{1: 50, 2: 90, 5: 99, 10: 100, math.Inf(1): 100}
	for q, want := range map[float64]float64{0.5: 1, 0.9: 2, 0.95: 2 + 3*5.0/9, 0.99: 5, 1: 10} {
		if got := quantile(q, b); math.Abs(got-want) > 1e-9 {
			t.Errorf("quantile(%v) = %v, want %v", q, got, want)
		}
	}
	if got := quantile(0.99, map[float64]float64{10: 0, math.Inf(1): 4}); got != 10 {
		t.Errorf("all in +Inf: %v, want 10", got)
	}
}

// fakeProxy serves a /metrics page that the test rewrites between scrapes.
type fakeProxy struct {
	mu   sync.Mutex
	page string
}

func (f *fakeProxy) set(format string, a ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.page = fmt.Sprintf(format, a...)
}

func (f *fakeProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r.URL.Path != "/metrics" {
		http.NotFound(w, r)
		return
	}
	fmt.Fprint(w, f.page)
}

const webPage = `# TYPE response_total counter
response_total{direction="inbound",authority="web.demo.svc.cluster.local:80",tls="false",classification="success",status_code="200"} %[1]d
response_total{direction="inbound",authority="web.demo.svc.cluster.local:80",tls="false",classification="failure",status_code="500"} %[2]d
response_total{direction="outbound",authority="books.demo.svc.cluster.local:7001",tls="true",server_id="spiffe://cluster.local/ns/demo/sa/books",dst_namespace="demo",dst_deployment="books",dst_pod="books-0",dst_service="books",classification="success",grpc_status="0"} %[1]d
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:80",le="1"} %[3]d
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:80",le="10"} %[4]d
response_latency_ms_bucket{direction="inbound",authority="web.demo.svc.cluster.local:80",le="+Inf"} %[4]d
# TYPE tcp_open_total counter
tcp_open_total{direction="outbound",tls="true",server_id="spiffe://cluster.local/ns/demo/sa/books",dst_namespace="demo",dst_deployment="books"} 1
# TYPE tcp_open_connections gauge
tcp_open_connections{direction="inbound",tls="false"} 3
`

func TestServerScrapesAndAnswers(t *testing.T) {
	web, books := &fakeProxy{}, &fakeProxy{}
	webSrv, booksSrv := httptest.NewServer(web), httptest.NewServer(books)
	defer webSrv.Close()
	defer booksSrv.Close()
	addr := func(s *httptest.Server) string { return strings.TrimPrefix(s.URL, "http://") }
	pods := []Pod{
		{Namespace: "demo", Name: "web-0", AdminAddr: addr(webSrv), Identity: "spiffe://cluster.local/ns/demo/sa/web",
			Labels: map[string]string{"deployment": "web", "service": "web"}, Running: true},
		{Namespace: "demo", Name: "books-0", AdminAddr: addr(booksSrv), Labels: map[string]string{"deployment": "books"}, Running: true},
		{Namespace: "demo", Name: "load-0", Labels: map[string]string{"deployment": "load"}, Running: true},
	}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	srv := NewServer(Config{
		Pods: PodsFunc(func(context.Context) ([]Pod, error) { return pods, nil }),
		Now:  func() time.Time { return now },
	})
	ctx := context.Background()
	books.set("# TYPE response_total counter\n")
	web.set(webPage, 100, 0, 50, 100)
	srv.ScrapeOnce(ctx)
	now = now.Add(10 * time.Second)
	// 90 successes, 10 failures in 10 s; 60 of 100 under 1 ms.
	web.set(webPage, 190, 10, 110, 200)
	srv.ScrapeOnce(ctx)

	resp, err := srv.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy"}})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]*statsv1.StatRow{}
	for _, r := range resp.Rows {
		got[r.Resource.Name] = r
	}
	w := got["web"]
	if w == nil || len(resp.Rows) != 3 {
		t.Fatalf("rows = %v", resp.Rows)
	}
	if w.SuccessCount != 90 || w.FailureCount != 10 || w.Rps != 10 || w.MeshedPods != 1 || w.TcpOpenConnections != 3 {
		t.Errorf("web row = %v", w)
	}
	if !(w.LatencyMsP50 > 0 && w.LatencyMsP50 <= w.LatencyMsP95 && w.LatencyMsP95 <= w.LatencyMsP99) {
		t.Errorf("latencies not ordered: %v %v %v", w.LatencyMsP50, w.LatencyMsP95, w.LatencyMsP99)
	}
	if w.LatencyMsP50 > 1 || w.LatencyMsP99 <= 1 {
		t.Errorf("p50 %v should be under 1ms, p99 %v above", w.LatencyMsP50, w.LatencyMsP99)
	}
	if l := got["load"]; l.MeshedPods != 0 || l.RunningPods != 1 || l.Rps != 0 {
		t.Errorf("load row = %v", l)
	}

	// --to: web's outbound traffic to books.
	resp, err = srv.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"},
		To: &statsv1.Resource{Type: "deploy", Name: "books"}})
	if err != nil || len(resp.Rows) != 1 || resp.Rows[0].SuccessCount != 90 || resp.Rows[0].FailureCount != 0 {
		t.Errorf("stat --to: %v %v", resp, err)
	}
	// --from: traffic into books from web, seen by web.
	resp, err = srv.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy"},
		From: &statsv1.Resource{Type: "deploy", Name: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range resp.Rows {
		if r.Resource.Name == "books" && r.SuccessCount != 90 {
			t.Errorf("stat --from books row: %v", r)
		}
		if r.Resource.Name == "web" && r.SuccessCount != 0 {
			t.Errorf("stat --from counted web's inbound: %v", r)
		}
	}

	edges, err := srv.Edges(ctx, &statsv1.EdgesRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deployment"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(edges.Edges) != 1 {
		t.Fatalf("edges = %v", edges.Edges)
	}
	e := edges.Edges[0]
	if e.Src.Name != "web" || e.Dst.Name != "books" || !e.Secured || e.ServerId != "spiffe://cluster.local/ns/demo/sa/books" ||
		e.ClientId != "spiffe://cluster.local/ns/demo/sa/web" {
		t.Errorf("edge = %v", e)
	}

	// Nothing happened in the next 70 s: a 1m window has no traffic.
	now = now.Add(70 * time.Second)
	resp, _ = srv.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"}})
	if r := resp.Rows[0]; r.SuccessCount != 0 || r.Rps != 0 {
		t.Errorf("old traffic inside the window: %v", r)
	}
}

func TestServerRejectsBadQueries(t *testing.T) {
	srv := NewServer(Config{Pods: PodsFunc(func(context.Context) ([]Pod, error) { return nil, nil })})
	for name, req := range map[string]*statsv1.StatRequest{
		"unknown type": {Selector: &statsv1.Resource{Type: "cronjob"}},
		"no selector":  {},
		"tiny window":  {Selector: &statsv1.Resource{Type: "deploy"}, Window: durationpb.New(time.Second)},
		"both":         {Selector: &statsv1.Resource{Type: "deploy"}, From: &statsv1.Resource{Type: "deploy"}, To: &statsv1.Resource{Type: "deploy"}},
	} {
		_, err := srv.Stat(context.Background(), req)
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: err = %v, want InvalidArgument", name, err)
		}
	}
}

func TestStoreCounterReset(t *testing.T) {
	s := NewStore(10*time.Second, time.Hour)
	p := Pod{Namespace: "n", Name: "p", AdminAddr: "x", Labels: map[string]string{"deployment": "d"}}
	t0 := time.Unix(0, 0)
	s.SetPods([]Pod{p}, t0)
	page := func(v int) []Sample {
		samples, err := ParseMetrics(strings.NewReader(fmt.Sprintf("# TYPE response_total counter\nresponse_total{direction=\"inbound\",classification=\"success\"} %d\n", v)))
		if err != nil {
			t.Fatal(err)
		}
		return samples
	}
	s.Ingest(p, t0, page(100))
	s.Ingest(p, t0.Add(10*time.Second), page(150))
	s.Ingest(p, t0.Add(20*time.Second), page(20)) // the proxy restarted
	rows := s.Stat(t0.Add(20*time.Second), StatQuery{Selector: Ref{Namespace: "n", Type: TypeDeployment}, Window: time.Minute})
	if len(rows) != 1 || rows[0].Successes != 70 {
		t.Errorf("rows = %+v, want 70 successes (50 + 20 after reset)", rows)
	}
}

// A new proxy is scraped again soon, not after a whole interval, so its
// rates show up quickly — even when it was not up yet at the first scrape.
func TestRunRescrapesNewPodsSoon(t *testing.T) {
	web := &fakeProxy{}
	web.set(webPage, 100, 0, 50, 100)
	srv := httptest.NewUnstartedServer(web)
	defer srv.Close()
	pods := []Pod{{Namespace: "demo", Name: "web-0", AdminAddr: srv.Listener.Addr().String(), Labels: map[string]string{"deployment": "web"}}}
	time.AfterFunc(500*time.Millisecond, srv.Start) // the proxy comes up after the first scrape
	s := NewServer(Config{Pods: PodsFunc(func(context.Context) ([]Pod, error) { return pods, nil }), Interval: time.Hour})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	defer func() { cancel(); <-done }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := s.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"}})
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.Rows) == 1 && resp.Rows[0].Window.AsDuration() > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no second scrape within 20s with a 1h interval: %v", resp.Rows)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// authzPage is a proxy's page under an inbound policy, as the proxy writes
// its authorization series: admitted requests by authorization, refused
// ones by server, and TCP decisions (connections, not requests: counted
// apart).
const authzPage = `# TYPE response_total counter
response_total{direction="inbound",authority="web.demo.svc.cluster.local:80",tls="true",classification="success",status_code="200"} %[1]d
response_total{direction="inbound",authority="web.demo.svc.cluster.local:80",tls="false",classification="success",status_code="403"} %[2]d
# HELP inbound_http_authz_allow_total Inbound HTTP requests an authorization admitted.
# TYPE inbound_http_authz_allow_total counter
inbound_http_authz_allow_total{target_addr="10.0.0.1:80",tls="true",client_id="spiffe://cluster.local/ns/demo/sa/traffic",srv_group="policy.conduit.io",srv_kind="server",srv_name="web-http",route_group="",route_kind="default",route_name="default",authz_group="policy.conduit.io",authz_kind="authorizationpolicy",authz_name="web-get"} %[1]d
inbound_http_authz_allow_total{target_addr="10.0.0.1:80",tls="false",srv_group="",srv_kind="default",srv_name="all-unauthenticated",route_group="",route_kind="probe",route_name="probe",authz_group="",authz_kind="default",authz_name="probe"} %[3]d
# HELP inbound_http_authz_deny_total Inbound HTTP requests denied by the port's policy.
# TYPE inbound_http_authz_deny_total counter
inbound_http_authz_deny_total{target_addr="10.0.0.1:80",tls="false",srv_group="policy.conduit.io",srv_kind="server",srv_name="web-http",route_group="",route_kind="default",route_name="default"} %[2]d
# TYPE inbound_tcp_authz_allow_total counter
inbound_tcp_authz_allow_total{target_addr="10.0.0.1:5432",tls="true",client_id="spiffe://cluster.local/ns/demo/sa/traffic",srv_group="policy.conduit.io",srv_kind="server",srv_name="db",authz_group="policy.conduit.io",authz_kind="authorizationpolicy",authz_name="db"} %[3]d
# TYPE inbound_tcp_authz_deny_total counter
inbound_tcp_authz_deny_total{target_addr="10.0.0.1:5432",tls="false",srv_group="policy.conduit.io",srv_kind="server",srv_name="db",} %[2]d
`

// TestStatAuthz: allowed and denied requests per workload over the
// window, from the proxies' inbound_http_authz_*_total series, and
// connections from inbound_tcp_authz_*_total.
func TestStatAuthz(t *testing.T) {
	s := NewStore(10*time.Second, time.Hour)
	web0 := Pod{Namespace: "demo", Name: "web-0", AdminAddr: "x", Running: true, Labels: map[string]string{"deployment": "web", "service": "web"}}
	web1 := Pod{Namespace: "demo", Name: "web-1", AdminAddr: "x", Running: true, Labels: map[string]string{"deployment": "web", "service": "web"}}
	books := Pod{Namespace: "demo", Name: "books-0", AdminAddr: "x", Running: true, Labels: map[string]string{"deployment": "books"}}
	quiet := Pod{Namespace: "demo", Name: "quiet-0", AdminAddr: "x", Running: true, Labels: map[string]string{"deployment": "quiet"}}
	t0 := time.Unix(0, 0)
	s.SetPods([]Pod{web0, web1, books, quiet}, t0)
	page := func(format string, a ...any) []Sample {
		samples, err := ParseMetrics(strings.NewReader(fmt.Sprintf(format, a...)))
		if err != nil {
			t.Fatal(err)
		}
		return samples
	}
	s.Ingest(web0, t0, page(authzPage, 100, 5, 10))
	s.Ingest(web1, t0, page(authzPage, 0, 0, 0))
	s.Ingest(books, t0, page(webPage, 100, 0, 50, 100))
	s.Ingest(quiet, t0, page(authzPage, 7, 7, 7))
	at := t0.Add(10 * time.Second)
	s.Ingest(web0, at, page(authzPage, 190, 8, 12)) // 90 + 2 allowed, 3 denied
	s.Ingest(web1, at, page(authzPage, 10, 1, 0))   // 10 allowed, 1 denied
	s.Ingest(books, at, page(webPage, 200, 0, 60, 200))
	s.Ingest(quiet, at, page(authzPage, 7, 7, 7)) // a policy, no requests

	byName := func(rows []StatResult) map[string]StatResult {
		m := map[string]StatResult{}
		for _, r := range rows {
			m[r.Name] = r
		}
		return m
	}
	got := byName(s.Stat(at, StatQuery{Selector: Ref{Namespace: "demo", Type: TypeDeployment}, Window: time.Minute}))
	for name, want := range map[string][5]any{
		"web":   {102.0, 4.0, 2.0, 4.0, true}, // TCP: 2 + 0 allowed, 3 + 1 denied
		"books": {0.0, 0.0, 0.0, 0.0, false},
		"quiet": {0.0, 0.0, 0.0, 0.0, true},
	} {
		r := got[name]
		if r.Allowed != want[0] || r.Denied != want[1] || r.TCPAllowed != want[2] || r.TCPDenied != want[3] || r.AuthzApplies != want[4] {
			t.Errorf("%s: allowed %v denied %v, TCP allowed %v denied %v, applies %v; want %v",
				name, r.Allowed, r.Denied, r.TCPAllowed, r.TCPDenied, r.AuthzApplies, want)
		}
	}
	if w := got["web"]; w.Successes != 104 { // 90 + 10 admitted, 3 + 1 refused (403 is a success)
		t.Errorf("web: %v successes, want 104: the authz series are not responses", w.Successes)
	}
	pods := byName(s.Stat(at, StatQuery{Selector: Ref{Namespace: "demo", Type: TypePod}, Window: time.Minute}))
	if p := pods["web-1"]; p.Allowed != 10 || p.Denied != 1 || !p.AuthzApplies {
		t.Errorf("pod web-1: %+v", p)
	}
	if ns := s.Stat(at, StatQuery{Selector: Ref{Type: TypeNamespace, Name: "demo"}, Window: time.Minute}); len(ns) != 1 || ns[0].Allowed != 102 || ns[0].Denied != 4 {
		t.Errorf("namespace rows: %+v", ns)
	}
	// A window that ends before the traffic: the policy still applies.
	if r := byName(s.Stat(at.Add(2*time.Minute), StatQuery{Selector: Ref{Namespace: "demo", Type: TypeDeployment}, Window: time.Minute}))["web"]; r.Allowed != 0 || r.Denied != 0 || !r.AuthzApplies {
		t.Errorf("web, a minute later: %+v", r)
	}
	// Decisions are the resource's own inbound traffic: not in --to rows, nor per authority.
	for _, q := range []StatQuery{
		{Selector: Ref{Namespace: "demo", Type: TypeDeployment, Name: "web"}, To: &Ref{Namespace: "demo", Type: TypeDeployment, Name: "books"}, Window: time.Minute},
		{Selector: Ref{Namespace: "demo", Type: TypeAuthority}, Window: time.Minute},
	} {
		for _, r := range s.Stat(at, q) {
			if r.Allowed != 0 || r.Denied != 0 || r.AuthzApplies {
				t.Errorf("%+v: row %+v has decisions", q, r)
			}
		}
	}
}

// TestServerStatAuthz: the decisions reach the API's rows.
func TestServerStatAuthz(t *testing.T) {
	web := &fakeProxy{}
	srv := httptest.NewServer(web)
	defer srv.Close()
	pods := []Pod{{Namespace: "demo", Name: "web-0", AdminAddr: strings.TrimPrefix(srv.URL, "http://"), Running: true, Labels: map[string]string{"deployment": "web"}}}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	s := NewServer(Config{Pods: PodsFunc(func(context.Context) ([]Pod, error) { return pods, nil }), Now: func() time.Time { return now }})
	ctx := context.Background()
	web.set(authzPage, 10, 1, 0)
	s.ScrapeOnce(ctx)
	now = now.Add(10 * time.Second)
	web.set(authzPage, 40, 3, 5)
	s.ScrapeOnce(ctx)
	resp, err := s.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rows) != 1 {
		t.Fatalf("rows = %v", resp.Rows)
	}
	if r := resp.Rows[0]; r.AuthzAllowedCount != 35 || r.AuthzDeniedCount != 2 || !r.AuthzApplies {
		t.Errorf("row = %v, want 35 allowed, 2 denied", r)
	}
}
