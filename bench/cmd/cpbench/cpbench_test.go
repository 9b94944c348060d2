package main

import (
	"context"
	"io"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"
)

// TestShortRun runs every phase at -short sizes against a real cluster and
// checks what the run saw, not how fast (the machine is shared): every
// proxy got every change, certificates were issued, and stat aggregated
// every scraped proxy. It needs the Kubernetes binaries (`make
// k8s-binaries`; a cold cache builds them first, for minutes).
func TestShortRun(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver")
	}
	o, err := parseOptions([]string{"-short", "-out", "", "-repo", "../../.."}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	var log strings.Builder
	r, err := run(ctx, o, &log)
	if err != nil {
		t.Fatalf("%v\nlog:\n%s", err, log.String())
	}
	if len(r.fanouts) != 2 {
		t.Fatalf("%d fan-out runs, want 2", len(r.fanouts))
	}
	for _, f := range r.fanouts {
		if len(f.changes) != o.changes || f.missing() != 0 {
			t.Errorf("fan-out to %d proxies: %d changes measured, %d updates missed; want %d, 0", f.proxies, len(f.changes), f.missing(), o.changes)
		}
	}
	if want := o.proxies[len(o.proxies)-1]; r.fanouts[1].proxies != want {
		t.Errorf("second fan-out ran with %d proxies, want %d", r.fanouts[1].proxies, want)
	}
	if r.identity.ok == 0 {
		t.Errorf("no certificate issued; errors %v (%s)", r.identity.errors, r.identity.lastErr)
	}
	if r.stats.pods != o.statsProxies || len(r.stats.queries) == 0 {
		t.Errorf("stats: %d pods, %d queries", r.stats.pods, len(r.stats.queries))
	}
	if _, per := cyclesSummary(r.stats.cycles); per < o.statsProxies {
		t.Errorf("a scrape pass covered %d proxies, want at least %d", per, o.statsProxies)
	}
	md := report(r)
	for _, want := range []string{"## 1. Endpoint-change fan-out", "## 4. stat over scraped proxies", "go run ./cmd/cpbench -short"} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	t.Logf("took %s\n%s", r.took, summary(r))
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-pods", "300", "-short"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if !o.short || o.pods != 300 || o.proxies[0] != 100 || o.statsInterval != 2*time.Second {
		t.Errorf("-pods 300 -short: short %v, pods %d, proxies %v, interval %s; want the short sizes with 300 pods", o.short, o.pods, o.proxies, o.statsInterval)
	}
	for _, bad := range [][]string{
		{"-proxies", "5000,1000"},
		{"-stats-cidr", "10.0.0.0/16"},
		{"-stats-cidr", "127.1.0.0/30", "-stats-proxies", "10"},
		{"-pods", "5", "-services", "10"},
		{"extra"},
	} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("%v: accepted", bad)
		}
	}
}

func TestMarkers(t *testing.T) {
	for _, g := range []int{1, 255, 256, 400} {
		if got := markerOf(markerAddr(g)); got != g {
			t.Errorf("markerOf(markerAddr(%d)) = %d", g, got)
		}
	}
	if markerOf(netip.MustParseAddr("10.251.0.1")) != 0 {
		t.Error("a fixed endpoint read as a marker")
	}
	r := newFanoutRun(20, 3, 2)
	r.received(21, 0, 5)
	r.received(21, 0, 9) // a repeat does not count twice
	r.received(21, 1, 7)
	r.received(1, 1, 7) // another run's marker
	select {
	case <-r.done[0]:
	default:
		t.Error("change 1 seen by both proxies, not done")
	}
	if r.recv[0].Load() != 5 || r.count[1].Load() != 0 {
		t.Errorf("recv %d, count of change 2 %d", r.recv[0].Load(), r.count[1].Load())
	}
}

func TestReadUsage(t *testing.T) {
	u, err := readUsage(os.Getpid())
	if err != nil || u.rssKB <= 0 || u.hwmKB < u.rssKB {
		t.Fatalf("readUsage(self) = %+v, %v", u, err)
	}
}
