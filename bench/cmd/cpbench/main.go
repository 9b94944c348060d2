// Command cpbench measures conduit-controller at scale: the real controller
// binary in Kubernetes mode against a real kube-apiserver, etcd,
// kube-controller-manager and kwok (integration/cluster), with simulated
// proxies as lightweight gRPC clients on loopback. It measures
//
//   - endpoint-change fan-out: N proxies watch one service through
//     Destination.Get; its EndpointSlice is rewritten several times and each
//     proxy's receipt of each change is timed from the write;
//   - the controller's RSS and CPU (from /proc) with N and M proxies
//     connected and thousands of kwok pods behind services, i.e. memory per
//     proxy, and its CPU while the pods arrive;
//   - certificate issuance: proxies calling Identity.Certify with real
//     service-account tokens (TokenReview);
//   - stat: meshed pods on loopback addresses whose /metrics one process
//     serves; the controller scrapes them; the time of stat queries and the
//     controller's CPU and memory while it scrapes.
//
// It writes a markdown report (RESULTS-controlplane.md) with the command
// that produced it. -short runs every phase at small sizes (the smoke test).
//
//	cd bench && nice -n 19 go run ./cmd/cpbench -controller-rev HEAD
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/conduitmesh/conduit/integration/cluster"
)

func main() {
	o, err := parseOptions(os.Args[1:], os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpbench:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	r, err := run(ctx, o, os.Stderr)
	if err == nil && o.out != "" {
		err = os.WriteFile(o.out, []byte(report(r)), 0o644)
	}
	if err == nil {
		err = r.stats.checkErr // reported, and a failure
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "cpbench:", err)
		os.Exit(1)
	}
	fmt.Print(summary(r))
}

// state is the controller at rest in one configuration: its usage at the
// end of a quiet window and its CPU use over the window.
type state struct {
	label          string
	proxies, pods  int
	u              usage
	cpuCores       float64 // CPU seconds per second over the window
	quietFor       time.Duration
	connectTook    time.Duration // connecting the proxies added in this state
	connectedAdded int
}

// podsPhase is the scale pods' arrival.
type podsPhase struct {
	pods, services     int
	created, converged time.Duration // from the first create request
	published          time.Duration // every endpoint ready in the API's EndpointSlices (0: not seen)
	cpu                time.Duration // the controller's, until converged
	components         map[string]time.Duration
	before, after      usage
}

type results struct {
	o                    options
	started              time.Time
	took, clusterUp      time.Duration
	source, goVersion    string
	loadStart, loadEnd   string
	kernel               string
	states               []state
	fanouts              []fanoutResult
	pods                 podsPhase
	identity             identityResult
	identityComponentCPU map[string]time.Duration
	stats                statsResult
	benchCPU             time.Duration
	final                usage
}

func logf(w io.Writer, start time.Time, format string, args ...any) {
	fmt.Fprintf(w, "cpbench %6.1fs: %s\n", time.Since(start).Seconds(), fmt.Sprintf(format, args...))
}

