package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"
)

// binaries are the programs a run uses.
type binaries struct {
	fortio, conduitProxy, controller, tcprelay, revproxy, tapreader, haproxy string
	// variants are the proxy variants built, by system name.
	variants map[string]string
}

// benchEnv is what every run shares.
type benchEnv struct {
	opts    *options
	dir     string
	bins    binaries
	servers map[string]string // fortio server address by kind: http, grpc, tcp
	// meshFiles are the two-hop system's PKI and tokens, made on first use.
	meshFiles *meshFiles
}

// sample is one measured run of one system at one point.
type sample struct {
	Rep      int     `json:"rep"`
	Protocol string  `json:"protocol"`
	Point    string  `json:"point"`
	System   string  `json:"system"`
	P50      float64 `json:"p50_ms"`
	P90      float64 `json:"p90_ms"`
	P99      float64 `json:"p99_ms"`
	P999     float64 `json:"p999_ms"`
	Max      float64 `json:"max_ms"`
	Count    int64   `json:"count"`
	Errors   int64   `json:"errors"`
	QPS      float64 `json:"actual_qps"`
	// CPUPer1k is the proxy's CPU in vCPU per 1000 requests/s; -1 when
	// there is no proxy.
	CPUPer1k float64 `json:"cpu_vcpu_per_1000rps"`
	RSSIdle  int64   `json:"rss_idle_kb"`
	RSSAfter int64   `json:"rss_after_kb"`
	HWM      int64   `json:"vmhwm_kb"`
	PSS      int64   `json:"pss_kb"`
	// GCPerSec is the garbage collections per second of the busiest
	// measured proxy during the run (GODEBUG=gctrace=1 lines).
	GCPerSec float64 `json:"gc_per_sec"`
	Load1    float64 `json:"loadavg1"`
	Note     string  `json:"note,omitempty"`
	// TapEvents and TapDropped are the tapped systems' events received by
	// the reader and dropped by the proxy, over the warm-up and the run.
	TapEvents  int64 `json:"tap_events,omitempty"`
	TapDropped int64 `json:"tap_dropped,omitempty"`
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	opts, err := parseOptions(args, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 2
	}
	if err := runBench(ctx, opts, stdout, stderr); err != nil {
		fmt.Fprintf(stderr, "bench: %v\n", err)
		return 1
	}
	return 0
}

func runBench(ctx context.Context, opts *options, stdout, stderr io.Writer) error {
	for _, tool := range []string{"taskset", "haproxy"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is not installed: apt-get install util-linux haproxy", tool)
		}
	}
	dir, err := os.MkdirTemp("", "conduit-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	e := &benchEnv{opts: opts, dir: dir}
	runs, est := opts.estimate()
	fmt.Fprintf(stderr, "bench: %d runs of %s + %s warm-up; at most %s in all\n", runs, opts.duration, opts.warmup, est.Round(time.Minute))
	fmt.Fprintln(stderr, "bench: building fortio, conduit-proxy and the Go relays")
	var source string
	var variants []string
	for _, name := range opts.systems {
		if proxyVariants[name] != "" {
			variants = append(variants, name)
		}
	}
	if e.bins, source, err = build(ctx, opts.repo, opts.proxyRev, opts.baseRev, dir, slices.ContainsFunc(opts.systems, func(s string) bool { return strings.HasPrefix(s, "conduit-mtls") }), variants); err != nil {
		return err
	}
	server, err := e.startServer(ctx)
	if err != nil {
		return err
	}
	defer server.stop()

	started := time.Now()
	info := collectInfo(ctx, e.bins)
	info.proxySource = source
	var samples []sample
	for rep := range opts.reps {
		order := slices.Clone(opts.systems)
		if rep%2 == 1 {
			slices.Reverse(order)
		}
		for _, pname := range opts.protocols {
			proto := protocols[pname]
			for _, pt := range opts.points {
				load1 := loadAvg1()
				for _, sname := range order {
					if err := ctx.Err(); err != nil {
						return err
					}
					sys := systems[sname]
					s := sample{Rep: rep, Protocol: pname, Point: pt.String(), System: sname, CPUPer1k: -1, Load1: load1}
					switch {
					case !sys.supports(proto):
						s.Note = "n/a: does not carry " + proto.title
					case sys.pending != "":
						s.Note = sys.pending
					default:
						if err := e.measure(ctx, sys, proto, pt, &s); err != nil {
							s.Note = "failed: " + oneLine(err.Error())
						}
					}
					fmt.Fprintf(stderr, "rep %d %-10s %-8s %-12s %s\n", rep+1, pname, pt, sname, s.summary())
					samples = append(samples, s)
				}
			}
		}
	}
	info.elapsed = time.Since(started)
	info.loadEnd = readLoadAvg()
	if opts.notes != "" {
		notes, err := os.ReadFile(opts.notes)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			return err
		}
		info.notes = string(notes)
	}
	report := renderReport(opts, info, samples)
	if opts.jsonOut != "" {
		raw, _ := json.MarshalIndent(samples, "", "  ")
		if err := os.WriteFile(opts.jsonOut, append(raw, '\n'), 0o644); err != nil {
			return err
		}
	}
	if err := os.WriteFile(opts.out, []byte(report), 0o644); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s\n", opts.out)
	return nil
}

