package route

import (
	"math/bits"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
)

// Ref names a route: Kind "httproute" or "grpcroute", its Name and
// Namespace. Kind and Name are its metrics' route_kind and route_name.
type Ref = httpmatch.Ref

// Table is the outbound routing of one Service authority, decoded from
// conduit.destination.v1.OutboundRoutes. It is immutable and safe for
// concurrent use; a nil *Table has no routes (every method answers as for
// a Service without routes and without policy).
type Table struct {
	authority string
	found     bool
	// rules of every route: routes oldest first (then by namespace/name),
	// each route's rules in order.
	rules []Rule
	// matches are every rule's matches by precedence (httpmatch.Sort);
	// their Index is the rule's in rules.
	matches    []httpmatch.Match
	routes     int
	service    Policy
	accrual    FailureAccrual
	hasAccrual bool
}

// Authority is the authority the table routes, as Decode was given it.
func (t *Table) Authority() string {
	if t == nil {
		return ""
	}
	return t.authority
}

// Found reports whether the authority is a Service the controller knows;
// when it is not, the table is empty.
func (t *Table) Found() bool { return t != nil && t.found }

// ServicePolicy is the policy of requests no rule matches (the Service's
// annotations); the zero Policy for a nil table.
func (t *Table) ServicePolicy() Policy {
	if t == nil {
		return Policy{}
	}
	return t.service
}

// FailureAccrual is the Service's failure accrual, and whether it has one.
func (t *Table) FailureAccrual() (FailureAccrual, bool) {
	if t == nil {
		return FailureAccrual{}, false
	}
	return t.accrual, t.hasAccrual
}

// String summarizes t for logs.
func (t *Table) String() string {
	switch {
	case t == nil:
		return "no routes"
	case !t.found:
		return t.authority + ": not a known Service"
	}
	return t.authority + ": " + strconv.Itoa(t.routes) + " routes, " + strconv.Itoa(len(t.rules)) + " rules"
}

// Route returns the rule that routes r, by the Gateway API's precedence
// over every match of every rule (see OutboundRoutes in
// pkg/api/destination/v1/destination.proto), and the match that selected
// it (a redirect's prefix replacement needs it); nil, nil when no rule
// matches, and the request then goes to the Service itself with
// ServicePolicy. It allocates nothing and keeps nothing of r.
func (t *Table) Route(r *httpmatch.Request) (*Rule, *httpmatch.Match) {
	if t == nil {
		return nil, nil
	}
	i := httpmatch.Pick(t.matches, r)
	if i < 0 {
		return nil, nil
	}
	m := &t.matches[i]
	return &t.rules[m.Index], m
}

// Rule is one rule of a route. Its fields are read-only.
type Rule struct {
	// Route names the rule's route.
	Route Ref
	// Index is the rule's position in its route.
	Index int
	// Policy is the rule's, with what it leaves unset taken from the
	// Service's.
	Policy Policy
	// headers are the rule's header modifiers.
	headers
	redirect *Redirect
	backends []Backend
	// cumulative holds the backends' running weight totals, for the
	// draw; only is the backend when there is nothing to draw (one
	// backend has all the weight, or none has any, or the rule is
	// invalid).
	cumulative []uint64
	only       *Backend
}

// Redirect is the rule's RequestRedirect, or nil. When there is one, the
// rule's requests are answered with it and never forwarded.
func (r *Rule) Redirect() *Redirect { return r.redirect }

// Backends are the rule's backends, as received (nil when the rule sends
// to the Service itself).
func (r *Rule) Backends() []Backend { return r.backends }

// PickBackend draws the backend of one request, each backend with
// probability weight/total, exactly (no modulo bias). src is the source of
// randomness; nil uses math/rand/v2's (safe for concurrent use). A rule
// without backends sends to the Service itself (the table's authority); a
// rule whose backends all have weight 0, or whose filters the proxy cannot
// apply, picks a backend whose Invalid says why. A backend with Invalid set
// is to be answered 500, as the Gateway API requires.
func (r *Rule) PickBackend(src rand.Source) *Backend {
	if r.only != nil {
		return r.only
	}
	x := uniform(src, r.cumulative[len(r.cumulative)-1])
	// The first backend whose running total exceeds x: a backend of
	// weight 0 adds nothing to the total, so it is never the first.
	lo, hi := 0, len(r.cumulative)-1
	for lo < hi {
		mid := int(uint(lo+hi) >> 1)
		if r.cumulative[mid] > x {
			hi = mid
		} else {
			lo = mid + 1
		}
	}
	return &r.backends[lo]
}