func run(ctx context.Context, o options, logw io.Writer) (*results, error) {
	r := &results{o: o, started: time.Now(), goVersion: runtime.Version(), loadStart: loadavg(), kernel: kernel()}
	say := func(format string, args ...any) { logf(logw, r.started, format, args...) }
	selfStart, _ := readUsage(os.Getpid())
	dir, err := os.MkdirTemp("", "cpbench-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)

	say("building conduit-controller")
	bin, source, err := buildController(ctx, o.repo, o.controllerRev, dir)
	if err != nil {
		return nil, err
	}
	r.source = source
	say("starting the cluster (etcd, kube-apiserver, kube-controller-manager, kwok)")
	t := time.Now()
	c, err := cluster.Start(ctx, cluster.Options{Log: prefixed(logw, "  ")})
	if err != nil {
		return nil, err
	}
	defer c.Stop() //nolint:errcheck // best effort at the end
	r.clusterUp = time.Since(t)
	// The bench's own client: pods are created as fast as the API server
	// takes them.
	rc := rest.CopyConfig(c.RESTConfig)
	rc.QPS, rc.Burst = 2000, 4000
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, err
	}
	if err := setUpObjects(ctx, c, o); err != nil {
		return nil, err
	}
	say("starting conduit-controller (%s)", source)
	ctrl, err := startController(ctx, bin, dir, c.Kubeconfig, o.statsInterval)
	if err != nil {
		return nil, err
	}
	defer ctrl.stop()
	quiet := 5 * time.Second
	if o.short {
		quiet = 2 * time.Second
	}
	measure := func(label string, proxies, pods int) error {
		st, err := quietState(ctx, ctrl, quiet)
		if err != nil {
			return err
		}
		st.label, st.proxies, st.pods = label, proxies, pods
		r.states = append(r.states, st)
		say("%s: RSS %.1f MB, heap %.1f MB, %d goroutines, %.3f cores", label, mb(st.u.rssKB), st.u.heapInuse/1e6, int(st.u.goroutines), st.cpuCores)
		return nil
	}
	if err := measure("ready, no proxies", 0, 0); err != nil {
		return nil, err
	}

	var tlsConf = proxyTLS(ctrl)
	if !o.tls {
		tlsConf = nil
	}
	f := newFleet(ctrl.grpcAddr, tlsConf, o)
	defer f.close()
	grow := func(n, pods int) error {
		from := len(f.proxies)
		say("connecting proxies %d..%d", from+1, n)
		t := time.Now()
		if err := f.grow(ctx, n, 64); err != nil {
			return err
		}
		took := time.Since(t)
		if err := measure(fmt.Sprintf("%d proxies, %d pods", n, pods), n, pods); err != nil {
			return err
		}
		r.states[len(r.states)-1].connectTook, r.states[len(r.states)-1].connectedAdded = took, n-from
		return f.check()
	}
	fanout := func(base, pods int) error {
		say("fan-out: %d EndpointSlice writes to %d watching proxies", o.changes, len(f.proxies))
		fr, err := runFanout(ctx, f, ctrl, client, o, base, pods)
		if err != nil {
			return err
		}
		r.fanouts = append(r.fanouts, fr)
		p99, worst := fr.over(func(c changeResult) time.Duration { return c.p99 })
		say("fan-out to %d proxies: p99 over proxies %s (median of changes), worst %s; %d missed", len(f.proxies), ms(p99), ms(worst), fr.missing())
		return nil
	}

	// 1. Fan-out at the first size, before the pods exist.
	if err := grow(o.proxies[0], 0); err != nil {
		return nil, err
	}
	if err := fanout(0, 0); err != nil {
		return nil, err
	}

	// 2. The pods arrive while the proxies watch.
	if err := scalePods(ctx, r, c, client, ctrl, f, o, say); err != nil {
		return nil, err
	}
	if err := measure(fmt.Sprintf("%d proxies, %d pods", len(f.proxies), o.pods), len(f.proxies), o.pods); err != nil {
		return nil, err
	}
	for _, n := range o.proxies[1:] {
		if err := grow(n, o.pods); err != nil {
			return nil, err
		}
	}
	if err := fanout(o.changes, o.pods); err != nil {
		return nil, err
	}

	// 3. Certificates.
	say("identity: %d proxies requesting certificates for %s", o.identityConcurrency, o.identityDuration)
	tokens, err := identityTokens(ctx, client, o.identityAccounts)
	if err != nil {
		return nil, err
	}
	compBefore := componentCPU(c)
	if r.identity, err = runIdentity(ctx, f, ctrl, tokens, o); err != nil {
		return nil, err
	}
	r.identityComponentCPU = diffCPU(compBefore, componentCPU(c))
	say("identity: %d certificates in %s (%.1f/s), errors %v", r.identity.ok, r.identity.elapsed.Round(time.Millisecond), r.identity.rate(), r.identity.errors)

	// 4. Scraping and stat.
	say("stats: idle window of %d scrape intervals before any proxy is scrapable", 2)
	idle, err := quietState(ctx, ctrl, 2*o.statsInterval)
	if err != nil {
		return nil, err
	}
	farm := newMetricsFarm()
	defer farm.close()
	farm.traffic()
	// kwok hands out the node's addresses in order from the first: serve
	// them before the pods exist, so the first scrapes find a proxy.
	var predicted []netip.Addr
	for a, i := o.statsCIDR.Addr().Next(), 0; i < o.statsProxies; a, i = a.Next(), i+1 {
		predicted = append(predicted, a)
	}
	if err := farm.listen(predicted); err != nil {
		return nil, err
	}
	say("stats: creating %d meshed pods on loopback addresses", o.statsProxies)
	created := time.Now()
	if _, err := createPods(ctx, client, o.statsProxies, o.createConcurrency, statsPod, nil); err != nil {
		return nil, err
	}
	addrs, err := waitRunning(ctx, client, o.statsProxies, 3*time.Minute)
	if err != nil {
		return nil, err
	}
	var got []netip.Addr
	for _, a := range addrs {
		if !o.statsCIDR.Contains(a) {
			return nil, fmt.Errorf("a pod on %s got address %s, outside %s", loopbackNode, a, o.statsCIDR)
		}
		got = append(got, a)
	}
	if err := farm.listen(got); err != nil {
		return nil, err
	}
	say("stats: waiting for 2 scrapes of every proxy, then %d scrape passes and the queries", o.statsCycles)
	if r.stats, err = measureStats(ctx, farm, ctrl, addrs, created, o, idle.cpuCores); err != nil {
		return nil, err
	}
	if r.final, err = ctrl.sample(); err != nil {
		return nil, err
	}
	if err := f.check(); err != nil {
		return nil, err
	}
	selfEnd, _ := readUsage(os.Getpid())
	r.benchCPU = selfEnd.cpu - selfStart.cpu
	r.took, r.loadEnd = time.Since(r.started), loadavg()
	say("done")
	return r, nil
}

