package main

import (
	"fmt"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/integration/cluster"
)

// report is the markdown written to -out.
func report(r *results) string {
	o := r.o
	var b strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	p("# conduit-controller at scale (cpbench)")
	p("")
	p("Produced by:")
	p("")
	p("```sh")
	p("%s", o.command)
	p("```")
	p("")
	p("- Started %s, took %s. conduit-controller built from the %s (`CGO_ENABLED=0 go build -trimpath -ldflags=\"-s -w\"`), %s, GOGC=%s, GOMEMLIMIT=%s; GOMAXPROCS of every process = its default (%d CPUs).",
		r.started.UTC().Format(time.RFC3339), r.took.Round(time.Second), r.source, r.goVersion, envOr("GOGC"), envOr("GOMEMLIMIT"), runtime.NumCPU())
	p("- Machine: %d CPUs, Linux %s; `/proc/loadavg` at start %s, at end %s. The bench and everything it started ran at niceness %d, on a machine other engineers' builds and tests shared: absolute times are noisy.",
		runtime.NumCPU(), r.kernel, r.loadStart, r.loadEnd, niceness())
	p("- Cluster: `integration/cluster` (etcd %s, kube-apiserver and kube-controller-manager %s, kwok %s) on loopback, ready in %s. No kubelet: kwok makes pods Running and Ready; kube-controller-manager writes the EndpointSlices.",
		cluster.DefaultEtcdVersion, cluster.DefaultK8sVersion, cluster.DefaultKwokVersion, r.clusterUp.Round(100*time.Millisecond))
	tlsNote := "over TLS, verifying the controller's identity as injected proxies do (`--controller-identity`), without a client certificate"
	if !o.tls {
		tlsNote = "in plaintext"
	}
	p("- The controller runs in Kubernetes mode (`--discovery kubernetes --stats-interval %s`, identity from a fresh trust anchor). Each simulated proxy is a goroutine pair in the bench process with its own connection to it, made with the proxy's own gRPC client (`pkg/proxy/grpcwire`) %s, and keeps two `Destination.Get` streams open: the hot service's (every proxy) and one of the %d scale services' (proxy *i* watches service *i* mod %d).",
		o.statsInterval, tlsNote, o.services, o.services)
	p("- The bench process itself used %s of CPU over the run.", r.benchCPU.Round(time.Second))
	p("")

	p("## 1. Endpoint-change fan-out")
	p("")
	p("The hot service is selector-less; the bench rewrites its EndpointSlice (%d fixed endpoints plus one that every write replaces) %d times, 200 ms apart after every proxy has the change. For each write, each proxy's latency is the time from just before the write request was sent to the proxy decoding the `add` update with the new endpoint. Per write: the median (p50) and p99 over the proxies, and the last proxy.",
		o.endpoints, o.changes)
	p("")
	p("| proxies | pods in the cluster | writes | first proxy: median of writes | p50 over proxies: median of writes | p99 over proxies: median / worst write | last proxy: median / worst write | all samples p50 / p99 | API write (median) | updates missed |")
	p("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, f := range r.fanouts {
		first, _ := f.over(func(c changeResult) time.Duration { return c.first })
		p50, _ := f.over(func(c changeResult) time.Duration { return c.p50 })
		p99, p99w := f.over(func(c changeResult) time.Duration { return c.p99 })
		last, lastw := f.over(func(c changeResult) time.Duration { return c.max })
		write, _ := f.over(func(c changeResult) time.Duration { return c.write })
		p("| %d | %d | %d | %s | %s | %s / %s | %s / %s | %s / %s | %s | %d |", f.proxies, f.pods, len(f.changes), ms(first), ms(p50), ms(p99), ms(p99w), ms(last), ms(lastw),
			ms(pct(f.all, 50)), ms(pct(f.all, 99)), ms(write), f.missing())
	}
	p("")
	if len(r.fanouts) > 0 {
		f := r.fanouts[0]
		_, worst := f.over(func(c changeResult) time.Duration { return c.p99 })
		verdict := "met"
		if worst >= 100*time.Millisecond {
			verdict = "missed"
		}
		p("Target p99 < 100 ms at %d proxies (issue 15): **%s** — the worst write's p99 was %s.", f.proxies, verdict, ms(worst))
		p("")
	}
	for _, f := range r.fanouts {
		p("- At %d proxies the controller used %s of CPU and the bench process (every proxy's receiving side) %s while %d updates (an `add` and a `remove` per write per proxy) were delivered: %.1f µs of controller CPU and %.1f µs of receiver CPU per update; on %d CPUs these alone bound the time to the last proxy from below by about %s per write.",
			f.proxies, f.controllerCPU.Round(10*time.Millisecond), f.benchCPU.Round(10*time.Millisecond), f.delivered,
			usPer(f.controllerCPU, f.delivered), usPer(f.benchCPU, f.delivered), runtime.NumCPU(),
			ms(time.Duration(float64(f.controllerCPU+f.benchCPU)/float64(max(len(f.changes), 1))/float64(runtime.NumCPU()))))
	}
	p("")
	for _, f := range r.fanouts {
		var parts []string
		for i, c := range f.changes {
			parts = append(parts, fmt.Sprintf("%d: %.0f/%.0f/%.0f", i+1, msf(c.p50), msf(c.p99), msf(c.max)))
		}
		p("Per write at %d proxies, %d pods (p50/p99/last, ms): %s.", f.proxies, f.pods, strings.Join(parts, ", "))
		p("")
	}

	p("## 2. Controller memory and CPU")
	p("")
	p("From `/proc/PID/status` (VmRSS) and `/proc/PID/stat` (utime+stime) of the controller process, and its own `/metrics` (`go_memstats_heap_inuse_bytes`, `go_goroutines`), at the end of a quiet window (the bench idle) after each step; CPU is the controller's mean over that window.")
	p("")
	p("| state | proxies | pods | RSS MB | Go heap in use MB | goroutines | CPU while quiet (cores) | connecting the new proxies took |")
	p("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
	for _, s := range r.states {
		connect := ""
		if s.connectedAdded > 0 {
			connect = fmt.Sprintf("%s for %d", s.connectTook.Round(time.Millisecond), s.connectedAdded)
		}
		p("| %s | %d | %d | %.1f | %.1f | %d | %.3f | %s |", s.label, s.proxies, s.pods, mb(s.u.rssKB), s.u.heapInuse/1e6, int(s.u.goroutines), s.cpuCores, connect)
	}
	p("")
	for _, l := range perProxy(r.states) {
		p("- %s", l)
	}
	pp := r.pods
	p("- %d pods (%d services of about %d, in %d namespaces) were created in %s (%.0f pods/s, %d requests at a time); kube-controller-manager had published every pod as a ready endpoint in the EndpointSlices %s after the first request, and every proxy had all its service's endpoints %s after it. Meanwhile the controller used %s of CPU (%.2f ms per pod) and grew from %.1f to %.1f MB RSS (%.1f KB per pod; heap %.1f → %.1f MB). Cluster components over the same time: %s.",
		pp.pods, pp.services, pp.pods/max(pp.services, 1), o.namespaces, pp.created.Round(time.Millisecond), float64(pp.pods)/pp.created.Seconds(), o.createConcurrency,
		pp.published.Round(time.Millisecond), pp.converged.Round(time.Millisecond), pp.cpu.Round(10*time.Millisecond), msf(pp.cpu)/float64(max(pp.pods, 1)), mb(pp.before.rssKB), mb(pp.after.rssKB),
		float64(pp.after.rssKB-pp.before.rssKB)/float64(max(pp.pods, 1)), pp.before.heapInuse/1e6, pp.after.heapInuse/1e6, cpuList(pp.components))
	p("- At the end of the run (after the stats phase) the controller's RSS was %.1f MB, its peak (VmHWM) %.1f MB.", mb(r.final.rssKB), mb(r.final.hwmKB))
	p("")

	id := r.identity
	p("## 3. Certificate issuance")
	p("")
	p("%d simulated proxies, each on its own connection, call `Identity.Certify` back to back for %s with a CSR (P-256, made beforehand) and a real projected ServiceAccount token (audience `identity.conduit.io`) of one of %d ServiceAccounts; the controller reviews each token with the API server (TokenReview) and signs.",
		id.concurrency, o.identityDuration, id.accounts)
	p("")
	p("| concurrent proxies | certificates | time | per second | latency p50 | p99 | errors | controller CPU per certificate | kube-apiserver CPU per certificate |")
	p("| ---: | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: |")
	errs := "none"
	if len(id.errors) > 0 {
		errs = fmt.Sprintf("%v (last: %s)", id.errors, id.lastErr)
	}
	p("| %d | %d | %s | %.1f | %s | %s | %s | %s | %s |", id.concurrency, id.ok, id.elapsed.Round(time.Millisecond), id.rate(), ms(pct(id.latencies, 50)), ms(pct(id.latencies, 99)), errs,
		perItem(id.cpu, id.ok), perItem(r.identityComponentCPU["kube-apiserver"], id.ok))
	p("")

	st := r.stats
	med, per := cyclesSummary(st.cycles)
	p("## 4. stat over scraped proxies")
	p("")
	p("%d meshed pods (a `conduit-proxy` container, %d namespaces) run on a second kwok node whose pod CIDR is %s, so their addresses are on loopback; one bench goroutine per address serves a proxy's `/metrics` on port %d, written by the proxy's own `pkg/proxy/metrics` registry (2 inbound clients, 6 outbound endpoints, their TCP series; the process metrics written as fixed lines, since the registry's would count the bench process's open files) and fed a second's traffic every second (%.1f KB a page at the end). The controller discovers them from its pod informer and scrapes every meshed pod each `--stats-interval` (%s), 16 at a time.",
		st.pods, statsNamespaces, o.statsCIDR, proxyAdminPort, float64(st.bodyBytes)/1024, o.statsInterval)
	p("")
	p("- From the first pod's creation to every proxy scraped twice (the first scrape gives no rate): %s.", st.ready.Round(100*time.Millisecond))
	p("- Over a %s window: %d complete scrape passes of %d proxies, median %s from a pass's first request to its last (%.0f proxies/s), against an interval of %s; %d requests in the window.",
		st.window.Round(100*time.Millisecond), len(st.cycles), per, med.Round(time.Millisecond), float64(per)/max(med.Seconds(), 1e-9), o.statsInterval, st.scrapes)
	scrapeCPU := st.cpu.Seconds() - st.idleCores*st.window.Seconds()
	perScrape := time.Duration(0)
	if st.scrapes > 0 {
		perScrape = time.Duration(scrapeCPU / float64(st.scrapes) * float64(time.Second))
	}
	p("- Controller CPU over the window: %s = %.3f cores (%.3f cores before any proxy was scrapable, with the same pods and proxies otherwise): %s per proxy scraped above that.", st.cpu.Round(10*time.Millisecond), st.cpu.Seconds()/st.window.Seconds(), st.idleCores, perScrape.Round(time.Microsecond))
	live0, live1 := st.before.nextGC/2, st.after.nextGC/2
	p("- Controller memory over the window: RSS %.1f → %.1f MB; Go heap live at the last GC (half the heap goal `go_memstats_next_gc_bytes`) %.1f → %.1f MB, i.e. %.1f KB kept per proxy scraped.", mb(st.before.rssKB), mb(st.after.rssKB),
		live0/1e6, live1/1e6, (live1-live0)/1024/float64(max(st.scrapes, 1)))
	if st.note != "" {
		p("- **%s.**", st.note)
	}
	p("")
	p("| query (gRPC Stats API, 1 min window) | rows | p50 | p99 | repetitions |")
	p("| --- | ---: | ---: | ---: | ---: |")
	for _, q := range st.queries {
		p("| `%s` | %d | %s | %s | %d |", q.name, q.rows, ms(pct(q.latencies, 50)), ms(pct(q.latencies, 99)), len(q.latencies))
	}
	p("")
	p("`stat po -n %s0` listed %d of %d pods meshed with a request rate (the check that the scrapes were aggregated).", statsNSPrefix, st.meshedWithRate, st.nsPods)
	if st.checkErr != nil {
		p("")
		p("**The check failed** (in the last repetition of the query): some pods had no scrape in the last minute.")
	}
	p("")
	p("See `notes.md` (\"The control plane at scale\") for what these figures mean for 10,000 pods.")
	return b.String()
}

// perProxy derives memory per proxy from the states: between two states
// with the same pods, the growth divided by the proxies added.
func perProxy(states []state) []string {
	var out []string
	for i := 1; i < len(states); i++ {
		a, b := states[i-1], states[i]
		if b.proxies <= a.proxies || a.pods != b.pods {
			continue
		}
		n := float64(b.proxies - a.proxies)
		out = append(out, fmt.Sprintf("From %d to %d proxies (%d pods): %.1f KB RSS, %.1f KB of Go heap and %.1f goroutines per proxy (each with 2 streams).",
			a.proxies, b.proxies, a.pods, float64(b.u.rssKB-a.u.rssKB)/n, (b.u.heapInuse-a.u.heapInuse)/1024/n, (b.u.goroutines-a.u.goroutines)/n))
	}
	return out
}

func cpuList(m map[string]time.Duration) string {
	var names []string
	for k := range m {
		names = append(names, k)
	}
	slices.Sort(names)
	var parts []string
	for _, k := range names {
		parts = append(parts, fmt.Sprintf("%s %s", k, m[k].Round(10*time.Millisecond)))
	}
	return strings.Join(parts, ", ")
}

func perItem(d time.Duration, n int) string {
	if n == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f ms", msf(d)/float64(n))
}

func usPer(d time.Duration, n int64) float64 {
	if n == 0 {
		return 0
	}
	return float64(d) / float64(time.Microsecond) / float64(n)
}

func msf(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func envOr(k string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return "unset"
}

// niceness is this process's nice value (field 19 of /proc/self/stat).
func niceness() int {
	b, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
	n := 0
	if len(f) > 16 {
		fmt.Sscan(f[16], &n) //nolint:errcheck // 0 on garbage
	}
	return n
}

// summary is what the command prints on stdout: the headline figures.
func summary(r *results) string {
	var b strings.Builder
	for _, f := range r.fanouts {
		p99, worst := f.over(func(c changeResult) time.Duration { return c.p99 })
		last, _ := f.over(func(c changeResult) time.Duration { return c.max })
		fmt.Fprintf(&b, "fan-out %d proxies, %d pods: p99 %s (worst write %s), last proxy %s, missed %d\n", f.proxies, f.pods, ms(p99), ms(worst), ms(last), f.missing())
	}
	for _, s := range r.states {
		fmt.Fprintf(&b, "%s: RSS %.1f MB, heap %.1f MB, %.3f cores\n", s.label, mb(s.u.rssKB), s.u.heapInuse/1e6, s.cpuCores)
	}
	fmt.Fprintf(&b, "identity: %.1f certificates/s (%d in %s), p99 %s, errors %v\n", r.identity.rate(), r.identity.ok, r.identity.elapsed.Round(time.Millisecond), ms(pct(r.identity.latencies, 99)), r.identity.errors)
	med, per := cyclesSummary(r.stats.cycles)
	fmt.Fprintf(&b, "stats: %d proxies per pass, %s per pass, controller %.3f cores while scraping\n", per, med.Round(time.Millisecond), r.stats.cpu.Seconds()/max(r.stats.window.Seconds(), 1e-9))
	for _, q := range r.stats.queries {
		fmt.Fprintf(&b, "%s: %d rows, p50 %s, p99 %s\n", q.name, q.rows, ms(pct(q.latencies, 50)), ms(pct(q.latencies, 99)))
	}
	return b.String()
}
