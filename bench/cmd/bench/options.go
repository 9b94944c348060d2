package main

import (
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"time"
)

// point is one load level: a fixed request rate over a number of connections.
type point struct {
	QPS   int
	Conns int
}

func (p point) String() string { return fmt.Sprintf("%dx%d", p.QPS, p.Conns) }

type options struct {
	points    []point
	protocols []string
	systems   []string
	duration  time.Duration
	warmup    time.Duration
	reps      int
	out       string
	jsonOut   string
	repo      string
	loadCPU   string
	serverCPU string
	priority  string
	proxyRev  string
	baseRev   string
	notes     string
	args      []string // as given, for the report
}

// The full matrix of BENCHMARKS.md.
const (
	fullPoints   = "20x4,20x16,200x4,200x16,1000x4,1000x16,2000x4,2000x16"
	allProtocols = "http1,http1-post,grpc,h2,tcp"
	allSystems   = "direct,conduit,conduit-tap,conduit-tap-stalled,conduit-mtls,haproxy,gorelay,revproxy"
	// variantSystems are conduit-proxy with a library added (variants.go):
	// measured only when asked for.
	variantSystems = "conduit-grpcgo,conduit-promclient"
	// policySystems measure the cost of inbound policy and of outbound
	// routes (systems.go): only when asked for.
	policySystems = "conduit-mtls-authz50,conduit-mtls-routes,conduit-mtls-retries"
	// baseSystem is conduit-proxy built from --base-rev, run beside the
	// one under test: a change is judged side by side, in one run.
	baseSystem    = "conduit-base"
	quickPoints   = "1000x4"
	quickProtocol = "http1,grpc,tcp"
)

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	quick := fs.Bool("quick", false, "short iteration run: points "+quickPoints+", protocols "+quickProtocol+", 10s after a 2s warm-up, 3 repetitions (flags given explicitly still win)")
	points := fs.String("points", fullPoints, "comma-separated RATExCONNECTIONS load points")
	protocols := fs.String("protocols", allProtocols, "comma-separated protocols: "+allProtocols)
	systems := fs.String("systems", allSystems, "comma-separated systems: "+allSystems+", or the proxy variants "+variantSystems+", or "+policySystems+", or "+baseSystem+" (with --base-rev)")
	duration := fs.Duration("duration", 30*time.Second, "measured time per run")
	warmup := fs.Duration("warmup", 5*time.Second, "warm-up time per run, not measured")
	reps := fs.Int("reps", 3, "repetitions; the order of the systems alternates between them")
	out := fs.String("out", "RESULTS.md", "report to write")
	jsonOut := fs.String("json", "results.json", "raw samples to write (empty: none)")
	repo := fs.String("repo", "..", "root of the conduit repository (to build conduit-proxy)")
	loadCPU := fs.String("load-cpu", "0", "CPU list (taskset -c) for the load generator")
	serverCPU := fs.String("server-cpu", "1", "CPU list (taskset -c) for the server and the proxies")
	notes := fs.String("notes", "notes.md", "hand-written notes appended to the report when the file exists (read when the run ends)")
	proxyRev := fs.String("proxy-rev", "", "build conduit-proxy from this git revision of --repo (e.g. HEAD) instead of the working tree")
	baseRev := fs.String("base-rev", "", "build the system "+baseSystem+" (one hop, as conduit) from this git revision of --repo, to compare a change with it in the same run")
	priority := fs.String("priority", "fifo", "scheduling of the load generator, server and proxies: fifo (chrt -f 10, needs root), "+
		"nice (nice -n -15) or none; on a shared machine it keeps other work from dominating the tail latencies")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: bench takes only flags", fs.Arg(0))
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	if *quick {
		for name, v := range map[string]string{"points": quickPoints, "protocols": quickProtocol, "duration": "10s", "warmup": "2s"} {
			if !given[name] {
				fs.Set(name, v)
			}
		}
	}
	o := &options{duration: *duration, warmup: *warmup, reps: *reps, out: *out, jsonOut: *jsonOut, repo: *repo,
		loadCPU: *loadCPU, serverCPU: *serverCPU, priority: *priority, proxyRev: *proxyRev, baseRev: *baseRev, notes: *notes, args: args}
	var err error
	if o.points, err = parsePoints(*points); err != nil {
		return nil, err
	}
	if o.protocols, err = parseList("--protocols", *protocols, allProtocols); err != nil {
		return nil, err
	}
	if o.systems, err = parseList("--systems", *systems, allSystems+","+variantSystems+","+policySystems+","+baseSystem); err != nil {
		return nil, err
	}
	if has := slices.Contains(o.systems, baseSystem); has != (o.baseRev != "") {
		return nil, fmt.Errorf("--systems %s and --base-rev go together: --base-rev REV builds %s from REV (e.g. --base-rev HEAD~1 --systems direct,conduit,%s)", baseSystem, baseSystem, baseSystem)
	}
	if !slices.Contains(o.systems, "direct") {
		return nil, fmt.Errorf("--systems must include direct: every added figure is measured against it")
	}
	if o.priority != "fifo" && o.priority != "nice" && o.priority != "none" {
		return nil, fmt.Errorf("--priority %q: use fifo, nice or none", o.priority)
	}
	if o.reps < 1 || o.duration < time.Second || o.warmup < 0 {
		return nil, fmt.Errorf("--reps must be ≥ 1, --duration ≥ 1s and --warmup ≥ 0")
	}
	return o, nil
}

func parsePoints(s string) ([]point, error) {
	var ps []point
	for _, item := range strings.Split(s, ",") {
		q, c, ok := strings.Cut(strings.TrimSpace(item), "x")
		qps, err1 := strconv.Atoi(q)
		conns, err2 := strconv.Atoi(c)
		if !ok || err1 != nil || err2 != nil || qps < 1 || conns < 1 {
			return nil, fmt.Errorf("--points: %q is not RATExCONNECTIONS (e.g. 1000x4)", item)
		}
		ps = append(ps, point{qps, conns})
	}
	return ps, nil
}

func parseList(flagName, s, known string) ([]string, error) {
	var out []string
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if !slices.Contains(strings.Split(known, ","), item) {
			return nil, fmt.Errorf("%s: unknown %q: use some of %s", flagName, item, known)
		}
		out = append(out, item)
	}
	return out, nil
}

// estimate is an upper bound of the wall time of the plan: every run that
// can be measured, plus start-up overhead.
func (o *options) estimate() (runs int, d time.Duration) {
	for _, pname := range o.protocols {
		for _, sname := range o.systems {
			if sys := systems[sname]; sys.pending == "" && sys.supports(protocols[pname]) {
				runs += o.reps * len(o.points)
			}
		}
	}
	return runs, time.Duration(runs) * (o.duration + o.warmup + 2*time.Second)
}

// pinned is the command line that runs name with args on cpus at o's priority.
func (o *options) pinned(cpus, name string, args ...string) []string {
	cmd := []string{"taskset", "-c", cpus, name}
	switch o.priority {
	case "fifo":
		cmd = append([]string{"chrt", "-f", "10"}, cmd...)
	case "nice":
		cmd = append([]string{"nice", "-n", "-15"}, cmd...)
	}
	return append(cmd, args...)
}