// scalePods creates the pods across the services while the proxies watch,
// and waits until the first proxy of every service has all its endpoints.
func scalePods(ctx context.Context, r *results, c *cluster.Cluster, client kubernetes.Interface, ctrl *controllerProc, f *fleet, o options, say func(string, ...any)) error {
	p := &r.pods
	p.pods, p.services = o.pods, o.services
	var err error
	if p.before, err = ctrl.sample(); err != nil {
		return err
	}
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	sw, err := watchSlices(wctx, client, o.pods)
	if err != nil {
		return err
	}
	comp := componentCPU(c)
	say("creating %d pods behind %d services in %d namespaces, %d at a time", o.pods, o.services, o.namespaces, o.createConcurrency)
	start := time.Now()
	p.created, err = createPods(ctx, client, o.pods, o.createConcurrency, func(k int) *corev1.Pod {
		return scalePod(o, k%o.services, k/o.services)
	}, func(done int) { say("  %d pods created", done) })
	if err != nil {
		return err
	}
	say("%d pods created in %s; waiting until the proxies have every endpoint", o.pods, p.created.Round(time.Millisecond))
	// Pod k belongs to service k%services.
	want := func(svc int) int { return o.pods/o.services + min(1, max(0, o.pods%o.services-svc)) }
	for {
		lowest, complete := f.endpointsSeen(want)
		if complete == o.services {
			break
		}
		if time.Since(start) > 10*time.Minute {
			return fmt.Errorf("after 10 minutes %d of %d services have all endpoints at their proxies (the fewest: %d of about %d)", complete, o.services, lowest, o.pods/o.services)
		}
		if err := ctrl.alive(); err != nil {
			return err
		}
		if err := f.check(); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	p.converged = time.Since(start)
	if at := sw.complete(); !at.IsZero() {
		p.published = at.Sub(start)
	}
	if p.after, err = ctrl.sample(); err != nil {
		return err
	}
	p.cpu = p.after.cpu - p.before.cpu
	p.components = diffCPU(comp, componentCPU(c))
	say("every proxy has its endpoints %s after the first pod was created, the EndpointSlices had them after %s (controller CPU %s)", p.converged.Round(time.Millisecond), p.published.Round(time.Millisecond), p.cpu)
	return nil
}

// quietState measures the controller over a window in which the bench
// does nothing.
func quietState(ctx context.Context, c *controllerProc, window time.Duration) (state, error) {
	u0, err := c.sample()
	if err != nil {
		return state{}, err
	}
	select {
	case <-ctx.Done():
		return state{}, ctx.Err()
	case <-time.After(window):
	}
	u1, err := c.sample()
	if err != nil {
		return state{}, err
	}
	return state{u: u1, quietFor: u1.at.Sub(u0.at), cpuCores: (u1.cpu - u0.cpu).Seconds() / u1.at.Sub(u0.at).Seconds()}, nil
}

// componentCPU is the CPU used so far by each process of the cluster.
func componentCPU(c *cluster.Cluster) map[string]time.Duration {
	out := map[string]time.Duration{}
	for name, pid := range c.PIDs() {
		if u, err := readUsage(pid); err == nil {
			out[name] = u.cpu
		}
	}
	return out
}

func diffCPU(before, after map[string]time.Duration) map[string]time.Duration {
	out := map[string]time.Duration{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return strings.TrimSpace(string(b))
}

func mb(kb int64) float64 { return float64(kb) / 1024 }

func ms(d time.Duration) string { return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond)) }

// prefixed indents the harness's log lines.
func prefixed(w io.Writer, prefix string) io.Writer {
	return writerFunc(func(p []byte) (int, error) {
		lines := strings.SplitAfter(string(p), "\n")
		var b strings.Builder
		for _, l := range lines {
			if l != "" {
				b.WriteString(prefix + l)
			}
		}
		_, err := io.WriteString(w, b.String())
		return len(p), err
	})
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }
