// Command busyperiods cuts one CPU's schedule into busy periods (the runs
// between two idle ones) and says how long they last and how much of them
// the proxy and the server take, from `perf sched timehist` output. On the
// bench's CPU for the server and the proxy, a busy period is a burst of
// requests, the server's work and the responses; the longest ones name
// what ran in them (bench/notes.md, "The gRPC one-hop tail: where it is
// not", fourteenth session).
//
//	perf sched record -C 1 -o sched.data -- sleep 8   # during a bench run
//	perf sched timehist -i sched.data > sched.txt
//	go run ./cmd/busyperiods -proxy conduit-proxy -server fortio sched.txt
package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// A line of `perf sched timehist`:
// "49885.566524 [0001]  fortio[7786/7784]   0.000  0.014  0.142".
var line = regexp.MustCompile(`^\s*([\d.]+)\s+\[(\d+)\]\s+(\S.*?)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s*$`)

type run struct {
	task string  // command name, without [tid/pid]
	ms   float64 // run time
}

type period struct {
	ms, proxy, server float64
	proxyRuns         int
	runs              []run
}

func main() {
	proxy := flag.String("proxy", "conduit-proxy", "the proxy's command name")
	server := flag.String("server", "fortio", "the server's command name")
	cpu := flag.Int("cpu", 1, "the CPU to cut into busy periods")
	longest := flag.Int("longest", 8, "busy periods to list, longest first")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: busyperiods [-proxy NAME] [-server NAME] [-cpu N] TIMEHIST-FILE")
		os.Exit(2)
	}
	runs, err := parse(flag.Arg(0), *cpu)
	if err != nil {
		fmt.Fprintf(os.Stderr, "busyperiods: %v\n", err)
		os.Exit(1)
	}
	periods := cut(runs, *proxy, *server)
	fmt.Printf("CPU %d: %d busy periods\n", *cpu, len(periods))
	for _, c := range []struct {
		name string
		of   func(period) float64
	}{
		{"length", func(p period) float64 { return p.ms }},
		{*proxy, func(p period) float64 { return p.proxy }},
		{*server, func(p period) float64 { return p.server }},
		{*proxy + " runs", func(p period) float64 { return float64(p.proxyRuns) }},
	} {
		v := make([]float64, len(periods))
		sum := 0.0
		for i, p := range periods {
			v[i] = c.of(p)
			sum += v[i]
		}
		slices.Sort(v)
		fmt.Printf("%-20s p50 %.3f p90 %.3f p99 %.3f p99.9 %.3f max %.3f sum %.1f\n", c.name,
			quantile(v, 0.5), quantile(v, 0.9), quantile(v, 0.99), quantile(v, 0.999), quantile(v, 1), sum)
	}
	slices.SortFunc(periods, func(a, b period) int {
		switch {
		case a.ms > b.ms:
			return -1
		case a.ms < b.ms:
			return 1
		}
		return 0
	})
	for _, p := range periods[:min(*longest, len(periods))] {
		var parts []string
		for _, r := range p.runs {
			parts = append(parts, fmt.Sprintf("%s %.0fµs", r.task, r.ms*1000))
		}
		fmt.Printf("%.3f ms: %s\n", p.ms, strings.Join(parts, ", "))
	}
}

// parse reads cpu's runs in time order.
func parse(path string, cpu int) ([]run, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var runs []run
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		if c, _ := strconv.Atoi(m[2]); c != cpu {
			continue
		}
		ms, _ := strconv.ParseFloat(m[6], 64)
		task, _, _ := strings.Cut(m[3], "[")
		runs = append(runs, run{task, ms})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(runs) == 0 {
		return nil, fmt.Errorf("%s: no run on CPU %d; is it `perf sched timehist` output?", path, cpu)
	}
	return runs, nil
}

// cut groups the runs between idle ones; the runs before the first idle
// one are left out (their period began before the trace).
func cut(runs []run, proxy, server string) []period {
	var out []period
	var cur *period
	for _, r := range runs {
		if r.task == "<idle>" {
			if cur != nil && len(cur.runs) > 0 {
				out = append(out, *cur)
			}
			cur = &period{}
			continue
		}
		if cur == nil {
			continue
		}
		cur.ms += r.ms
		cur.runs = append(cur.runs, r)
		switch r.task {
		case proxy:
			cur.proxy += r.ms
			cur.proxyRuns++
		case server:
			cur.server += r.ms
		}
	}
	return out
}

func quantile(sorted []float64, q float64) float64 {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}
