package stats

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"

	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
)

// benchProxy is a proxy's metrics as cpbench's farm serves them: inbound
// calls from two meshed clients, outbound calls to three endpoints of each
// of two services, their TCP connections, process metrics, and an inbound
// policy's decisions (a page of about 220 KB).
type benchProxy struct {
	reg     *metrics.Registry
	routes  []*metrics.Route
	inbound int // the first routes are inbound
	tcps    []*metrics.TCP
	rnd     *rand.Rand
}

func newBenchProxy(i int) *benchProxy {
	ns := fmt.Sprintf("bench-stats-%d", i%10)
	a := netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)})
	p := &benchProxy{reg: metrics.NewRegistry(), rnd: rand.New(rand.NewPCG(uint64(i), 1))}
	p.reg.Process = true
	target := netip.AddrPortFrom(a, 8080).String()
	self := "stats." + ns + ".svc.cluster.local:8080"
	for c := range 2 {
		client := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/client-%d", ns, c)
		p.routes = append(p.routes, p.reg.Route(metrics.HTTPLabels{Direction: "inbound", Authority: self, TargetAddr: target, TLS: true, ClientID: client}))
		t := p.reg.TCP(metrics.TCPLabels{Direction: "inbound", Peer: "src", TargetAddr: target, TLS: true, ClientID: client})
		t.Open()
		p.tcps = append(p.tcps, t)
		p.reg.Authz(metrics.AuthzLabels{Allowed: true, TargetAddr: target, TLS: true, ClientID: client, SrvKind: "server", SrvName: "stats", AuthzKind: "authorizationpolicy", AuthzName: "stats"})
	}
	p.inbound = len(p.routes)
	for d := range 2 {
		svc := fmt.Sprintf("backend-%d", d)
		server := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, svc)
		for e := range 3 {
			dst := metrics.DstLabels(map[string]string{"namespace": ns, "service": svc, "pod": fmt.Sprintf("%s-7d9c8b6f5-%d", svc, e),
				"serviceaccount": svc, "deployment": svc, "replicaset": svc + "-7d9c8b6f5"})
			addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, byte(d), byte(e + 1)}), 8080).String()
			p.routes = append(p.routes, p.reg.Route(metrics.HTTPLabels{Direction: "outbound", Authority: svc + "." + ns + ".svc.cluster.local:8080",
				TargetAddr: addr, TLS: true, ServerID: server, Dst: dst}))
			t := p.reg.TCP(metrics.TCPLabels{Direction: "outbound", Peer: "dst", TargetAddr: addr, TLS: true, ServerID: server, Dst: dst})
			t.Open()
			p.tcps = append(p.tcps, t)
		}
	}
	return p
}

// tick counts 10 s of the farm's traffic: 5 calls a second from each
// client, 2 to each endpoint, about 1 % failures, latencies around 8 ms.
func (p *benchProxy) tick() {
	for i, rt := range p.routes {
		n := 50
		if i >= p.inbound {
			n = 20
		}
		for range n {
			rt.Request()
			status, class := 200, metrics.Success
			if p.rnd.IntN(100) == 0 {
				status, class = 500, metrics.Failure
			}
			rt.Response(status, "", class, time.Duration((0.5+p.rnd.ExpFloat64()*8)*float64(time.Millisecond)))
		}
	}
	for _, t := range p.tcps {
		t.AddRead(20480)
		t.AddWritten(40960)
		if p.rnd.IntN(10) == 0 {
			t.Open()
			t.Close(time.Duration(p.rnd.IntN(60))*time.Second, true)
		}
	}
}

func (p *benchProxy) page(tb testing.TB) []byte {
	var b bytes.Buffer
	if _, err := p.reg.WriteTo(&b); err != nil {
		tb.Fatal(err)
	}
	return b.Bytes()
}

