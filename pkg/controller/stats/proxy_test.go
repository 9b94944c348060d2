package stats

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
)

// TestScrapesARealProxy reads the metrics of a real proxy carrying traffic.
func TestScrapesARealProxy(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/fail") {
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		io.WriteString(w, "ok")
	}))
	defer backend.Close()
	p, err := proxy.New(proxy.Config{InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		InboundTarget: strings.TrimPrefix(backend.URL, "http://")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	pods := []Pod{{Namespace: "demo", Name: "web-0", AdminAddr: p.AdminAddr(), Labels: map[string]string{"deployment": "web"}, Running: true}}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	srv := NewServer(Config{Pods: PodsFunc(func(context.Context) ([]Pod, error) { return pods, nil }), Now: func() time.Time { return now }})

	get := func(path string) {
		resp, err := http.Get("http://" + p.InboundAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	get("/warm-up") // series exist before the first scrape
	// ...and hold its response: counted after the scrape, it would fall in
	// the window measured below.
	waitCounted(t, "http://"+p.AdminAddr()+"/metrics", 1)
	srv.ScrapeOnce(ctx)
	for i := 0; i < 18; i++ {
		get("/ok")
	}
	get("/fail")
	get("/fail")
	// The proxy counts a response just after the client has it: wait for
	// all 21 (the warm-up's too) before scraping.
	waitCounted(t, "http://"+p.AdminAddr()+"/metrics", 21)
	now = now.Add(10 * time.Second)
	srv.ScrapeOnce(ctx)

	resp, err := srv.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rows) != 1 {
		t.Fatalf("rows = %v", resp.Rows)
	}
	r := resp.Rows[0]
	if r.SuccessCount != 18 || r.FailureCount != 2 || r.Rps != 2 {
		t.Errorf("row = %v, want 18 successes, 2 failures, 2 rps", r)
	}
	if !(r.LatencyMsP50 > 0 && r.LatencyMsP50 <= r.LatencyMsP95 && r.LatencyMsP95 <= r.LatencyMsP99) {
		t.Errorf("latencies %v %v %v", r.LatencyMsP50, r.LatencyMsP95, r.LatencyMsP99)
	}
	auth, err := srv.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "authority"}})
	if err != nil || len(auth.Rows) != 1 || auth.Rows[0].SuccessCount != 18 {
		t.Errorf("authority rows = %v, %v", auth.GetRows(), err)
	}
}

// waitCounted waits until the proxy's inbound response_total series add up
// to want. Every page the proxy serves meanwhile must parse.
func waitCounted(t *testing.T, metricsURL string, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := 0.0
		if resp, err := http.Get(metricsURL); err == nil {
			samples, err := ParseMetrics(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatalf("parsing the proxy's /metrics: %v", err)
			}
			for _, s := range samples {
				if s.Name == "response_total" && s.Labels["direction"] == "inbound" {
					got += s.Value
				}
			}
		}
		if got >= float64(want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the proxy counted %v inbound responses after 5s, want %d", got, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestScrapesARealProxyAuthz counts a real proxy's policy decisions: under
// the deny default every request is refused.
func TestScrapesARealProxyAuthz(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer backend.Close()
	p, err := proxy.New(proxy.Config{InboundAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0",
		InboundTarget: strings.TrimPrefix(backend.URL, "http://"), Policy: authz.NewStore(authz.Pending("deny"))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	pods := []Pod{{Namespace: "demo", Name: "web-0", AdminAddr: p.AdminAddr(), Labels: map[string]string{"deployment": "web"}, Running: true}}
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	srv := NewServer(Config{Pods: PodsFunc(func(context.Context) ([]Pod, error) { return pods, nil }), Now: func() time.Time { return now }})
	get := func() {
		resp, err := http.Get("http://" + p.InboundAddr() + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden {
			t.Fatalf("status %d, want 403", resp.StatusCode)
		}
	}
	get() // series exist before the first scrape
	srv.ScrapeOnce(ctx)
	for range 4 {
		get()
	}
	waitCounted(t, "http://"+p.AdminAddr()+"/metrics", 5)
	now = now.Add(10 * time.Second)
	srv.ScrapeOnce(ctx)
	resp, err := srv.Stat(ctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rows) != 1 || resp.Rows[0].AuthzDeniedCount != 4 || resp.Rows[0].AuthzAllowedCount != 0 || !resp.Rows[0].AuthzApplies {
		t.Errorf("rows = %v, want 4 denied", resp.Rows)
	}
}
