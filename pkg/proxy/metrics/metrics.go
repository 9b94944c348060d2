// Package metrics keeps the proxy's counters and histograms and writes them
// in the Prometheus text exposition format, with the metric names and labels
// of Linkerd's proxy (request_total, response_total, response_latency_ms,
// tcp_*) so existing dashboards work.
//
// It is hand-written rather than built on prometheus/client_golang to keep
// the proxy's resident memory small. Series are created on first use and
// cached; the hot path is a map lookup under a mutex plus atomic adds.
package metrics

import (
	"math"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// LatencyBucketsMs are Linkerd's response_latency_ms bucket bounds.
var LatencyBucketsMs = []float64{
	1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500,
	1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000,
}

// DurationBucketsMs are the tcp_connection_duration_ms bucket bounds.
var DurationBucketsMs = []float64{1, 10, 100, 1000, 10000, 100000, 1000000, 10000000}

// Registry holds every series. The zero value is not usable; use NewRegistry.
type Registry struct {
	start time.Time
	// Process adds process_* metrics from /proc/self to every scrape.
	Process bool

	mu sync.Mutex // guards the maps below (not the series' values, which are atomic)
	// routes are HTTP series keyed by their labels, in creation order.
	routes   map[HTTPLabels]*Route
	routeOrd []*Route
	tcp      map[TCPLabels]*TCP
	tcpOrd   []*TCP
	errors   map[errorKey]*atomic.Uint64
	errOrd   []errorKey
	panics   map[string]*atomic.Uint64 // by direction
	panicOrd []string
	authz    map[AuthzLabels]*authzSeries
	authzOrd []*authzSeries
	retries  map[RetryLabels]*Retries
	retryOrd []*Retries
	awaits   map[string]*Await // by authority
	awaitOrd []*Await
}

// NewRegistry returns an empty registry.
func NewRegistry() *Registry {
	return &Registry{
		start:   time.Now(),
		routes:  map[HTTPLabels]*Route{},
		tcp:     map[TCPLabels]*TCP{},
		errors:  map[errorKey]*atomic.Uint64{},
		panics:  map[string]*atomic.Uint64{},
		authz:   map[AuthzLabels]*authzSeries{},
		retries: map[RetryLabels]*Retries{},
		awaits:  map[string]*Await{},
	}
}

// HTTPLabels identify an HTTP route series.
type HTTPLabels struct {
	Direction  string // "inbound" or "outbound"
	Authority  string
	TargetAddr string
	TLS        bool
	// ClientID is the meshed client's identity (inbound mTLS); ServerID the
	// meshed server's (outbound mTLS).
	ClientID string
	ServerID string
	// Dst is pre-rendered dst_* labels, see DstLabels.
	Dst string
	// RouteKind and RouteName name the outbound route ("httproute" or
	// "grpcroute", and its name) whose rule the request matched; rendered
	// (route_kind, route_name) only when set.
	RouteKind, RouteName string
}

func (l HTTPLabels) render() string {
	var b strings.Builder
	label(&b, "direction", l.Direction)
	label(&b, "authority", l.Authority)
	if l.RouteKind != "" || l.RouteName != "" {
		label(&b, "route_kind", l.RouteKind)
		label(&b, "route_name", l.RouteName)
	}
	renderPeer(&b, l.TargetAddr, l.TLS, l.ClientID, l.ServerID, l.Dst)
	return b.String()
}

// renderPeer appends the labels HTTP and TCP series share.
func renderPeer(b *strings.Builder, targetAddr string, tls bool, clientID, serverID, dst string) {
	if targetAddr != "" {
		label(b, "target_addr", targetAddr)
	}
	label(b, "tls", strconv.FormatBool(tls))
	if clientID != "" {
		label(b, "client_id", clientID)
	}
	if serverID != "" {
		label(b, "server_id", serverID)
	}
	if dst != "" {
		b.WriteByte(',')
		b.WriteString(dst)
	}
}

// DstLabels renders endpoint labels as dst_<key>="value" pairs (sorted) for
// HTTPLabels.Dst and TCPLabels.Dst. Keys are sanitized to Prometheus label
// names. Call it once per endpoint, not per request.
func DstLabels(labels map[string]string) string {
	if len(labels) == 0 {
		return ""
	}
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		label(&b, "dst_"+sanitizeName(k), labels[k])
	}
	return b.String()
}

func sanitizeName(s string) string {
	out := []byte(s)
	for i, c := range out {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_') {
			out[i] = '_'
		}
	}
	return string(out)
}

// label appends ,name="value" (without the leading comma for the first).
func label(b *strings.Builder, name, value string) {
	if b.Len() > 0 {
		b.WriteByte(',')
	}
	b.WriteString(name)
	b.WriteString(`="`)
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\\':
			b.WriteString(`\\`)
		case '"':
			b.WriteString(`\"`)
		case '\n':
			b.WriteString(`\n`)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}

// Route is the HTTP series of one label set.
type Route struct {
	labels   string
	requests atomic.Uint64

	mu        sync.Mutex // guards responses and respOrd
	responses map[respKey]*response
	respOrd   []*response
}

// Classification is Linkerd's response classification.
type Classification bool

const (
	Success Classification = true
	Failure Classification = false
)

func (c Classification) String() string {
	if c {
		return "success"
	}
	return "failure"
}

// Classify applies Linkerd's default rules: a gRPC status other than OK is a
// failure, otherwise 5xx is a failure; a stream error (status 0) is a
// failure.
func Classify(status int, grpcStatus string, streamErr bool) Classification {
	switch {
	case streamErr, status == 0:
		return Failure
	case grpcStatus != "":
		return grpcStatus == "0"
	default:
		return status < 500
	}
}

type respKey struct {
	status int
	grpc   string
	class  Classification
}

type response struct {
	labels  string
	count   atomic.Uint64
	latency histogram
}

// MaxSeries bounds the HTTP route and TCP label sets each. Authorities and
// addresses come from peers, so a hostile client could otherwise grow the
// registry without limit; past the bound, new label sets share one series
// whose authority (or target_addr) is "overflow".
const MaxSeries = 2000

// Overflow replaces a peer-controlled label once MaxSeries is reached.
const Overflow = "overflow"

// bounded returns the series of k in m, made by mk and appended to ord on
// first use. Once m holds MaxSeries series, a new k is replaced by
// over(k), its overflow series, so that peers cannot grow the registry.
// The caller holds r.mu.
func bounded[K comparable, S any](m map[K]*S, ord *[]*S, k K, over func(K) K, mk func(K) *S) *S {
	if s, ok := m[k]; ok {
		return s
	}
	if len(m) >= MaxSeries {
		k = over(k)
		if s, ok := m[k]; ok {
			return s
		}
	}
	s := mk(k)
	m[k] = s
	*ord = append(*ord, s)
	return s
}

// Route returns (creating on first use) the series for l.
func (r *Registry) Route(l HTTPLabels) *Route {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bounded(r.routes, &r.routeOrd, l,
		func(l HTTPLabels) HTTPLabels {
			return HTTPLabels{Direction: l.Direction, Authority: Overflow, TLS: l.TLS}
		},
		func(l HTTPLabels) *Route { return &Route{labels: l.render(), responses: map[respKey]*response{}} })
}

// Request counts one request (request_total).
func (rt *Route) Request() { rt.requests.Add(1) }

// Response counts one finished response (response_total) and records its
// latency (response_latency_ms). status 0 means the stream failed before a
// status was sent.
func (rt *Route) Response(status int, grpcStatus string, class Classification, latency time.Duration) {
	k := respKey{status: status, grpc: grpcStatus, class: class}
	rt.mu.Lock()
	s, ok := rt.responses[k]
	if !ok {
		var b strings.Builder
		b.WriteString(rt.labels)
		if status != 0 {
			label(&b, "status_code", strconv.Itoa(status))
		}
		if grpcStatus != "" {
			label(&b, "grpc_status", grpcStatus)
		}
		label(&b, "classification", class.String())
		s = &response{labels: b.String(), latency: newHistogram(LatencyBucketsMs)}
		rt.responses[k] = s
		rt.respOrd = append(rt.respOrd, s)
	}
	rt.mu.Unlock()
	s.count.Add(1)
	s.latency.observe(float64(latency) / float64(time.Millisecond))
}

