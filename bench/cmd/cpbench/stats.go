package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
)

// metricsFarm is one process serving the /metrics of many proxies, one
// listener per loopback address (addr:4191), each with its own registry of
// the proxy's own metrics package fed with traffic every second, so the
// controller scrapes realistic, growing pages.
type metricsFarm struct {
	mu      sync.Mutex // guards byAddr, lns, srvs, proxies and scrapes
	byAddr  map[netip.Addr]int
	lns     []net.Listener
	srvs    []*http.Server
	proxies []*farmProxy
	scrapes []scrape

	lastBody atomic.Int64
	stop     chan struct{}
	wg       sync.WaitGroup
}

// processLines are a proxy's process_* metrics as its registry writes
// them (values of a small idle proxy), the same for every farm proxy.
var processLines = func() string {
	var b strings.Builder
	for _, m := range []struct{ name, typ, help, value string }{
		{"process_start_time_seconds", "gauge", "Time that the process started (in seconds since the UNIX epoch).", strconv.FormatInt(time.Now().Unix(), 10)},
		{"process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.", "0.42"},
		{"process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.", "1262317568"},
		{"process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", "9437184"},
		{"process_open_fds", "gauge", "Number of open file descriptors.", "12"},
	} {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %s\n", m.name, m.help, m.name, m.typ, m.name, m.value)
	}
	return b.String()
}()

// farmProxy is one simulated proxy's metrics: inbound calls from two
// meshed clients, outbound calls to three endpoints of each of two
// services, and their TCP connections.
type farmProxy struct {
	reg             *metrics.Registry
	inbound, outbnd []*metrics.Route
	tcpIn, tcpOut   []*metrics.TCP
	idx             int
	scraped         atomic.Int64
	namespace       string
}

// scrape is one /metrics request: when, and of which proxy.
type scrape struct {
	at    time.Time
	proxy int
}

func newMetricsFarm() *metricsFarm {
	return &metricsFarm{byAddr: map[netip.Addr]int{}, stop: make(chan struct{})}
}

// listen serves a proxy's /metrics on each address not served yet.
func (m *metricsFarm) listen(addrs []netip.Addr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, a := range addrs {
		if _, ok := m.byAddr[a]; ok {
			continue
		}
		ln, err := net.Listen("tcp", netip.AddrPortFrom(a, proxyAdminPort).String())
		if err != nil {
			return fmt.Errorf("serving a proxy's /metrics on %s (is the -stats-cidr free on this machine?): %w", a, err)
		}
		i := len(m.proxies)
		p := newFarmProxy(a, i)
		srv := &http.Server{Handler: m.handler(p), ReadHeaderTimeout: 10 * time.Second}
		m.byAddr[a] = i
		m.lns, m.srvs, m.proxies = append(m.lns, ln), append(m.srvs, srv), append(m.proxies, p)
		m.wg.Go(func() { srv.Serve(ln) }) //nolint:errcheck // ends with close
	}
	return nil
}

