package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// options are the bench's sizes and knobs; see parseOptions for the flags.
type options struct {
	short bool

	// proxies are the numbers of simulated proxies measured, ascending;
	// the first is the fan-out size, the last is also measured for fan-out
	// once the pods exist.
	proxies []int
	// pods are spread evenly over services, which are spread over
	// namespaces; each simulated proxy watches the hot service and one of
	// these.
	pods, services, namespaces int
	// changes is the number of EndpointSlice writes per fan-out run;
	// endpoints the hot service's endpoints besides the one each change
	// replaces.
	changes, endpoints int

	statsProxies  int           // meshed pods with a loopback address serving /metrics
	statsCIDR     netip.Prefix  // the loopback node's pod CIDR
	statsInterval time.Duration // the controller's --stats-interval
	statsCycles   int           // scrape cycles in the measured window
	queryReps     int           // repetitions of each stat query

	identityDuration    time.Duration
	identityConcurrency int
	identityAccounts    int

	createConcurrency int   // concurrent pod creations
	maxRSSKB          int64 // the stats phase stops waiting when the controller's RSS passes this
	tls               bool

	controllerRev string // build the controller from this revision of repo
	repo          string
	out           string
	timeout       time.Duration
	command       string // as typed, for the report
}

func defaultOptions() options {
	return options{
		proxies: []int{1000, 5000}, pods: 10000, services: 100, namespaces: 10,
		changes: 20, endpoints: 10,
		statsProxies: 1000, statsCIDR: netip.MustParsePrefix("127.1.0.0/16"), statsInterval: 10 * time.Second,
		statsCycles: 2, queryReps: 10,
		identityDuration: 15 * time.Second, identityConcurrency: 32, identityAccounts: 20,
		createConcurrency: 24, maxRSSKB: 8 << 20, tls: true, repo: "..", out: "RESULTS-controlplane.md", timeout: 20 * time.Minute,
	}
}

// shortOptions is -short: every phase at a size that fits a CI smoke test.
func shortOptions(o options) options {
	o.short = true
	o.proxies = []int{100, 200}
	o.pods, o.services, o.namespaces = 200, 10, 2
	o.changes, o.endpoints = 5, 5
	o.statsProxies, o.statsInterval, o.statsCycles, o.queryReps = 50, 2*time.Second, 2, 3
	o.identityDuration, o.identityConcurrency, o.identityAccounts = 3*time.Second, 8, 4
	o.timeout = 3 * time.Minute
	return o
}

