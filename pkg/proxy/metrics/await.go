package metrics

import (
	"strings"
	"sync/atomic"
	"time"
)

// AwaitResult is how a wait for an endpoint ended (the result label of
// outbound_endpoint_wait_total).
type AwaitResult uint8

const (
	// AwaitReady: an endpoint became ready and the request went on.
	AwaitReady AwaitResult = iota
	// AwaitNoEndpoints: the fail-fast timeout passed first (503).
	AwaitNoEndpoints
	// AwaitTimeout: the route's request timeout passed first (504).
	AwaitTimeout
	// AwaitCanceled: the request or connection ended first.
	AwaitCanceled
)

var awaitResults = [...]string{AwaitReady: "ready", AwaitNoEndpoints: "no_endpoints", AwaitTimeout: "timeout", AwaitCanceled: "canceled"}

// Await counts the requests and connections an outbound proxy held because
// the Service they were for had no ready endpoint: how many wait now, how
// each wait ended and how long it took. Keyed by the Service's authority,
// which the controller's Services bound.
type Await struct {
	labels  string
	waiting atomic.Int64
	results [len(awaitResults)]atomic.Uint64
	wait    histogram
}

// Await returns the endpoint-wait series of authority.
func (r *Registry) Await(authority string) *Await {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bounded(r.awaits, &r.awaitOrd, authority,
		func(string) string { return Overflow },
		func(authority string) *Await {
			var b strings.Builder
			label(&b, "authority", authority)
			return &Await{labels: b.String(), wait: newHistogram(LatencyBucketsMs)}
		})
}

// Start counts a request or connection that begins to wait.
func (s *Await) Start() { s.waiting.Add(1) }

// Done ends a wait begun with Start, which lasted waited.
func (s *Await) Done(result AwaitResult, waited time.Duration) {
	s.waiting.Add(-1)
	s.results[result].Add(1)
	s.wait.observe(float64(waited) / float64(time.Millisecond))
}