func newFarmProxy(a netip.Addr, i int) *farmProxy {
	ns := statsNSPrefix + strconv.Itoa(i%statsNamespaces)
	p := &farmProxy{reg: metrics.NewRegistry(), namespace: ns, idx: i}
	// Not the registry's process metrics: they count the bench process's
	// open files, ten thousand and more with the farm's listeners, in
	// every page (a ReadDir of /proc/self/fd per scrape made a pass of
	// 10,000 proxies quadratic). processLines stands in for them.
	p.reg.Process = false
	target := netip.AddrPortFrom(a, targetPort).String()
	self := serviceAuthority(ns, statsServiceName)
	for c := range 2 {
		client := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/client-%d", ns, c)
		p.inbound = append(p.inbound, p.reg.Route(metrics.HTTPLabels{Direction: "inbound", Authority: self, TargetAddr: target, TLS: true, ClientID: client}))
		p.tcpIn = append(p.tcpIn, p.reg.TCP(metrics.TCPLabels{Direction: "inbound", Peer: "src", TargetAddr: target, TLS: true, ClientID: client}))
		p.tcpIn[c].Open() // the client's long-lived connection
	}
	for d := range 2 {
		svc := fmt.Sprintf("backend-%d", d)
		server := fmt.Sprintf("spiffe://cluster.local/ns/%s/sa/%s", ns, svc)
		for e := range 3 {
			dst := metrics.DstLabels(map[string]string{"namespace": ns, "service": svc, "pod": fmt.Sprintf("%s-7d9c8b6f5-%d", svc, e), "serviceaccount": svc,
				"deployment": svc, "replicaset": svc + "-7d9c8b6f5"})
			addr := netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 244, byte(d), byte(e + 1)}), targetPort).String()
			p.outbnd = append(p.outbnd, p.reg.Route(metrics.HTTPLabels{Direction: "outbound", Authority: serviceAuthority(ns, svc), TargetAddr: addr, TLS: true, ServerID: server, Dst: dst}))
			t := p.reg.TCP(metrics.TCPLabels{Direction: "outbound", Peer: "dst", TargetAddr: addr, TLS: true, ServerID: server, Dst: dst})
			t.Open()
			p.tcpOut = append(p.tcpOut, t)
		}
	}
	return p
}

func (m *metricsFarm) handler(p *farmProxy) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		m.mu.Lock()
		m.scrapes = append(m.scrapes, scrape{time.Now(), p.idx})
		m.mu.Unlock()
		p.scraped.Add(1)
		w.Header().Set("Content-Type", "text/plain; version=0.0.4")
		if n, err := p.reg.WriteTo(w); err == nil {
			k, _ := io.WriteString(w, processLines)
			m.lastBody.Store(n + int64(k))
		}
	})
}

// traffic counts a second's calls in every registry until stop: 5 calls
// from each client, 2 to each endpoint, about 1 % failures, latencies
// drawn around 8 ms.
func (m *metricsFarm) traffic() {
	m.wg.Go(func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-m.stop:
				return
			case <-t.C:
			}
			m.mu.Lock()
			proxies := slices.Clone(m.proxies)
			m.mu.Unlock()
			for _, p := range proxies {
				p.tick()
			}
		}
	})
}

func (p *farmProxy) tick() {
	call := func(rt *metrics.Route, n int) {
		for range n {
			rt.Request()
			status, class := 200, metrics.Success
			if rand.IntN(100) == 0 {
				status, class = 500, metrics.Failure
			}
			rt.Response(status, "", class, time.Duration((0.5+rand.ExpFloat64()*8)*float64(time.Millisecond)))
		}
	}
	for _, rt := range p.inbound {
		call(rt, 5)
	}
	for _, rt := range p.outbnd {
		call(rt, 2)
	}
	for _, t := range append(slices.Clone(p.tcpIn), p.tcpOut...) {
		t.AddRead(2048)
		t.AddWritten(4096)
		if rand.IntN(10) == 0 {
			t.Open()
			t.Close(time.Duration(rand.IntN(60))*time.Second, true)
		}
	}
}

// progress says how many of addrs were scraped how often, and when the
// last scrape was: what a timeout reports.
func (m *metricsFarm) progress(addrs []netip.Addr) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var never, once, more int
	for _, a := range addrs {
		n := int64(0)
		if i, ok := m.byAddr[a]; ok {
			n = m.proxies[i].scraped.Load()
		}
		switch {
		case n == 0:
			never++
		case n == 1:
			once++
		default:
			more++
		}
	}
	last := "never"
	if n := len(m.scrapes); n > 0 {
		last = time.Since(m.scrapes[n-1].at).Round(time.Millisecond).String() + " ago"
	}
	return fmt.Sprintf("of %d proxies %d were scraped twice or more, %d once, %d never; %d requests in all, the last %s", len(addrs), more, once, never, len(m.scrapes), last)
}

// minScrapes is the fewest times any of addrs was scraped.
func (m *metricsFarm) minScrapes(addrs []netip.Addr) int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	low := int64(-1)
	for _, a := range addrs {
		i, ok := m.byAddr[a]
		if !ok {
			return 0
		}
		if n := m.proxies[i].scraped.Load(); low < 0 || n < low {
			low = n
		}
	}
	return max(low, 0)
}