func scanBytes(tb testing.TB, pg *page, body []byte) {
	tb.Helper()
	if err := pg.scan(bufio.NewReader(bytes.NewReader(body))); err != nil {
		tb.Fatal(err)
	}
}

// entryTotals sums a page's entries by group, slot and bound.
func entryTotals(pg *page) map[string]float64 {
	out := map[string]float64{}
	for _, e := range pg.entries {
		out[fmt.Sprintf("%q %d %v", pg.keys[e.key:e.key+e.keyLen], e.slot, e.le)] += e.v
	}
	return out
}

// checkSameAsParseMetrics: scan reduces a page to what ParseMetrics's
// samples reduce to, whenever both accept the page. Unless strict, scan
// may refuse what ParseMetrics takes (expfmt reads `x""1` as x 1).
func checkSameAsParseMetrics(t *testing.T, in string, strict bool) {
	t.Helper()
	samples, err := ParseMetrics(strings.NewReader(in))
	if err != nil {
		return
	}
	var want, got page
	want.reset()
	for _, s := range samples {
		if err := want.addSample(s); err != nil {
			return // a bucket whose le ParseMetrics took (e.g. of another family's type)
		}
	}
	if err := got.scan(bufio.NewReader(strings.NewReader(in))); err != nil {
		if strict {
			t.Fatalf("scan(%q): %v; ParseMetrics accepted it", in, err)
		}
		return
	}
	if diff := cmp.Diff(entryTotals(&want), entryTotals(&got), cmpopts.EquateNaNs()); diff != "" {
		t.Errorf("scan(%q) (-ParseMetrics +scan):\n%s", in, diff)
	}
	if want.authz != got.authz || !(want.start == got.start || math.IsNaN(want.start) && math.IsNaN(got.start)) {
		t.Errorf("scan(%q): authz %v start %v, ParseMetrics's %v %v", in, got.authz, got.start, want.authz, want.start)
	}
}

func TestScanSameAsParseMetrics(t *testing.T) {
	p := newBenchProxy(3)
	p.tick()
	for _, in := range []string{
		string(p.page(t)),
		fmt.Sprintf(webPage, 100, 5, 50, 100),
		fmt.Sprintf(authzPage, 10, 1, 0),
		"response_total{direction=\"outbound\",dst_pod=\"a\\\"b\\\\c\\nd\" , classification=\"success\",} 1.5e3 1700000000\n",
		"  request_total{direction=\"inbound\"}\t7\n\n# comment\n",
		"process_start_time_seconds 1.7e9\n",
		"response_latency_ms_bucket{direction=\"inbound\",le=\"+Inf\"} NaN\n",
	} {
		checkSameAsParseMetrics(t, in, true)
	}
}

func TestScanErrors(t *testing.T) {
	for in, want := range map[string]string{
		"request_total{direction=\"inbound\"} 1":                           "line 1: the page does not end with a line feed",
		"x 1\nrequest_total{direction=\"inbound\" 1\n":                     "line 2:",
		"request_total{direction=inbound} 1\n":                             "line 1:",
		"request_total 1 2 3\n":                                            "line 1:",
		"request_total abc\n":                                              "line 1:",
		"response_latency_ms_bucket{le=\"abc\",direction=\"inbound\"} 1\n": "line 1: le",
		"1x 2\n": "line 1:",
	} {
		var pg page
		err := pg.scan(bufio.NewReader(strings.NewReader(in)))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("scan(%q) = %v, want an error with %q", in, err, want)
		}
	}
	// Families no query reads are not checked.
	var pg page
	if err := pg.scan(bufio.NewReader(strings.NewReader("tcp_connection_duration_ms_bucket{le=abc} x\n"))); err != nil {
		t.Errorf("a skipped family's line: %v", err)
	}
}

