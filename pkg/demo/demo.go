// Package demo is `conduit demo`: a live mesh on one machine with no
// cluster. It starts, as child processes on loopback ports, the controller
// in local mode (a generated trust anchor and issuer, a registry file and
// local tokens), a small bookshop application (web over HTTP/1.1 calling
// books and authors over gRPC, books failing and slow on a share of
// requests on purpose, authors as a stable v1 and a canary v2, and a
// traffic generator), each app behind its own conduit-proxy with mutual
// TLS between them, and outbound routes that retry books's failures, time
// out its slow lookups and split authors's calls 90/10 between v1 and v2.
// Stopping the demo stops every child and removes every file it wrote.
package demo

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/conduitmesh/conduit/pkg/controller/discovery/local"
	"github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/pki"
)

// Binary names the demo runs besides itself.
const (
	ControllerBinary = "conduit-controller"
	ProxyBinary      = "conduit-proxy"
)

// Namespace is where the demo's workloads live, as far as the controller,
// stats and tap are concerned.
const Namespace = "demo"

const (
	trustDomain = "cluster.local"
	servicePort = 8080
	// The controller runs as if in namespace "conduit", with the service
	// account a cluster install gives it.
	controllerNamespace = "conduit"
	controllerIdentity  = "spiffe://" + trustDomain + "/ns/" + controllerNamespace + "/sa/conduit-controller"
)

// Options configure Run.
type Options struct {
	// Duration stops the demo after this long; 0 runs until ctx ends.
	Duration time.Duration
	// FailureRate is the share of books lookups that fail on purpose.
	FailureRate float64
	// SlowRate is the share of books lookups that are slow on purpose
	// (SlowDelay, beyond books's route timeout).
	SlowRate float64
	// RPS is the traffic generator's rate.
	RPS float64
	// Output is "table", "json" or "yaml": how the running demo is described on Out.
	Output string
	// Self is the conduit binary, re-executed as `conduit demo app`;
	// default os.Executable().
	Self string
	// BinDir, when set, is where conduit-controller and conduit-proxy are;
	// default: next to Self, then $PATH.
	BinDir string
	// KeepDir keeps the working directory (logs, PKI) instead of removing it.
	KeepDir bool
	// ReportEvery is how often the traffic summary is printed; default 10 s.
	ReportEvery time.Duration
	// ControllerRestartDelay is how long a dead controller stays down
	// before the demo restarts it; default 5 s.
	ControllerRestartDelay time.Duration
	// ProbeEvery is how often every app is probed through its proxy, as
	// the kubelet would; default DefaultProbeEvery.
	ProbeEvery time.Duration
	// IdentityLifetime is the lifetime of the proxies' certificates; 0
	// keeps the controller's default (24 h).
	IdentityLifetime time.Duration

	Out, ErrOut io.Writer
	Log         *slog.Logger
}

// ErrMissingBinary means conduit-controller or conduit-proxy was not found.
var ErrMissingBinary = errors.New("missing binary")

// Run starts the demo and blocks until ctx ends, Duration passes, or a
// child other than the controller fails; it then stops every child (the
// controller is restarted if it dies, as Kubernetes would).
func Run(ctx context.Context, o Options) (err error) {
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.ErrOut == nil {
		o.ErrOut = io.Discard
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Output == "" {
		o.Output = "table"
	}
	if o.Output != "table" && o.Output != "json" && o.Output != "yaml" {
		return fmt.Errorf("-o %q is not an output format of this command: use table, json or yaml", o.Output)
	}
	if o.FailureRate < 0 || o.FailureRate > 1 {
		return fmt.Errorf("--failure-rate %v: want a share between 0 and 1 (e.g. 0.05)", o.FailureRate)
	}
	if o.SlowRate < 0 || o.SlowRate > 1 {
		return fmt.Errorf("--slow-rate %v: want a share between 0 and 1 (e.g. 0.002)", o.SlowRate)
	}
	if o.RPS <= 0 || o.RPS > 500 {
		return fmt.Errorf("--rps %v: want a rate above 0 and at most 500 requests per second", o.RPS)
	}
	if o.ControllerRestartDelay <= 0 {
		o.ControllerRestartDelay = 5 * time.Second
	}
	if o.ProbeEvery <= 0 {
		o.ProbeEvery = DefaultProbeEvery
	}
	if o.Duration < 0 {
		return fmt.Errorf("--duration %v: want a positive duration, or 0 to run until interrupted", o.Duration)
	}
	bins, err := findBinaries(o)
	if err != nil {
		return err
	}

	dir, err := os.MkdirTemp("", "conduit-demo-")
	if err != nil {
		return fmt.Errorf("creating the demo's working directory: %w", err)
	}
	if !o.KeepDir {
		defer os.RemoveAll(dir)
	}
	d := &demo{opts: o, bins: bins, dir: dir, exited: make(chan *child, 64),
		statsInterval: controllerHasFlag(bins.controller, "stats-interval")}
	defer d.stopAll()
	if err := d.prepare(); err != nil {
		return err
	}
	if o.Duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, o.Duration)
		defer cancel()
	}
	if err := d.startAll(ctx); err != nil {
		if ctx.Err() != nil {
			return nil // interrupted while starting
		}
		return err
	}
	if err := d.printInfo(); err != nil {
		return err
	}
	probeCtx, stopProbes := context.WithCancel(ctx)
	probed := make(chan struct{})
	go func() { defer close(probed); d.probeLoop(probeCtx, o.ProbeEvery) }()
	defer func() { stopProbes(); <-probed }()
	return d.supervise(ctx)
}

// binaries are the executables the demo runs.
type binaries struct {
	self, controller, proxy string
}

func findBinaries(o Options) (binaries, error) {
	b := binaries{self: o.Self}
	if b.self == "" {
		exe, err := os.Executable()
		if err != nil {
			return b, fmt.Errorf("locating the conduit binary: %w", err)
		}
		b.self = exe
	}
	find := func(name string) (string, error) {
		dirs := []string{o.BinDir}
		if o.BinDir == "" {
			dirs = []string{filepath.Dir(b.self)}
		}
		for _, dir := range dirs {
			p := filepath.Join(dir, name+exeSuffix())
			if fi, err := os.Stat(p); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
				return p, nil
			}
		}
		if o.BinDir == "" {
			if p, err := exec.LookPath(name); err == nil {
				return p, nil
			}
		}
		where := "next to " + b.self + " or on PATH"
		if o.BinDir != "" {
			where = "in " + o.BinDir
		}
		return "", fmt.Errorf("%w: conduit demo needs %s %s: run `make build` (it builds conduit, conduit-controller and conduit-proxy into bin/), then ./bin/conduit demo", ErrMissingBinary, name, where)
	}
	var err error
	if b.controller, err = find(ControllerBinary); err != nil {
		return b, err
	}
	if b.proxy, err = find(ProxyBinary); err != nil {
		return b, err
	}
	return b, nil
}

// workload is one demo deployment: its app and its proxy.
type workload struct {
	// name is the deployment's (and its own Service's); role the app it
	// runs, also its service account; version the app's (authors).
	name, role, version           string
	app, inbound, outbound, admin string
	identity, tokenFile           string
	appProc, proxyProc            *child
}

// deployments are the demo's workloads in start order (servers before
// their clients): authors runs as two, a stable v1 and a canary v2.
var deployments = []struct{ name, role, version string }{
	{"authors-v1", RoleAuthors, stableAuthors},
	{"authors-v2", RoleAuthors, "v2"},
	{RoleBooks, RoleBooks, ""},
	{RoleWeb, RoleWeb, ""},
	{RoleTraffic, RoleTraffic, ""},
}

// pod is the workload's pod name, as the registry and its proxy know it.
func (w *workload) pod() string { return w.name + "-0" }

// demo is one run's state.
type demo struct {
	opts Options
	bins binaries
	dir  string

	controllerGRPC, controllerAdmin string
	anchors                         string
	workloads                       []*workload
	controller                      *child
	exited                          chan *child
	statsInterval                   bool // the controller has --stats-interval
}

// prepare picks ports and writes the PKI, tokens and registry.
func (d *demo) prepare() error {
	ports, err := freePorts(2 + 4*len(deployments))
	if err != nil {
		return err
	}
	d.controllerGRPC, d.controllerAdmin = ports[0], ports[1]
	ports = ports[2:]

	pki, err := pki.Generate(time.Now(), trustDomain, 7*24*time.Hour, 7*24*time.Hour)
	if err != nil {
		return fmt.Errorf("generating the demo's trust anchor and issuer: %w", err)
	}
	pkiDir := filepath.Join(d.dir, "pki")
	if err := pki.WriteDir(pkiDir); err != nil {
		return fmt.Errorf("writing the demo's PKI: %w", err)
	}
	d.anchors = filepath.Join(pkiDir, "ca.crt")
	if err := os.MkdirAll(filepath.Join(d.dir, "logs"), 0o700); err != nil {
		return err
	}

	var tokens identity.LocalTokens
	var reg local.Registry
	for i, dep := range deployments {
		w := &workload{
			name:     dep.name,
			role:     dep.role,
			version:  dep.version,
			app:      ports[4*i],
			inbound:  ports[4*i+1],
			outbound: ports[4*i+2],
			admin:    ports[4*i+3],
			identity: fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", trustDomain, Namespace, dep.role),
		}
		token, err := randomToken()
		if err != nil {
			return err
		}
		w.tokenFile = filepath.Join(d.dir, w.name+".token")
		if err := os.WriteFile(w.tokenFile, []byte(token+"\n"), 0o600); err != nil {
			return fmt.Errorf("writing %s's token: %w", w.name, err)
		}
		tokens.Tokens = append(tokens.Tokens, identity.LocalToken{Token: token, Identity: w.identity})
		_, appPortNumber, err := net.SplitHostPort(w.app)
		if err != nil {
			return err
		}
		portNumber, err := strconv.ParseUint(appPortNumber, 10, 16)
		if err != nil {
			return fmt.Errorf("app address %s: %w", w.app, err)
		}
		labels := map[string]string{"deployment": w.name, "serviceaccount": w.role, "service": strings.Join(servicesOf(w), ",")}
		if w.version != "" {
			labels["app"], labels["version"] = w.role, w.version
		}
		reg.Proxies = append(reg.Proxies, local.Proxy{
			Namespace: Namespace, Pod: w.pod(), AdminAddress: w.admin, Identity: w.identity,
			Labels: labels,
			// The port the proxy forwards to, named as the pod would:
			// the policy's Server selects books's by name.
			Ports: []local.Port{{Name: appPort(w.role), Port: uint16(portNumber)}},
		})
		d.workloads = append(d.workloads, w)
	}
	reg.Services = services(d.workloads)
	if err := identity.WriteLocalTokens(filepath.Join(d.dir, "tokens.yaml"), tokens); err != nil {
		return err
	}
	reg.Namespaces = []local.Namespace{{Name: Namespace}}
	if reg.Policies, err = policies(); err != nil {
		return err
	}
	routes, err := outboundRoutes()
	if err != nil {
		return err
	}
	reg.Policies = append(reg.Policies, routes...)
	return local.WriteFile(filepath.Join(d.dir, "registry.yaml"), reg)
}

// services are the registry's Services: one per deployment (authors-v1
// and authors-v2 too, the backends of authors's split), and authors, of
// the stable authors-v1 only: a canary gets traffic from the split alone,
// so without the route (or before a proxy has it) authors is v1.
func services(workloads []*workload) []local.Service {
	names := []string{RoleAuthors}
	for _, w := range workloads {
		names = append(names, w.name)
	}
	var out []local.Service
	for _, name := range names {
		svc := local.Service{Name: name, Namespace: Namespace, Port: servicePort, Endpoints: []local.Endpoint{}}
		for _, w := range workloads {
			if slices.Contains(servicesOf(w), name) {
				svc.Endpoints = append(svc.Endpoints, local.Endpoint{Address: w.inbound, Identity: w.identity,
					Labels: map[string]string{"deployment": w.name, "pod": w.pod(), "serviceaccount": w.role}})
			}
		}
		out = append(out, svc)
	}
	return out
}