// cycle is one scrape pass of the controller over the proxies, as seen by
// them. The controller scrapes each meshed pod once per pass and starts a
// pass only after the previous one ended, so a pass ends where some proxy
// is scraped a second time. (Gaps between requests do not tell: a starved
// controller pauses within a pass too.)
type cycle struct {
	start, end time.Time // first and last request
	scrapes    int
}

// cycles are the passes that started at from or later and were complete
// (the next one had started) by to.
func (m *metricsFarm) cycles(from, to time.Time) []cycle {
	m.mu.Lock()
	ss := slices.Clone(m.scrapes)
	m.mu.Unlock()
	slices.SortFunc(ss, func(a, b scrape) int { return a.at.Compare(b.at) })
	var out []cycle
	var seen map[int]bool
	for _, s := range ss {
		if s.at.After(to) {
			break
		}
		if seen == nil || seen[s.proxy] {
			out = append(out, cycle{start: s.at})
			seen = map[int]bool{}
		}
		seen[s.proxy] = true
		c := &out[len(out)-1]
		c.end = s.at
		c.scrapes++
	}
	if len(out) > 0 {
		out = out[:len(out)-1] // the last one may still be running
	}
	var in []cycle
	for _, c := range out {
		if !c.start.Before(from) {
			in = append(in, c)
		}
	}
	return in
}

// scrapesBetween counts the requests in [from, to].
func (m *metricsFarm) scrapesBetween(from, to time.Time) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.scrapes {
		if !s.at.Before(from) && !s.at.After(to) {
			n++
		}
	}
	return n
}