// FuzzScan: a proxy's garbage is an error, never a panic, and a page
// ParseMetrics accepts reduces to the same numbers.
func FuzzScan(f *testing.F) {
	f.Add(webPage)
	f.Add(authzPage)
	f.Add("response_total{direction=\"outbound\",dst_pod=\"a\\\"b\",} 1 2\n")
	f.Add("# TYPE response_latency_ms histogram\nresponse_latency_ms_bucket{direction=\"inbound\",le=\"+Inf\"} NaN\n")
	f.Fuzz(func(t *testing.T, in string) {
		var pg page
		_ = pg.scan(bufio.NewReaderSize(strings.NewReader(in), 16)) // lines longer than the buffer too
		checkSameAsParseMetrics(t, in, false)
	})
}

// TestScanLongLines: lines longer than the reader's buffer are read whole.
func TestScanLongLines(t *testing.T) {
	p := newBenchProxy(1)
	p.tick()
	body := p.page(t)
	var short, long page
	scanBytes(t, &long, body)
	if err := short.scan(bufio.NewReaderSize(bytes.NewReader(body), 16)); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(entryTotals(&long), entryTotals(&short)); diff != "" {
		t.Error(diff)
	}
}

// TestHistoryResolution: an hour of scrapes every 10 s keeps every scrape
// of the last 5 minutes and a point per minute before, answers windows of
// 10 s to 1 h with the traffic in them, and forgets what no window reaches.
func TestHistoryResolution(t *testing.T) {
	s := NewStore(10*time.Second, time.Hour)
	p := Pod{Namespace: "n", Name: "p", AdminAddr: "x", Running: true, Labels: map[string]string{"deployment": "d"}}
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	s.SetPods([]Pod{p}, t0)
	at := t0
	// 1 request a second, every one a success under 1 ms, for 2 hours.
	for i := 0; i <= 720; i++ {
		at = t0.Add(time.Duration(i) * 10 * time.Second)
		n := 10 * i
		s.Ingest(p, at, mustParse(t, fmt.Sprintf("response_total{direction=\"inbound\",classification=\"success\"} %d\n"+
			"response_latency_ms_bucket{direction=\"inbound\",le=\"1\"} %[1]d\nresponse_latency_ms_bucket{direction=\"inbound\",le=\"+Inf\"} %[1]d\n", n)))
	}
	pd := s.pods["n/p"]
	if n := len(pd.points); n < 30+54 || n > 31+61 {
		t.Errorf("%d points kept, want 30 fine and 55-60 coarse", n)
	}
	for _, w := range []time.Duration{10 * time.Second, time.Minute, 5 * time.Minute, 7*time.Minute + 30*time.Second, 30 * time.Minute, time.Hour} {
		rows := s.Stat(at, StatQuery{Selector: Ref{Namespace: "n", Type: TypeDeployment}, Window: w})
		if len(rows) != 1 {
			t.Fatalf("window %s: rows %+v", w, rows)
		}
		r := rows[0]
		// The window covers at least w, at most a minute more (the
		// points of the last 5 minutes are the scrapes themselves).
		slack := time.Duration(0)
		if w > fineFor {
			slack = coarseStep
		}
		if r.Window < w || r.Window > w+slack {
			t.Errorf("window %s: covers %s", w, r.Window)
		}
		if want := r.Window.Seconds(); r.Successes != want || r.RPS != 1 || r.P99 > 1 {
			t.Errorf("window %s: %v successes over %s (want %v), %v rps, p99 %v", w, r.Successes, r.Window, want, r.RPS, r.P99)
		}
	}
}

func mustParse(tb testing.TB, page string) []Sample {
	tb.Helper()
	samples, err := ParseMetrics(strings.NewReader(page))
	if err != nil {
		tb.Fatal(err)
	}
	return samples
}