func parseOptions(args []string, stderr io.Writer) (options, error) {
	o := defaultOptions()
	// -short is the base the explicit sizes override, whatever their order.
	for _, a := range args {
		if a == "-short" || a == "--short" || a == "-short=true" || a == "--short=true" {
			o = shortOptions(o)
		}
	}
	fs := flag.NewFlagSet("cpbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "cpbench measures conduit-controller at scale against a real kube-apiserver with kwok pods:\n"+
			"endpoint fan-out to watching proxies, memory and CPU per proxy, certificate issuance, and stat over scraped proxies.\n\nFlags:")
		fs.PrintDefaults()
	}
	short := fs.Bool("short", false, "a smoke run of every phase at small sizes (100/200 proxies, 200 pods, 50 scraped proxies, 2 s scrape interval) that the other flags override")
	proxies := fs.String("proxies", joinInts(o.proxies), "simulated proxy counts, ascending: the first is the fan-out size; the last is measured for fan-out again after the pods exist")
	fs.IntVar(&o.pods, "pods", o.pods, "kwok pods behind the services")
	fs.IntVar(&o.services, "services", o.services, "services the pods are spread over")
	fs.IntVar(&o.namespaces, "namespaces", o.namespaces, "namespaces the services are spread over")
	fs.IntVar(&o.changes, "changes", o.changes, "EndpointSlice writes per fan-out run")
	fs.IntVar(&o.endpoints, "endpoints", o.endpoints, "fixed endpoints of the hot service (each change replaces one more)")
	fs.IntVar(&o.statsProxies, "stats-proxies", o.statsProxies, "meshed pods on loopback addresses whose /metrics the controller scrapes")
	cidr := fs.String("stats-cidr", o.statsCIDR.String(), "loopback pod CIDR of the scraped pods' node (their /metrics listen on its addresses, port 4191)")
	fs.DurationVar(&o.statsInterval, "stats-interval", o.statsInterval, "the controller's --stats-interval")
	fs.IntVar(&o.statsCycles, "stats-cycles", o.statsCycles, "scrape cycles measured")
	fs.IntVar(&o.queryReps, "query-reps", o.queryReps, "repetitions of each stat query")
	fs.DurationVar(&o.identityDuration, "identity-duration", o.identityDuration, "how long proxies request certificates")
	fs.IntVar(&o.identityConcurrency, "identity-concurrency", o.identityConcurrency, "proxies requesting certificates at once, each on its own connection")
	fs.IntVar(&o.identityAccounts, "identity-accounts", o.identityAccounts, "service accounts (identities) the certificates are for")
	fs.IntVar(&o.createConcurrency, "create-concurrency", o.createConcurrency, "concurrent pod creations")
	maxRSSMB := fs.Int64("max-controller-rss", o.maxRSSKB>>10, "MB: while the controller scrapes, stop waiting (and report what was measured) once its RSS passes this")
	fs.BoolVar(&o.tls, "tls", o.tls, "simulated proxies reach the controller over TLS, verifying its identity, as injected proxies do")
	fs.StringVar(&o.controllerRev, "controller-rev", "", "build conduit-controller from this git revision of -repo (e.g. HEAD) instead of the working tree")
	fs.StringVar(&o.repo, "repo", o.repo, "the conduit repository")
	fs.StringVar(&o.out, "out", o.out, "report file (markdown); empty writes none")
	fs.DurationVar(&o.timeout, "timeout", o.timeout, "bound on the whole run")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		return o, fmt.Errorf("unexpected argument %q: cpbench takes only flags", fs.Arg(0))
	}
	o.short = *short
	o.maxRSSKB = *maxRSSMB << 10
	var err error
	if o.proxies, err = parseInts(*proxies); err != nil {
		return o, fmt.Errorf("-proxies %q: %w", *proxies, err)
	}
	if o.statsCIDR, err = netip.ParsePrefix(*cidr); err != nil || !o.statsCIDR.Addr().IsLoopback() || !o.statsCIDR.Addr().Is4() {
		return o, fmt.Errorf("-stats-cidr %q: want an IPv4 loopback CIDR such as 127.1.0.0/16", *cidr)
	}
	o.statsCIDR = o.statsCIDR.Masked()
	if o.statsProxies >= 1<<(32-o.statsCIDR.Bits())-2 {
		return o, fmt.Errorf("-stats-cidr %s has room for fewer than -stats-proxies %d addresses", o.statsCIDR, o.statsProxies)
	}
	switch {
	case o.services < 1 || o.namespaces < 1 || o.services < o.namespaces:
		return o, errors.New("-services and -namespaces must be at least 1, and there must be a service per namespace at least")
	case o.pods < o.services:
		return o, errors.New("-pods must be at least -services (every service gets pods)")
	case o.changes < 1 || o.changes > 200:
		return o, errors.New("-changes must be from 1 to 200")
	case o.identityConcurrency < 1 || o.identityAccounts < 1:
		return o, errors.New("-identity-concurrency and -identity-accounts must be at least 1")
	case o.identityConcurrency > o.proxies[0]:
		return o, errors.New("-identity-concurrency must not exceed the first -proxies count (each request uses a proxy's connection)")
	case o.statsInterval < time.Second || o.statsCycles < 1 || o.queryReps < 1:
		return o, errors.New("-stats-interval must be at least 1s, -stats-cycles and -query-reps at least 1")
	case o.createConcurrency < 1:
		return o, errors.New("-create-concurrency must be at least 1")
	}
	o.command = "cd bench && go run ./cmd/cpbench " + strings.Join(args, " ")
	return o, nil
}

func parseInts(s string) ([]int, error) {
	var out []int
	for f := range strings.SplitSeq(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("%q is not a positive count", f)
		}
		out = append(out, n)
	}
	if !slices.IsSorted(out) {
		return nil, errors.New("want ascending counts")
	}
	return out, nil
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ",")
}