// TCPLabels identify a TCP connection series. Peer is "src" for accepted
// connections and "dst" for connections the proxy opened.
type TCPLabels struct {
	Direction  string
	Peer       string
	TargetAddr string
	TLS        bool
	ClientID   string
	ServerID   string
	Dst        string
}

func (l TCPLabels) render() string {
	var b strings.Builder
	label(&b, "direction", l.Direction)
	label(&b, "peer", l.Peer)
	renderPeer(&b, l.TargetAddr, l.TLS, l.ClientID, l.ServerID, l.Dst)
	return b.String()
}

// TCP is the connection series of one label set.
type TCP struct {
	labels   string
	opened   atomic.Uint64
	open     atomic.Int64
	read     atomic.Uint64
	written  atomic.Uint64
	closedOK atomic.Uint64
	closedKO atomic.Uint64
	duration histogram
}

// TCP returns (creating on first use) the series for l.
func (r *Registry) TCP(l TCPLabels) *TCP {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bounded(r.tcp, &r.tcpOrd, l,
		func(l TCPLabels) TCPLabels {
			return TCPLabels{Direction: l.Direction, Peer: l.Peer, TargetAddr: Overflow, TLS: l.TLS}
		},
		func(l TCPLabels) *TCP { return &TCP{labels: l.render(), duration: newHistogram(DurationBucketsMs)} })
}

// Open counts a new connection.
func (t *TCP) Open() {
	t.opened.Add(1)
	t.open.Add(1)
}

// Close counts a closed connection that lived for d.
func (t *TCP) Close(d time.Duration, ok bool) {
	t.open.Add(-1)
	if ok {
		t.closedOK.Add(1)
	} else {
		t.closedKO.Add(1)
	}
	t.duration.observe(float64(d) / float64(time.Millisecond))
}

// AddRead counts bytes read from the peer.
func (t *TCP) AddRead(n int) { t.read.Add(uint64(n)) }

// AddWritten counts bytes written to the peer.
func (t *TCP) AddWritten(n int) { t.written.Add(uint64(n)) }

type errorKey struct{ direction, reason string }

// Error counts one error the proxy itself produced or met (a proxy-made
// 5xx, a failed detection, a refused upstream), as
// conduit_proxy_errors_total{direction, error}.
func (r *Registry) Error(direction, reason string) {
	r.mu.Lock()
	c := counter(r.errors, &r.errOrd, errorKey{direction, reason})
	r.mu.Unlock()
	c.Add(1)
}

// Panic counts one panic recovered while serving a connection, as
// conduit_proxy_panics_total{direction}.
func (r *Registry) Panic(direction string) {
	r.mu.Lock()
	c := counter(r.panics, &r.panicOrd, direction)
	r.mu.Unlock()
	c.Add(1)
}

// counter returns (creating on first use, in order) the counter of k.
func counter[K comparable](m map[K]*atomic.Uint64, ord *[]K, k K) *atomic.Uint64 {
	c, ok := m[k]
	if !ok {
		c = new(atomic.Uint64)
		m[k] = c
		*ord = append(*ord, k)
	}
	return c
}

// histogram is a fixed-bucket cumulative histogram with atomic counters.
type histogram struct {
	bounds []float64
	counts []atomic.Uint64 // per bucket, non-cumulative; last is +Inf
	sum    atomic.Uint64   // float64 bits
	count  atomic.Uint64
}

func newHistogram(bounds []float64) histogram {
	return histogram{bounds: bounds, counts: make([]atomic.Uint64, len(bounds)+1)}
}

func (h *histogram) observe(v float64) {
	i := sort.SearchFloat64s(h.bounds, v) // first bound >= v
	h.counts[i].Add(1)
	h.count.Add(1)
	for {
		old := h.sum.Load()
		if h.sum.CompareAndSwap(old, math.Float64bits(math.Float64frombits(old)+v)) {
			return
		}
	}
}