// TestRestartByStartTime: a proxy that restarted and counted more than
// before by its next scrape is told by its start time.
func TestRestartByStartTime(t *testing.T) {
	s := NewStore(10*time.Second, time.Hour)
	p := Pod{Namespace: "n", Name: "p", AdminAddr: "x", Labels: map[string]string{"deployment": "d"}}
	t0 := time.Unix(1000, 0)
	s.SetPods([]Pod{p}, t0)
	page := func(start, v int) []Sample {
		return mustParse(t, fmt.Sprintf("process_start_time_seconds %d\nresponse_total{direction=\"inbound\",classification=\"success\"} %d\n", start, v))
	}
	s.Ingest(p, t0, page(900, 100))
	s.Ingest(p, t0.Add(10*time.Second), page(900, 150))
	s.Ingest(p, t0.Add(20*time.Second), page(1015, 160)) // restarted 5 s ago
	rows := s.Stat(t0.Add(20*time.Second), StatQuery{Selector: Ref{Namespace: "n", Type: TypeDeployment}, Window: time.Minute})
	if len(rows) != 1 || rows[0].Successes != 210 {
		t.Errorf("rows = %+v, want 210 successes (50 + 160 after the restart)", rows)
	}
}

// BenchmarkScan reduces a farm proxy's page (what a scrape costs the
// controller besides HTTP); BenchmarkParseMetrics is what parsing it cost
// before.
func BenchmarkScan(b *testing.B) {
	p := newBenchProxy(1)
	p.tick()
	body := p.page(b)
	var pg page
	br := bufio.NewReaderSize(nil, 32<<10)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		br.Reset(bytes.NewReader(body))
		if err := pg.scan(br); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParseMetrics(b *testing.B) {
	p := newBenchProxy(1)
	p.tick()
	body := p.page(b)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ParseMetrics(bytes.NewReader(body)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkApply records a reduced page of one of 1,000 pods.
func BenchmarkApply(b *testing.B) {
	const pods = 1000
	s, ps := NewStore(10*time.Second, time.Hour), benchPods(pods)
	t0 := time.Unix(0, 0)
	s.SetPods(ps, t0)
	pages := benchPages(b, 40)
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		pass := i / pods
		s.apply(ps[i%pods], t0.Add(time.Duration(pass)*10*time.Second), pages[pass%len(pages)])
		i++
		if i == pods*len(pages) {
			b.StopTimer()
			s, i = NewStore(10*time.Second, time.Hour), 0
			s.SetPods(ps, t0)
			b.StartTimer()
		}
	}
}

func benchPods(n int) []Pod {
	ps := make([]Pod, n)
	for i := range ps {
		ns := fmt.Sprintf("bench-stats-%d", i%10)
		ps[i] = Pod{Namespace: ns, Name: fmt.Sprintf("stats-%d", i), AdminAddr: "x", Running: true, Identity: "spiffe://cluster.local/ns/" + ns + "/sa/stats",
			Labels: map[string]string{"deployment": fmt.Sprintf("stats-%d", i%100), "service": "stats"}}
	}
	return ps
}

// benchPages are n consecutive pages of one farm proxy (of namespace
// bench-stats-0), 10 s apart, reduced.
func benchPages(tb testing.TB, n int) []*page {
	p := newBenchProxy(0)
	out := make([]*page, n)
	for i := range out {
		p.tick()
		out[i] = &page{}
		scanBytes(tb, out[i], p.page(tb))
	}
	return out
}

// BenchmarkStoreHour keeps an hour of 10 s scrapes of 1,000 farm proxies
// and reports what is kept per pod, then times stat and edges over them.
func BenchmarkStoreHour(b *testing.B) {
	const pods, passes = 1000, 372
	pages := benchPages(b, passes)
	ps := benchPods(pods)
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		s := NewStore(10*time.Second, time.Hour)
		t0 := time.Unix(1_000_000, 0)
		s.SetPods(ps, t0)
		now := t0
		for i, pg := range pages {
			now = t0.Add(time.Duration(i) * 10 * time.Second)
			for _, p := range ps {
				s.apply(p, now, pg)
			}
		}
		s.cur, s.seen, s.enc, s.dense = nil, nil, nil, nil
		runtime.GC()
		runtime.ReadMemStats(&after)
		points := 0
		for _, pd := range s.pods {
			points += len(pd.points)
		}
		b.ReportMetric(float64(after.HeapAlloc-before.HeapAlloc)/pods, "heapB/pod")
		b.ReportMetric(float64(points)/pods, "points/pod")
		for _, q := range []struct {
			name string
			f    func()
		}{
			{"stat-po-A-1m", func() { s.Stat(now, StatQuery{Selector: Ref{Type: TypePod}, AllNamespaces: true, Window: time.Minute}) }},
			{"stat-ns-1h", func() { s.Stat(now, StatQuery{Selector: Ref{Type: TypeNamespace}, Window: time.Hour}) }},
			{"edges-po-1m", func() { s.Edges(now, TypePod, "bench-stats-0", "", time.Minute) }},
		} {
			t := time.Now()
			q.f()
			b.ReportMetric(float64(time.Since(t).Microseconds())/1000, q.name+"-ms")
		}
		runtime.KeepAlive(s)
	}
}

// TestBenchPagesAnswer: the benchmark's pods answer as cpbench checks.
func TestBenchPagesAnswer(t *testing.T) {
	s, ps := NewStore(10*time.Second, time.Hour), benchPods(20)
	t0 := time.Unix(0, 0)
	s.SetPods(ps, t0)
	pages := benchPages(t, 3)
	for i, pg := range pages {
		for _, p := range ps {
			s.apply(p, t0.Add(time.Duration(i)*10*time.Second), pg)
		}
	}
	now := t0.Add(20 * time.Second)
	rows := s.Stat(now, StatQuery{Selector: Ref{Namespace: "bench-stats-0", Type: TypePod}, Window: time.Minute})
	if len(rows) != 2 {
		t.Fatalf("rows %+v", rows)
	}
	for _, r := range rows {
		// 2 clients × 50 calls per 10 s, 2 passes
		if r.Successes+r.Failures != 200 || r.RPS != 10 || r.MeshedPods != 1 || r.P50 <= 0 || !r.AuthzApplies || r.Allowed != 0 || r.TCPOpen != 2 {
			t.Errorf("row %+v", r)
		}
	}
	edges := s.Edges(now, TypePod, "bench-stats-0", "stats-0", time.Minute)
	if len(edges) != 6 || !slices.ContainsFunc(edges, func(e EdgeResult) bool {
		return e.Dst.Name == "backend-0-7d9c8b6f5-0" && e.Secured && e.ServerID == "spiffe://cluster.local/ns/bench-stats-0/sa/backend-0" &&
			e.ClientID == "spiffe://cluster.local/ns/bench-stats-0/sa/stats"
	}) {
		t.Errorf("edges %+v", edges)
	}
}

// BenchmarkScrapeHTTP scrapes a farm page over loopback HTTP as the
// server does (a new connection each time), both ends in this process.
func BenchmarkScrapeHTTP(b *testing.B) {
	p := newBenchProxy(0)
	p.tick()
	body := p.page(b)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer hs.Close()
	pod := Pod{Namespace: "bench-stats-0", Name: "stats-0", AdminAddr: strings.TrimPrefix(hs.URL, "http://"), Running: true}
	now := time.Unix(0, 0)
	srv := NewServer(Config{Pods: PodsFunc(func(context.Context) ([]Pod, error) { return []Pod{pod}, nil }), Now: func() time.Time { return now }})
	srv.store.SetPods([]Pod{pod}, now)
	sc := scrapers.Get().(*scraper)
	b.SetBytes(int64(len(body)))
	b.ReportAllocs()
	for b.Loop() {
		now = now.Add(10 * time.Second)
		if err := srv.scrape(context.Background(), pod, sc); err != nil {
			b.Fatal(err)
		}
	}
}