// servicesOf names the Services a workload's pod serves: its own, and
// authors for the stable authors.
func servicesOf(w *workload) []string {
	if w.role == RoleAuthors && w.version == stableAuthors {
		return []string{RoleAuthors, w.name}
	}
	return []string{w.name}
}

func randomToken() (string, error) {
	b := make([]byte, 24)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("generating a token: %w", err)
	}
	return hex.EncodeToString(b), nil
}

// freePorts reserves n distinct loopback ports and releases them for the
// children to bind.
func freePorts(n int) ([]string, error) {
	var addrs []string
	var lns []net.Listener
	defer func() {
		for _, l := range lns {
			l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("picking a free loopback port: %w", err)
		}
		lns = append(lns, l)
		addrs = append(addrs, l.Addr().String())
	}
	return addrs, nil
}

func (d *demo) newController() *child {
	c := &child{
		name: "conduit-controller",
		path: d.bins.controller,
		args: []string{
			"--discovery", "local",
			"--registry-file", filepath.Join(d.dir, "registry.yaml"),
			"--identity-issuer-dir", filepath.Join(d.dir, "pki"),
			"--local-tokens-file", filepath.Join(d.dir, "tokens.yaml"),
			"--trust-domain", trustDomain,
			"--controller-namespace", controllerNamespace,
			"--grpc-addr", d.controllerGRPC,
			"--admin-addr", d.controllerAdmin,
		},
		logPath: filepath.Join(d.dir, "logs", "controller.log"),
	}
	if d.opts.IdentityLifetime > 0 {
		c.args = append(c.args, "--identity-lifetime", d.opts.IdentityLifetime.String())
	}
	if d.statsInterval {
		// Two scrapes make a rate: scrape often so `conduit stat` has
		// numbers within seconds.
		c.args = append(c.args, "--stats-interval", "2s")
	}
	return c
}

// controllerHasFlag reports whether the controller binary accepts a flag
// (its -h output lists it), so the demo can use newer flags when present.
func controllerHasFlag(path, name string) bool {
	out, _ := exec.Command(path, "-h").CombinedOutput()
	return strings.Contains(string(out), "-"+name+" ")
}

// startAll starts the controller, then every proxy and app, and waits
// until each is ready.
func (d *demo) startAll(ctx context.Context) error {
	d.controller = d.newController()
	if err := d.controller.start(d.exited); err != nil {
		return err
	}
	if err := d.waitReady(ctx, d.controller, "http://"+d.controllerAdmin+"/ready"); err != nil {
		return err
	}
	for _, w := range d.workloads {
		w.proxyProc = &child{
			name: "conduit-proxy (" + w.name + ")",
			path: d.bins.proxy,
			args: []string{
				"run",
				"--inbound-listen", w.inbound,
				"--outbound-listen", w.outbound,
				"--admin-listen", w.admin,
				"--inbound-target", w.app,
				"--controller-addr", d.controllerGRPC,
				"--identity-name", w.identity,
				"--identity-token-file", w.tokenFile,
				"--trust-anchors-file", d.anchors,
				"--pod-namespace", Namespace,
				// The proxy enforces its pod's inbound policy, which the
				// controller computes from the registry.
				"--pod-name", w.pod(),
				// As the injector does: the controller connection is TLS
				// verified against this identity, and only it may tap.
				"--controller-identity", controllerIdentity,
				// Generous: a laptop running a build must not fail the
				// demo's handshakes (the default, 1s, covers dial + mTLS).
				"--connect-timeout", "5s",
			},
			logPath: filepath.Join(d.dir, "logs", w.name+"-proxy.log"),
		}
		if err := w.proxyProc.start(d.exited); err != nil {
			return err
		}
	}
	for _, w := range d.workloads {
		if err := d.waitReady(ctx, w.proxyProc, "http://"+w.admin+"/ready"); err != nil {
			return err
		}
	}
	for _, w := range d.workloads {
		args := []string{"demo", "app",
			"--role", w.role,
			"--listen", w.app,
			"--outbound", w.outbound,
			"--namespace", Namespace,
			"--service-port", strconv.Itoa(servicePort),
		}
		var lines func(string)
		switch w.role {
		case RoleAuthors:
			args = append(args, "--app-version", w.version)
		case RoleBooks:
			args = append(args, "--failure-rate", strconv.FormatFloat(d.opts.FailureRate, 'f', -1, 64),
				"--slow-rate", strconv.FormatFloat(d.opts.SlowRate, 'f', -1, 64), "--slow-delay", SlowDelay.String())
		case RoleTraffic:
			args = append(args, "--rps", strconv.FormatFloat(d.opts.RPS, 'f', -1, 64),
				"--direct-share", strconv.FormatFloat(DirectShare, 'f', -1, 64))
			if d.opts.ReportEvery > 0 {
				args = append(args, "--report-every", d.opts.ReportEvery.String())
			}
			errOut := d.opts.ErrOut
			lines = func(s string) { fmt.Fprintln(errOut, s) }
		}
		w.appProc = &child{
			name:    "demo app " + w.name,
			path:    d.bins.self,
			args:    args,
			logPath: filepath.Join(d.dir, "logs", w.name+".log"),
			lines:   lines,
		}
		if err := w.appProc.start(d.exited); err != nil {
			return err
		}
		if w.role != RoleTraffic {
			if err := d.waitListening(ctx, w.appProc, w.app); err != nil {
				return err
			}
		}
	}
	return nil
}

