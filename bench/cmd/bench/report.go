package main

import (
	"context"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strings"
	"time"
)

// runInfo describes the machine and the programs of a run.
type runInfo struct {
	started               time.Time
	elapsed               time.Duration
	goVersion, fortio     string
	haproxy, conduitProxy string
	cpu, kernel           string
	loadStart, loadEnd    string
	gogc, gomemlimit      string
	proxySource           string
	binarySizes           string
	notes                 string
}

func collectInfo(ctx context.Context, b binaries) runInfo {
	first := func(name string, args ...string) string {
		out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
		if err != nil {
			return "unknown"
		}
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	info := runInfo{
		started:      time.Now().UTC(),
		goVersion:    first("go", "version"),
		fortio:       first(b.fortio, "version"),
		haproxy:      first(b.haproxy, "-v"),
		conduitProxy: first(b.conduitProxy, "version"),
		kernel:       first("uname", "-sr"),
		loadStart:    readLoadAvg(),
		gogc:         envOr("GOGC", "unset"),
		gomemlimit:   envOr("GOMEMLIMIT", "unset"),
		binarySizes:  binarySizes(b),
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if strings.HasPrefix(line, "model name") {
				_, v, _ := strings.Cut(line, ":")
				info.cpu = strings.TrimSpace(v)
				break
			}
		}
	}
	return info
}

// binarySizes lists the size of conduit-proxy and of each variant built.
func binarySizes(b binaries) string {
	var sizes []string
	for _, name := range append([]string{"conduit-proxy"}, slices.Sorted(maps.Keys(b.variants))...) {
		path := b.conduitProxy
		if name != "conduit-proxy" {
			path = b.variants[name]
		}
		if st, err := os.Stat(path); err == nil {
			sizes = append(sizes, fmt.Sprintf("%s %.1f MB", name, float64(st.Size())/(1<<20)))
		}
	}
	return strings.Join(sizes, ", ")
}

func envOr(k, def string) string {
	if v, ok := os.LookupEnv(k); ok {
		return v
	}
	return def
}

// cell is the aggregate of one system at one point over the repetitions.
type cell struct {
	sys                         string
	n                           int
	p50, p90, p99, p999, max    float64 // medians
	addP50, addP99              float64 // medians of (system − direct) per repetition
	addP99Reps                  []float64
	errors, count               int64
	cpu                         float64 // median, -1 when not measured
	rssIdle, rssAfter, hwm, pss int64   // worst over repetitions
	gcPerSec                    float64 // worst over repetitions (conduit-proxy only)
	tapEvents, tapDropped       int64   // sums over repetitions
	note                        string
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// aggregate summarizes the samples of one protocol and point per system.
func aggregate(samples []sample, proto, pt string, systemOrder []string) []cell {
	direct := map[int]sample{}
	for _, s := range samples {
		if s.Protocol == proto && s.Point == pt && s.System == "direct" && s.Note == "" {
			direct[s.Rep] = s
		}
	}
	var cells []cell
	for _, name := range systemOrder {
		c := cell{sys: name, cpu: -1}
		var p50, p90, p99, p999, mx, a50, a99, cpu []float64
		for _, s := range samples {
			if s.Protocol != proto || s.Point != pt || s.System != name {
				continue
			}
			if s.Note != "" {
				c.note = s.Note
				continue
			}
			c.n++
			p50, p90, p99, p999, mx = append(p50, s.P50), append(p90, s.P90), append(p99, s.P99), append(p999, s.P999), append(mx, s.Max)
			if d, ok := direct[s.Rep]; ok {
				a50, a99 = append(a50, s.P50-d.P50), append(a99, s.P99-d.P99)
			}
			if s.CPUPer1k >= 0 {
				cpu = append(cpu, s.CPUPer1k)
			}
			c.errors += s.Errors
			c.count += s.Count
			c.rssIdle, c.rssAfter = max(c.rssIdle, s.RSSIdle), max(c.rssAfter, s.RSSAfter)
			c.hwm, c.pss = max(c.hwm, s.HWM), max(c.pss, s.PSS)
			c.gcPerSec = max(c.gcPerSec, s.GCPerSec)
			c.tapEvents += s.TapEvents
			c.tapDropped += s.TapDropped
		}
		if c.n == 0 && c.note == "" {
			continue
		}
		c.p50, c.p90, c.p99, c.p999, c.max = median(p50), median(p90), median(p99), median(p999), median(mx)
		c.addP50, c.addP99, c.addP99Reps = median(a50), median(a99), a99
		if len(cpu) > 0 {
			c.cpu = median(cpu)
		}
		cells = append(cells, c)
	}
	return cells
}

func mb(kb int64) string {
	if kb == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f", float64(kb)/1024)
}

func renderReport(o *options, info runInfo, samples []sample) string {
	var b strings.Builder
	cmd := "cd bench && go run ./cmd/bench"
	for _, a := range o.args {
		if a == "" || strings.ContainsAny(a, " '\"$") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		cmd += " " + a
	}
	fmt.Fprintf(&b, "# conduit-proxy data plane benchmark\n\n")
	fmt.Fprintf(&b, "Produced by:\n\n```sh\n%s\n```\n\n", cmd)
	fmt.Fprintf(&b, "- Started %s, took %s. %d repetitions of %s measured after %s of warm-up per run; "+
		"the order of the systems alternates between repetitions; every proxy is started fresh for each run.\n",
		info.started.Format(time.RFC3339), info.elapsed.Round(time.Second), o.reps, o.duration, o.warmup)
	fmt.Fprintf(&b, "- Machine: %d CPUs (%s), %s. Load generator pinned to CPU %s, server and proxy to CPU %s (`taskset`); scheduling of all of them: %s.\n",
		runtime.NumCPU(), info.cpu, info.kernel, o.loadCPU, o.serverCPU, priorityText(o.priority))
	fmt.Fprintf(&b, "- Machine load (`/proc/loadavg`) at start: %s; at end: %s; 1-min load at batch starts: %s. "+
		"Other engineers' builds and tests shared this machine during the run, so absolute figures are noisy; "+
		"compare systems within a batch.\n", info.loadStart, info.loadEnd, loadRange(samples))
	fmt.Fprintf(&b, "- %s; GOGC=%s, GOMEMLIMIT=%s in the environment (conduit-proxy sets its own limits, if any, from inside).\n",
		info.goVersion, info.gogc, info.gomemlimit)
	fmt.Fprintf(&b, "- Load: fortio %s in fixed-rate mode with `-r 0.00001` (10 µs histogram resolution); server: fortio's HTTP (h2c), gRPC and TCP echo servers. %s. %s.\n\n",
		info.fortio, info.haproxy, info.conduitProxy+" built from the "+info.proxySource+
			"; every Go program built as goreleaser.yaml ships conduit-proxy (`CGO_ENABLED=0 go build -trimpath -ldflags=\"-s -w\"`); binary sizes: "+info.binarySizes)
	b.WriteString("Latencies are medians over the repetitions, in milliseconds; **added** is the system minus direct " +
		"in the same batch (same repetition, protocol and point), median over repetitions, with each repetition's added p99 in brackets. " +
		"CPU is the proxy's user+system time from `/proc/PID/stat` in vCPU per 1000 requests/s. " +
		"Memory is the worst repetition, in MB: RSS idle (before load), RSS after load, peak RSS (`VmHWM`) and PSS (`smaps_rollup`) after load. GC/s is conduit-proxy's garbage collections per second during the run (`GODEBUG=gctrace=1`; the busiest proxy, worst repetition).\n\n")

	renderTargets(&b, samples, o)

	for _, pname := range o.protocols {
		for _, pt := range o.points {
			cells := aggregate(samples, pname, pt.String(), o.systems)
			if len(cells) == 0 {
				continue
			}
			fmt.Fprintf(&b, "## %s — %d requests/s over %d connections\n\n", protocols[pname].title, pt.QPS, pt.Conns)
			b.WriteString("| system | p50 | p90 | p99 | p99.9 | max | added p50 | added p99 [per rep] | errors | vCPU/1000 rps | RSS idle | RSS after | VmHWM | PSS | GC/s |\n")
			b.WriteString("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
			for _, c := range cells {
				title := systems[c.sys].title
				if c.n == 0 {
					fmt.Fprintf(&b, "| %s | %s | | | | | | | | | | | | | |\n", title, c.note)
					continue
				}
				added50, added99 := "–", "–"
				if c.sys != "direct" && len(c.addP99Reps) > 0 {
					reps := make([]string, len(c.addP99Reps))
					for i, v := range c.addP99Reps {
						reps[i] = fmt.Sprintf("%.3f", v)
					}
					added50 = fmt.Sprintf("%+.3f", c.addP50)
					added99 = fmt.Sprintf("%+.3f [%s]", c.addP99, strings.Join(reps, ", "))
				}
				cpu := "–"
				if c.cpu >= 0 {
					cpu = fmt.Sprintf("%.3f", c.cpu)
				}
				errs := fmt.Sprintf("%d/%d", c.errors, c.count)
				if c.tapEvents > 0 || c.tapDropped > 0 {
					errs += fmt.Sprintf(" (tap: %d events read, %d dropped)", c.tapEvents, c.tapDropped)
				}
				if c.note != "" {
					errs += " (" + c.note + ")"
				}
				gc := "–"
				if strings.HasPrefix(c.sys, "conduit") {
					gc = fmt.Sprintf("%.1f", c.gcPerSec)
				}
				fmt.Fprintf(&b, "| %s | %.3f | %.3f | %.3f | %.3f | %.3f | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
					title, c.p50, c.p90, c.p99, c.p999, c.max, added50, added99, errs, cpu,
					mb(c.rssIdle), mb(c.rssAfter), mb(c.hwm), mb(c.pss), gc)
			}
			b.WriteString("\n")
		}
	}
	if strings.TrimSpace(info.notes) != "" {
		b.WriteString("## Notes\n\n" + strings.TrimSpace(info.notes) + "\n")
	}
	return b.String()
}

func loadRange(samples []sample) string {
	lo, hi := -1.0, -1.0
	for _, s := range samples {
		if lo < 0 || s.Load1 < lo {
			lo = s.Load1
		}
		hi = max(hi, s.Load1)
	}
	if lo < 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f–%.2f", lo, hi)
}

// renderTargets checks the targets of BENCHMARKS.md at HTTP/1.1 GET, 1000
// requests/s over 4 connections.
func renderTargets(b *strings.Builder, samples []sample, o *options) {
	b.WriteString("## Targets (HTTP/1.1 GET, 1000 requests/s, 4 connections)\n\n")
	cells := aggregate(samples, "http1", "1000x4", []string{"conduit", "haproxy"})
	var conduit, haproxy *cell
	for i := range cells {
		if cells[i].n == 0 {
			continue
		}
		switch cells[i].sys {
		case "conduit":
			conduit = &cells[i]
		case "haproxy":
			haproxy = &cells[i]
		}
	}
	if conduit == nil {
		b.WriteString("Not measured in this run: it needs `-protocols` with http1, `-points` with 1000x4 and `-systems` with conduit (and haproxy).\n\n")
		return
	}
	verdict := func(ok bool) string {
		if ok {
			return "met"
		}
		return "**missed**"
	}
	b.WriteString("| target | conduit-proxy | reference | result |\n| --- | --- | --- | --- |\n")
	fmt.Fprintf(b, "| RSS idle < 10 MB | %s MB | 10 MB | %s |\n", mb(conduit.rssIdle), verdict(conduit.rssIdle < 10*1024))
	fmt.Fprintf(b, "| RSS after load (VmHWM, peak) < 10 MB | %s MB (after: %s MB) | 10 MB | %s |\n", mb(conduit.hwm), mb(conduit.rssAfter), verdict(conduit.hwm < 10*1024))
	fmt.Fprintf(b, "| added p99 < 1 ms | %+.3f ms | 1 ms | %s |\n", conduit.addP99, verdict(conduit.addP99 < 1))
	if haproxy != nil {
		fmt.Fprintf(b, "| added p99 ≤ HAProxy's | %+.3f ms | %+.3f ms | %s |\n", conduit.addP99, haproxy.addP99, verdict(conduit.addP99 <= haproxy.addP99))
		fmt.Fprintf(b, "| CPU per 1000 rps ≤ HAProxy's | %.3f vCPU | %.3f vCPU | %s |\n", conduit.cpu, haproxy.cpu, verdict(conduit.cpu <= haproxy.cpu))
	}
	if raise, reps, ok := tapRaise(samples, "http1", "1000x4"); ok {
		fmt.Fprintf(b, "| tapping at full rate raises p99 < 10 %% | %+.1f %% [%s] | 10 %% | %s |\n", raise*100, reps, verdict(raise < 0.10))
	}
	if conduit.errors > 0 {
		fmt.Fprintf(b, "\nconduit-proxy had %d errors in %d requests at this point.\n", conduit.errors, conduit.count)
	}
	b.WriteString("\n")
}

// tapRaise is how much a tap reading every event raises conduit-proxy's
// p99: the median over repetitions of conduit-tap's p99 over conduit's in
// the same repetition, minus one; reps lists each repetition's figure.
func tapRaise(samples []sample, proto, pt string) (raise float64, reps string, ok bool) {
	p99 := map[string]map[int]float64{"conduit": {}, "conduit-tap": {}}
	for _, s := range samples {
		if s.Protocol == proto && s.Point == pt && s.Note == "" && p99[s.System] != nil {
			p99[s.System][s.Rep] = s.P99
		}
	}
	var raises []float64
	var each []string
	for _, rep := range slices.Sorted(maps.Keys(p99["conduit"])) {
		base := p99["conduit"][rep]
		tapped, ok := p99["conduit-tap"][rep]
		if !ok || base <= 0 {
			continue
		}
		r := tapped/base - 1
		raises = append(raises, r)
		each = append(each, fmt.Sprintf("%+.1f", r*100))
	}
	if len(raises) == 0 {
		return 0, "", false
	}
	return median(raises), strings.Join(each, ", "), true
}

func priorityText(p string) string {
	switch p {
	case "fifo":
		return "real-time SCHED_FIFO priority 10 (`chrt -f 10`), so that the other work on this shared machine does not preempt them"
	case "nice":
		return "`nice -n -15`"
	}
	return "default"
}