// uniform draws from [0, n) (n > 0) with Lemire's multiply-and-reject
// method, which math/rand/v2's Uint64N also uses.
func uniform(src rand.Source, n uint64) uint64 {
	if src == nil {
		return rand.Uint64N(n)
	}
	hi, lo := bits.Mul64(src.Uint64(), n)
	if lo < n {
		threshold := -n % n
		for lo < threshold {
			hi, lo = bits.Mul64(src.Uint64(), n)
		}
	}
	return hi
}

// Backend is where a rule sends a share of its requests. Its fields are
// read-only.
type Backend struct {
	// Authority is the backend Service's host:port, to resolve with the
	// destination resolver; the table's own authority for a rule without
	// backends.
	Authority string
	// Weight is the backend's share, relative to the rule's other
	// backends.
	Weight uint32
	// Invalid, when not empty, says why the backend cannot be used:
	// answer the request 500 (with this reason in the proxy's error
	// header).
	Invalid string
	// headers are the backend's header modifiers, applied after the
	// rule's.
	headers
}

// Policy is the client-side policy of a rule or of the Service: zero
// fields are unset.
type Policy struct {
	// RequestTimeout bounds the whole request, retries included (504, or
	// gRPC DEADLINE_EXCEEDED).
	RequestTimeout time.Duration
	// BackendRequestTimeout bounds each attempt.
	BackendRequestTimeout time.Duration
	Retry                 Retry
}

// Retry is a policy's retries: none when Limit is 0.
type Retry struct {
	// Limit is how many retries a request may get, beyond the first
	// attempt.
	Limit uint32
	// HTTPStatuses are the response statuses retried.
	HTTPStatuses []StatusRange
	// GRPCCodes are the gRPC status codes retried.
	GRPCCodes []uint32
	// Timeout bounds each try.
	Timeout time.Duration
}

// StatusRange is the HTTP statuses Min to Max, both included.
type StatusRange struct{ Min, Max uint32 }

// RetriesStatus reports whether an HTTP response status is retried.
func (r *Retry) RetriesStatus(status int) bool {
	for _, s := range r.HTTPStatuses {
		if int64(s.Min) <= int64(status) && int64(status) <= int64(s.Max) {
			return true
		}
	}
	return false
}

// RetriesGRPC reports whether a gRPC status code is retried.
func (r *Retry) RetriesGRPC(code uint32) bool {
	for _, c := range r.GRPCCodes {
		if c == code {
			return true
		}
	}
	return false
}

// orElse fills in what p leaves unset from d, field by field.
func (p Policy) orElse(d Policy) Policy {
	if p.RequestTimeout == 0 {
		p.RequestTimeout = d.RequestTimeout
	}
	if p.BackendRequestTimeout == 0 {
		p.BackendRequestTimeout = d.BackendRequestTimeout
	}
	if p.Retry.Limit == 0 {
		p.Retry.Limit = d.Retry.Limit
	}
	if len(p.Retry.HTTPStatuses) == 0 {
		p.Retry.HTTPStatuses = d.Retry.HTTPStatuses
	}
	if len(p.Retry.GRPCCodes) == 0 {
		p.Retry.GRPCCodes = d.Retry.GRPCCodes
	}
	if p.Retry.Timeout == 0 {
		p.Retry.Timeout = d.Retry.Timeout
	}
	return p
}

// FailureAccrual is the Service's balancer.conduit.io/failure-accrual:
// consecutive, as the controller sent it.
type FailureAccrual struct {
	ConsecutiveMaxFailures uint32
	MinPenalty, MaxPenalty time.Duration
	// JitterRatio lengthens each penalty by a random share of it of up to
	// this ratio, never past MaxPenalty (balance.Accrual).
	JitterRatio float64
}

// String is "kind name rule i" for logs and reasons.
func (r *Rule) String() string { return r.Route.String() + " rule " + strconv.Itoa(r.Index) }