func (s sample) summary() string {
	if s.Note != "" {
		return s.Note
	}
	line := fmt.Sprintf("p50 %.3f p99 %.3f p99.9 %.3f max %.3f ms, %d errors, cpu %.3f vCPU/krps, rss %d→%d kB",
		s.P50, s.P99, s.P999, s.Max, s.Errors, s.CPUPer1k, s.RSSIdle, s.HWM)
	if s.TapEvents > 0 || s.TapDropped > 0 {
		line += fmt.Sprintf(", tap events %d read, %d dropped", s.TapEvents, s.TapDropped)
	}
	return line
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// build compiles the programs into dir. conduit-proxy comes from the working
// tree of repo, or from revision rev of it; source says which. variants are
// the proxy variant systems to build too; baseRev, when set, is the
// revision conduit-base is built from.
func build(ctx context.Context, repo, rev, baseRev, dir string, withController bool, variants []string) (b binaries, source string, err error) {
	b = binaries{
		fortio:       filepath.Join(dir, "fortio"),
		conduitProxy: filepath.Join(dir, "conduit-proxy"),
		controller:   filepath.Join(dir, "conduit-controller"),
		tcprelay:     filepath.Join(dir, "tcprelay"),
		revproxy:     filepath.Join(dir, "revproxy"),
		tapreader:    filepath.Join(dir, "tapreader"),
		variants:     map[string]string{},
	}
	if b.haproxy, err = exec.LookPath("haproxy"); err != nil {
		return b, "", err
	}
	git := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", repo}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	// export writes revision rev of repo to dir/name and returns its
	// commit.
	export := func(flagName, rev, name string) (src, sha string, err error) {
		if sha, err = git("rev-parse", "--verify", rev+"^{commit}"); err != nil {
			return "", "", fmt.Errorf("%s %q is not a commit of %s", flagName, rev, repo)
		}
		src = filepath.Join(dir, name)
		if err := os.Mkdir(src, 0o755); err != nil {
			return "", "", err
		}
		archive := fmt.Sprintf("git -C %q archive %s | tar -x -C %q", repo, sha, src)
		if out, err := exec.CommandContext(ctx, "sh", "-c", archive).CombinedOutput(); err != nil {
			return "", "", fmt.Errorf("exporting %s: %v: %s", sha, err, oneLine(string(out)))
		}
		return src, sha, nil
	}
	proxySrc := repo
	if rev != "" {
		var sha string
		if proxySrc, sha, err = export("--proxy-rev", rev, "src"); err != nil {
			return b, "", err
		}
		source = "commit " + sha
	} else if desc, err := git("describe", "--always", "--dirty"); err == nil {
		source = "working tree at " + desc
	} else {
		source = "working tree of " + repo
	}
	steps := []struct {
		dir  string
		args []string
	}{
		{".", []string{"build", "-o", b.fortio, "fortio.org/fortio"}},
		{".", []string{"build", "-o", b.tcprelay, "./cmd/tcprelay"}},
		{".", []string{"build", "-o", b.revproxy, "./cmd/revproxy"}},
		{".", []string{"build", "-o", b.tapreader, "./cmd/tapreader"}},
		{proxySrc, []string{"build", "-o", b.conduitProxy, "./cmd/conduit-proxy"}},
	}
	if withController {
		steps = append(steps, struct {
			dir  string
			args []string
		}{proxySrc, []string{"build", "-o", b.controller, "./cmd/conduit-controller"}})
	}
	if baseRev != "" {
		baseSrc, sha, err := export("--base-rev", baseRev, "base-src")
		if err != nil {
			return b, "", err
		}
		b.variants[baseSystem] = filepath.Join(dir, baseSystem)
		steps = append(steps, struct {
			dir  string
			args []string
		}{baseSrc, []string{"build", "-o", b.variants[baseSystem], "./cmd/conduit-proxy"}})
		source += "; " + baseSystem + " from the commit " + sha
	}
	for _, name := range variants {
		b.variants[name] = filepath.Join(dir, name)
		args, err := variantBuildArgs(name, proxySrc, dir, b.variants[name])
		if err != nil {
			return b, "", err
		}
		steps = append(steps, struct {
			dir  string
			args []string
		}{proxySrc, args})
	}
	for _, s := range steps {
		if err := goBuild(ctx, s.dir, s.args); err != nil {
			return b, "", err
		}
	}
	return b, source, nil
}

// goBuild runs `go build args...` in dir as goreleaser.yaml builds the
// proxy: static, trimmed, stripped.
func goBuild(ctx context.Context, dir string, args []string) error {
	args = append([]string{args[0], "-trimpath", "-ldflags=-s -w"}, args[1:]...)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	cmd.Dir = dir
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go %s (in %s): %v: %s", strings.Join(args, " "), dir, err, oneLine(string(out)))
	}
	return nil
}

