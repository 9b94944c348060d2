package metrics

import (
	"strings"
	"sync/atomic"
)

// RetryLabels identify the retry series of an outbound route, with
// Linkerd's names (outbound_http_route_retry_*_total) and its route labels;
// Authority is the Service the client asked for (Linkerd's parent). Routes
// come from the controller, so the series are bounded by the routes.
type RetryLabels struct {
	Authority            string
	RouteKind, RouteName string
}

func (l RetryLabels) render() string {
	var b strings.Builder
	label(&b, "authority", l.Authority)
	label(&b, "route_kind", l.RouteKind)
	label(&b, "route_name", l.RouteName)
	return b.String()
}

// Retries counts a route's retries.
type Retries struct {
	labels string
	// requests are the retries sent; successes those whose response
	// was not itself retryable; limitExceeded the responses that were
	// retryable but had used the route's retry limit; overflow those the
	// retry budget refused.
	requests, successes, limitExceeded, overflow atomic.Uint64
}

// Retries returns the retry series of a route (nil-safe methods).
func (r *Registry) Retries(l RetryLabels) *Retries {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bounded(r.retries, &r.retryOrd, l,
		func(l RetryLabels) RetryLabels { l.Authority = Overflow; return l },
		func(l RetryLabels) *Retries { return &Retries{labels: l.render()} })
}

// Request counts a retry sent.
func (s *Retries) Request() { s.requests.Add(1) }

// Success counts a retry whose response ended the request.
func (s *Retries) Success() { s.successes.Add(1) }

// LimitExceeded counts a retryable response passed on because the request
// had no retries left.
func (s *Retries) LimitExceeded() { s.limitExceeded.Add(1) }

// Overflow counts a retryable response passed on because the retry budget
// was spent.
func (s *Retries) Overflow() { s.overflow.Add(1) }

// retryFamilies are the retry series' names and help, in exposition order.
var retryFamilies = []struct {
	name, help string
	v          func(*Retries) uint64
}{
	{"outbound_http_route_retry_requests_total", "Retries sent, by route.", func(s *Retries) uint64 { return s.requests.Load() }},
	{"outbound_http_route_retry_successes_total", "Retries whose response was not retryable, by route.", func(s *Retries) uint64 { return s.successes.Load() }},
	{"outbound_http_route_retry_limit_exceeded_total", "Retryable responses passed on because the request had used its retry limit, by route.", func(s *Retries) uint64 { return s.limitExceeded.Load() }},
	{"outbound_http_route_retry_overflow_total", "Retryable responses passed on because the retry budget was spent, by route.", func(s *Retries) uint64 { return s.overflow.Load() }},
}