const startTimeout = 30 * time.Second

// waitReady polls url until it answers 200, the child exits, or the
// start timeout passes.
func (d *demo) waitReady(ctx context.Context, c *child, url string) error {
	client := &http.Client{Timeout: time.Second}
	return d.poll(ctx, c, url, func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
}

func (d *demo) waitListening(ctx context.Context, c *child, addr string) error {
	return d.poll(ctx, c, addr, func() bool {
		conn, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
}

func (d *demo) poll(ctx context.Context, c *child, what string, ok func() bool) error {
	deadline := time.Now().Add(startTimeout)
	for !ok() {
		select {
		case <-c.done:
			return c.exitError()
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			msg := fmt.Sprintf("%s is not ready at %s after %s", c.name, what, startTimeout)
			if t := c.tail(8); t != "" {
				msg += "; its last log lines:\n" + indent(t)
			}
			return errors.New(msg)
		}
	}
	return nil
}

// supervise waits for the end, restarting the controller if it dies.
func (d *demo) supervise(ctx context.Context) error {
	var restart <-chan time.Time
	for {
		select {
		case <-ctx.Done():
			return nil
		case c := <-d.exited:
			if c != d.controller {
				return c.exitError()
			}
			fmt.Fprintf(d.opts.ErrOut, "conduit demo: the controller exited (%v); proxies keep serving with what they know; restarting it in %s\n", c.err, d.opts.ControllerRestartDelay)
			restart = time.After(d.opts.ControllerRestartDelay)
		case <-restart:
			restart = nil
			d.controller = d.newController()
			if err := d.controller.start(d.exited); err != nil {
				return err
			}
			fmt.Fprintf(d.opts.ErrOut, "conduit demo: controller restarted (pid %d)\n", d.controller.cmd.Process.Pid)
		}
	}
}

// stopAll stops the traffic first, then the apps, the proxies and the
// controller; each tier's processes get a few seconds to exit (in
// parallel) before they are killed.
func (d *demo) stopAll() {
	var traffic, apps, proxies []*child
	for _, w := range d.workloads {
		if w.role == RoleTraffic {
			traffic = append(traffic, w.appProc)
		} else {
			apps = append(apps, w.appProc)
		}
		proxies = append(proxies, w.proxyProc)
	}
	for _, tier := range [][]*child{traffic, apps, proxies, {d.controller}} {
		var wg sync.WaitGroup
		for _, c := range tier {
			if c == nil {
				continue
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				c.stop(5 * time.Second)
			}()
		}
		wg.Wait()
	}
}