// startServer runs fortio's HTTP (h2c-capable), gRPC and TCP echo servers
// pinned to the server CPU.
func (e *benchEnv) startServer(ctx context.Context) (*proc, error) {
	e.servers = map[string]string{}
	for _, kind := range []string{"http", "grpc", "tcp"} {
		a, err := freeAddr()
		if err != nil {
			return nil, err
		}
		e.servers[kind] = a
	}
	p, err := start(e.dir, nil, e.opts.pinned(e.opts.serverCPU, e.bins.fortio, "server",
		"-http-port", e.servers["http"], "-grpc-port", e.servers["grpc"], "-tcp-port", e.servers["tcp"],
		"-udp-port", "disabled", "-redirect-port", "disabled", "-ui-path", "", "-echo-debug-path", "", "-loglevel", "Warning")...)
	if err != nil {
		return nil, err
	}
	for _, a := range e.servers {
		if err := waitListening(ctx, p, a); err != nil {
			p.stop()
			return nil, fmt.Errorf("fortio server: %w", err)
		}
	}
	return p, nil
}

// measure runs one system at one point: start it, read its idle memory, warm
// up, then measure latency under load and the CPU and memory it used.
func (e *benchEnv) measure(ctx context.Context, sys system, proto protocol, pt point, s *sample) error {
	d, err := sys.start(ctx, e, proto, e.servers[proto.server])
	if err != nil {
		return err
	}
	defer d.stop()
	// The measured proxies' figures: CPU is their sum (what the request
	// path costs), memory the largest one (what one proxy needs).
	read := func() (sum procStats, err error) {
		for _, p := range d.measured {
			st, err := readProc(p.pid())
			if err != nil {
				return sum, fmt.Errorf("%s is gone: %s", p.name, p.tail())
			}
			sum.cpuTicks += st.cpuTicks
			sum.rssKB, sum.hwmKB, sum.pssKB = max(sum.rssKB, st.rssKB), max(sum.hwmKB, st.hwmKB), max(sum.pssKB, st.pssKB)
		}
		return sum, nil
	}
	if len(d.measured) > 0 {
		time.Sleep(300 * time.Millisecond) // let the runtime settle before "idle"
		idle, err := read()
		if err != nil {
			return err
		}
		s.RSSIdle = idle.rssKB
	}
	if e.opts.warmup > 0 {
		if _, err := e.load(ctx, proto, d, pt, e.opts.warmup); err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
	}
	before, err := read()
	if err != nil {
		return err
	}
	gcBefore := make([]int, len(d.measured))
	for i, p := range d.measured {
		gcBefore[i] = p.gcCount()
	}
	res, err := e.load(ctx, proto, d, pt, e.opts.duration)
	if err != nil {
		return err
	}
	res.fill(s)
	// Read before verify, whose requests (metrics, a probe) are not the
	// load's.
	var after procStats
	if len(d.measured) > 0 {
		if after, err = read(); err != nil {
			return fmt.Errorf("under load: %w", err)
		}
	}
	if d.verify != nil {
		if err := d.verify(s); err != nil {
			return err
		}
	}
	if len(d.measured) > 0 {
		cpuSec := float64(after.cpuTicks-before.cpuTicks) / userHZ
		if secs := res.ActualDuration.Seconds(); secs > 0 && res.ActualQPS > 0 {
			s.CPUPer1k = cpuSec / secs / (res.ActualQPS / 1000)
		}
		s.RSSAfter, s.HWM, s.PSS = after.rssKB, after.hwmKB, after.pssKB
		if secs := res.ActualDuration.Seconds(); secs > 0 {
			for i, p := range d.measured {
				s.GCPerSec = max(s.GCPerSec, float64(p.gcCount()-gcBefore[i])/secs)
			}
		}
	}
	return nil
}