func (m *metricsFarm) close() {
	close(m.stop)
	m.mu.Lock()
	for _, s := range m.srvs {
		s.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
}

// statQuery is one query `conduit stat` or `conduit edges` sends.
type statQuery struct {
	name  string // as typed on the command line
	stat  *statsv1.StatRequest
	edges *statsv1.EdgesRequest
}

func statQueries() []statQuery {
	ns := statsNSPrefix + "0"
	w := durationpb.New(time.Minute)
	return []statQuery{
		{name: "conduit stat ns", stat: &statsv1.StatRequest{Selector: &statsv1.Resource{Type: "namespace"}, Window: w}},
		{name: "conduit stat po -n " + ns, stat: &statsv1.StatRequest{Selector: &statsv1.Resource{Namespace: ns, Type: "pod"}, Window: w}},
		{name: "conduit stat po -A", stat: &statsv1.StatRequest{Selector: &statsv1.Resource{Type: "pod"}, AllNamespaces: true, Window: w}},
		{name: "conduit edges po -n " + ns, edges: &statsv1.EdgesRequest{Selector: &statsv1.Resource{Namespace: ns, Type: "pod"}}},
	}
}

type queryResult struct {
	name      string
	rows      int
	latencies []time.Duration // sorted
}

type statsResult struct {
	pods      int
	bodyBytes int64
	ready     time.Duration // pods created → every proxy scraped twice
	scrapes   int           // requests in the window
	window    time.Duration
	cycles    []cycle
	cpu       time.Duration // the controller's, over window
	idleCores float64       // the controller's CPU use before any proxy was scrapable
	before    usage
	after     usage
	queries   []queryResult
	note      string // why a wait was cut short, if one was
	// meshedWithRate counts the rows of `stat po -n bench-stats-0` that
	// show a meshed pod with traffic: the check that the controller
	// really scraped and aggregated the proxies.
	meshedWithRate, nsPods int
	// checkErr says the check failed; the report is still written.
	checkErr error
}

// measureStats runs the scraped pods' side: wait until every proxy was
// scraped twice (so that each has a rate), measure o.statsCycles scrape
// passes, then the queries. If the controller's RSS passes maxRSSKB it stops waiting and
// says so in note: the report is still worth writing.
func measureStats(ctx context.Context, m *metricsFarm, c *controllerProc, addrs map[string]netip.Addr, created time.Time, o options, idleCores float64) (statsResult, error) {
	res := statsResult{pods: len(addrs), idleCores: idleCores}
	list := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		list = append(list, a)
	}
	// wait polls done until it is true, the timeout, or the RSS guard.
	wait := func(what string, timeout time.Duration, done func() bool) error {
		deadline := time.Now().Add(timeout)
		for !done() {
			u, err := c.sample()
			if err != nil {
				return err
			}
			if u.rssKB > o.maxRSSKB {
				res.note = fmt.Sprintf("stopped waiting for %s: the controller's RSS reached %.0f MB, over -max-controller-rss %.0f MB", what, mb(u.rssKB), mb(o.maxRSSKB))
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("%s: not within %s (%s)", what, timeout, m.progress(list))
			}
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(200 * time.Millisecond):
			}
		}
		return nil
	}
	err := wait("2 scrapes of every proxy", 2*o.statsInterval+3*time.Minute, func() bool { return m.minScrapes(list) >= 2 })
	if err != nil {
		return res, err
	}
	res.ready = time.Since(created)
	if res.before, err = c.sample(); err != nil {
		return res, err
	}
	if res.note == "" {
		err = wait(fmt.Sprintf("%d scrape passes", o.statsCycles), time.Duration(o.statsCycles)*(4*o.statsInterval+time.Minute),
			func() bool { return len(m.cycles(res.before.at, time.Now())) >= o.statsCycles })
		if err != nil {
			return res, err
		}
	}
	if res.after, err = c.sample(); err != nil {
		return res, err
	}
	res.window = res.after.at.Sub(res.before.at)
	res.cpu = res.after.cpu - res.before.cpu
	res.cycles = m.cycles(res.before.at, res.after.at)
	res.scrapes = m.scrapesBetween(res.before.at, res.after.at)
	res.bodyBytes = m.lastBody.Load()

	conn, err := grpc.NewClient(c.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return res, err
	}
	defer conn.Close()
	client := statsv1.NewStatsClient(conn)
	queries := statQueries()
	res.queries = make([]queryResult, len(queries))
	// The queries take turns, so that each meets the scrape passes alike.
	for range o.queryReps {
		for i, q := range queries {
			qr := &res.queries[i]
			qr.name = q.name
			qctx, cancel := context.WithTimeout(ctx, time.Minute)
			t := time.Now()
			if q.stat != nil {
				var resp *statsv1.StatResponse
				if resp, err = client.Stat(qctx, q.stat); err == nil {
					qr.rows = len(resp.GetRows())
					if q.stat.GetSelector().GetNamespace() != "" {
						res.meshedWithRate, res.nsPods = 0, len(resp.GetRows())
						for _, r := range resp.GetRows() {
							if r.GetMeshedPods() == 1 && r.GetRps() > 0 {
								res.meshedWithRate++
							}
						}
					}
				}
			} else {
				var resp *statsv1.EdgesResponse
				if resp, err = client.Edges(qctx, q.edges); err == nil {
					qr.rows = len(resp.GetEdges())
				}
			}
			qr.latencies = append(qr.latencies, time.Since(t))
			cancel()
			if err != nil {
				return res, fmt.Errorf("%s: %w", q.name, err)
			}
		}
	}
	for i := range res.queries {
		slices.Sort(res.queries[i].latencies)
	}
	if res.note == "" && (res.nsPods == 0 || res.meshedWithRate != res.nsPods) {
		res.checkErr = errors.New("stat po -n " + statsNSPrefix + "0: " + strconv.Itoa(res.meshedWithRate) + " of " + strconv.Itoa(res.nsPods) + " pods meshed with a request rate; want all")
	}
	return res, nil
}

// cyclesSummary is the median pass duration and scrapes per pass.
func cyclesSummary(cs []cycle) (median time.Duration, scrapes int) {
	if len(cs) == 0 {
		return 0, 0
	}
	d := make([]time.Duration, len(cs))
	for i, c := range cs {
		d[i] = c.end.Sub(c.start)
	}
	slices.Sort(d)
	return pct(d, 50), cs[len(cs)-1].scrapes
}
