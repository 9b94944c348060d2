package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseCPUTicks(t *testing.T) {
	// The command name may contain spaces and parentheses.
	line := "4242 (conduit (x) y) S 1 4242 4242 0 -1 4194560 900 0 0 0 137 42 0 0 20 0 3 0 1234 1000 300 18446744073709551615"
	got, err := parseCPUTicks(line)
	if err != nil || got != 179 {
		t.Fatalf("parseCPUTicks = %d, %v; want 137+42 = 179", got, err)
	}
	if _, err := parseCPUTicks("garbage"); err == nil {
		t.Error("parseCPUTicks accepted garbage")
	}
}

func TestFieldKB(t *testing.T) {
	status := "Name:\tx\nVmHWM:\t    9876 kB\nVmRSS:\t    5432 kB\n"
	if got := fieldKB(status, "VmRSS:"); got != 5432 {
		t.Errorf("VmRSS = %d", got)
	}
	if got := fieldKB(status, "Pss:"); got != 0 {
		t.Errorf("missing key = %d, want 0", got)
	}
}

func TestAggregateAddsAgainstDirectOfTheSameRepetition(t *testing.T) {
	samples := []sample{
		{Rep: 0, Protocol: "http1", Point: "1000x4", System: "direct", P50: 0.1, P99: 0.4, CPUPer1k: -1},
		{Rep: 0, Protocol: "http1", Point: "1000x4", System: "conduit", P50: 0.3, P99: 0.7, CPUPer1k: 0.05, RSSIdle: 5000, HWM: 8000},
		{Rep: 1, Protocol: "http1", Point: "1000x4", System: "direct", P50: 0.2, P99: 2.0, CPUPer1k: -1},
		{Rep: 1, Protocol: "http1", Point: "1000x4", System: "conduit", P50: 0.4, P99: 2.5, CPUPer1k: 0.07, RSSIdle: 5100, HWM: 9000},
		{Rep: 0, Protocol: "http1", Point: "1000x4", System: "conduit-mtls", Note: "pending"},
	}
	cells := aggregate(samples, "http1", "1000x4", []string{"direct", "conduit", "conduit-mtls", "haproxy"})
	if len(cells) != 3 {
		t.Fatalf("got %d cells, want direct, conduit and the pending row", len(cells))
	}
	c := cells[1]
	if diff := c.addP99 - 0.4; diff > 1e-9 || diff < -1e-9 { // median of 0.3 and 0.5
		t.Errorf("added p99 = %v, want 0.4", c.addP99)
	}
	if c.hwm != 9000 || c.rssIdle != 5100 {
		t.Errorf("memory = %d idle, %d peak; want the worst repetition 5100, 9000", c.rssIdle, c.hwm)
	}
	if cells[2].n != 0 || cells[2].note != "pending" {
		t.Errorf("pending row = %+v", cells[2])
	}
}

func TestParseOptions(t *testing.T) {
	o, err := parseOptions([]string{"-quick", "-reps", "2"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 10*time.Second || o.reps != 2 || len(o.points) != 1 || o.points[0] != (point{1000, 4}) {
		t.Errorf("quick options = %+v", o)
	}
	for _, bad := range [][]string{{"-points", "1000"}, {"-protocols", "quic"}, {"-systems", "conduit"},
		{"-systems", "direct,conduit-base"}, {"-base-rev", "HEAD~1", "-systems", "direct,conduit"}} {
		if _, err := parseOptions(bad, io.Discard); err == nil {
			t.Errorf("parseOptions(%q) succeeded", bad)
		}
	}
	o, err = parseOptions([]string{"-base-rev", "HEAD~1", "-systems", "direct,conduit,conduit-base"}, io.Discard)
	if err != nil || o.baseRev != "HEAD~1" || !slices.Contains(o.systems, "conduit-base") {
		t.Errorf("parseOptions with --base-rev: %+v, %v", o, err)
	}
}

func TestHAProxyConfig(t *testing.T) {
	h2 := haproxyConfig("h2", "127.0.0.1:1", "127.0.0.1:2")
	if !strings.Contains(h2, "bind 127.0.0.1:1 proto h2") || !strings.Contains(h2, "server s1 127.0.0.1:2 proto h2") {
		t.Errorf("h2 config:\n%s", h2)
	}
	tcp := haproxyConfig("tcp", "127.0.0.1:1", "127.0.0.1:2")
	if !strings.Contains(tcp, "mode tcp") || strings.Contains(tcp, "http-reuse") {
		t.Errorf("tcp config:\n%s", tcp)
	}
}

func TestTapRaiseComparesTheSameRepetition(t *testing.T) {
	samples := []sample{
		{Rep: 0, Protocol: "http1", Point: "1000x4", System: "conduit", P99: 1.0},
		{Rep: 0, Protocol: "http1", Point: "1000x4", System: "conduit-tap", P99: 1.05},
		{Rep: 1, Protocol: "http1", Point: "1000x4", System: "conduit", P99: 2.0},
		{Rep: 1, Protocol: "http1", Point: "1000x4", System: "conduit-tap", P99: 2.4},
		{Rep: 2, Protocol: "http1", Point: "1000x4", System: "conduit", P99: 1.0},
		{Rep: 2, Protocol: "http1", Point: "1000x4", System: "conduit-tap", Note: "failed: reader gone"},
		{Rep: 0, Protocol: "grpc", Point: "1000x4", System: "conduit-tap", P99: 9},
	}
	raise, reps, ok := tapRaise(samples, "http1", "1000x4")
	if !ok || reps != "+5.0, +20.0" {
		t.Fatalf("tapRaise = %v, %q, %v; want repetitions +5.0 and +20.0", raise, reps, ok)
	}
	if d := raise - 0.125; d > 1e-9 || d < -1e-9 {
		t.Errorf("raise = %v, want the median 0.125", raise)
	}
	if _, _, ok := tapRaise(samples, "h2", "1000x4"); ok {
		t.Error("tapRaise reported a raise with no samples")
	}
}

func TestScrapeReadsUnlabelledSeries(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "# HELP tap_subscribers Open tap streams.\n# TYPE tap_subscribers gauge\ntap_subscribers 1\n"+
			"request_total{direction=\"inbound\"} 7\ntap_events_dropped_total 42\n")
	}))
	defer srv.Close()
	m, err := scrape(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	if m["tap_subscribers"] != 1 || m["tap_events_dropped_total"] != 42 || len(m) != 2 {
		t.Errorf("scrape = %v", m)
	}
}

// The report's command line can be pasted into a shell: empty arguments
// are quoted.
func TestReportQuotesTheCommand(t *testing.T) {
	o, err := parseOptions([]string{"-quick", "-json", "", "-notes", ""}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	report := renderReport(o, runInfo{}, nil)
	if want := "cd bench && go run ./cmd/bench -quick -json '' -notes ''\n"; !strings.Contains(report, want) {
		t.Errorf("report does not hold %q:\n%s", want, report)
	}
}