// fortioResult is the part of fortio's JSON output the report uses.
type fortioResult struct {
	ActualQPS         float64
	ActualDuration    time.Duration
	DurationHistogram struct {
		Count       int64
		Max         float64
		Percentiles []struct{ Percentile, Value float64 }
	}
	ErrorsDurationHistogram *struct{ Count int64 }
}

func (r *fortioResult) fill(s *sample) {
	ms := func(sec float64) float64 { return math.Round(sec*1e6) / 1e3 }
	for _, p := range r.DurationHistogram.Percentiles {
		v := ms(p.Value)
		switch p.Percentile {
		case 50:
			s.P50 = v
		case 90:
			s.P90 = v
		case 99:
			s.P99 = v
		case 99.9:
			s.P999 = v
		}
	}
	s.Max = ms(r.DurationHistogram.Max)
	s.Count = r.DurationHistogram.Count
	if r.ErrorsDurationHistogram != nil {
		s.Errors = r.ErrorsDurationHistogram.Count
	}
	s.QPS = math.Round(r.ActualQPS*10) / 10
}

// load runs fortio at a fixed rate, pinned to the load generator's CPU.
func (e *benchEnv) load(ctx context.Context, proto protocol, dep *deployment, pt point, d time.Duration) (*fortioResult, error) {
	out := filepath.Join(e.dir, "fortio-"+strconv.FormatInt(time.Now().UnixNano(), 36)+".json")
	defer os.Remove(out)
	args := []string{"load",
		"-qps", strconv.Itoa(pt.QPS), "-c", strconv.Itoa(pt.Conns), "-t", d.String(),
		"-r", "0.00001", "-p", "50,90,99,99.9", "-json", out, "-allow-initial-errors", "-loglevel", "Error"}
	args = append(args, dep.loadArgs...)
	args = append(args, proto.fortioArgs(dep.addr)...)
	argv := e.opts.pinned(e.opts.loadCPU, e.bins.fortio, args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	if msg, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("fortio load: %v: %s", err, oneLine(string(msg)))
	}
	raw, err := os.ReadFile(out)
	if err != nil {
		return nil, fmt.Errorf("fortio wrote no result: %w", err)
	}
	var r fortioResult
	if err := json.Unmarshal(raw, &r); err != nil {
		return nil, fmt.Errorf("reading fortio's result: %w", err)
	}
	if r.DurationHistogram.Count == 0 {
		return nil, fmt.Errorf("fortio made no request")
	}
	return &r, nil
}

func loadAvg1() float64 {
	f := strings.Fields(readLoadAvg())
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func readLoadAvg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}
