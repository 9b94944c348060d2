// Package balance picks one endpoint of a service for each request or
// connection with power-of-two-choices over peak-EWMA latency, the algorithm
// of Linkerd and Finagle: sample two endpoints at random and take the one
// whose cost — its latency estimate times its outstanding requests plus one,
// divided by its weight — is lower. The latency estimate jumps up to a new
// peak at once and decays towards lower observations with time constant Tau.
//
// With an Accrual policy (PickWith), endpoints that fail too often in a row
// are also taken out for a while: see Accrual.
package balance

import (
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

const (
	// DefaultTau is the decay time constant of the latency estimate.
	DefaultTau = 10 * time.Second
	// DefaultRTT is the estimate of an endpoint that has no observation yet.
	DefaultRTT = 30 * time.Millisecond
	// FailurePenalty is recorded as the latency of a failed attempt.
	FailurePenalty = time.Second
	// maxStats bounds the per-endpoint state kept for endpoints that have
	// disappeared from discovery.
	maxStats = 4096
)

// Balancer keeps latency and load state per endpoint address. It is safe
// for concurrent use.
type Balancer struct {
	tau time.Duration
	now func() time.Time

	mu    sync.Mutex // guards stats and every stat's fields
	stats map[string]*stat
}

type stat struct {
	ewma    float64 // nanoseconds
	stamp   time.Time
	pending int
	used    time.Time

	// Failure accrual (accrual.go); an endpoint only ever picked without
	// an Accrual stays ready.
	state    state
	failures int       // consecutive failures while ready
	trips    int       // penalties since the endpoint was last ready
	until    time.Time // end of the penalty
	epoch    uint32    // changes with state: outcomes of older attempts are not counted
}

// New returns a Balancer. now may be nil (time.Now).
func New(now func() time.Time) *Balancer {
	if now == nil {
		now = time.Now
	}
	return &Balancer{tau: DefaultTau, now: now, stats: map[string]*stat{}}
}

// Pick chooses one of eps (which must not be empty) and returns it with a
// done function that the caller must call once with the attempt's outcome:
// the time to the response (or connection) and whether it failed. It does
// no failure accrual (PickWith does, and does not allocate).
func (b *Balancer) Pick(eps []resolve.Endpoint) (resolve.Endpoint, func(rtt time.Duration, failed bool)) {
	ep, at, _ := b.PickWith(eps, nil) // no error without an Accrual
	d := &doneOnce{at: at}
	return ep, func(rtt time.Duration, failed bool) {
		if d.done.CompareAndSwap(false, true) {
			d.at.Done(rtt, failed)
		}
	}
}

// doneOnce lets Pick's done function be called more than once, from any
// goroutine.
type doneOnce struct {
	done atomic.Bool
	at   Attempt
}

// PickWith chooses one of eps as Pick does and returns it with its
// Attempt, whose Done the caller must call with the outcome. With acc nil
// it is Pick (never an error); with an Accrual it skips endpoints in
// penalty and returns ErrAllUnavailable when every endpoint of eps is in
// penalty (or eps is empty): the caller should then fail the request fast
// (503, gRPC UNAVAILABLE), as Linkerd does. acc should be the same for
// every call with the same endpoints (one per Service); it is read, never
// written.
func (b *Balancer) PickWith(eps []resolve.Endpoint, acc *Accrual) (resolve.Endpoint, Attempt, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	var ep resolve.Endpoint
	switch {
	case acc != nil:
		i := b.p2cAccrualLocked(eps, now)
		if i < 0 {
			return resolve.Endpoint{}, Attempt{}, ErrAllUnavailable
		}
		ep = eps[i]
	case len(eps) == 1:
		ep = eps[0]
	default:
		i, j := twoOf(len(eps))
		a, c := eps[i], eps[j]
		if b.costLocked(a, now) <= b.costLocked(c, now) {
			ep = a
		} else {
			ep = c
		}
	}
	s := b.statLocked(ep.Addr, now)
	s.pending++
	s.used = now
	at := Attempt{b: b, s: s}
	if acc != nil {
		s.admitLocked(now)
		at.acc, at.epoch = acc, s.epoch
	}
	return ep, at, nil
}

// Attempt is one request (or connection) sent to a picked endpoint.
type Attempt struct {
	b     *Balancer // nil: no attempt, or done
	s     *stat     // kept while pending > 0: never evicted
	acc   *Accrual
	epoch uint32
}

// Done records the attempt's outcome: the time to the response (or
// connection) and whether it failed — what the Accrual counts as failures
// is the caller's choice (Linkerd: 5xx responses, gRPC errors, and
// connection errors). Call it once: later calls on the same Attempt do
// nothing (copies of it do not know). The zero Attempt's Done does nothing.
func (a *Attempt) Done(rtt time.Duration, failed bool) {
	b := a.b
	if b == nil {
		return
	}
	a.b = nil
	if failed && rtt < FailurePenalty {
		rtt = FailurePenalty
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	s := a.s
	if s.pending > 0 {
		s.pending--
	}
	s.observe(float64(rtt), now, b.tau)
	if a.acc != nil && a.epoch == s.epoch {
		s.accrueLocked(a.acc, failed, now)
	}
}

func (b *Balancer) costLocked(ep resolve.Endpoint, now time.Time) float64 {
	// A new endpoint starts at DefaultRTT and decays like any other, so an
	// endpoint that has not been picked for a while gets probed again.
	return b.statLocked(ep.Addr, now).cost(ep.Weight, now, b.tau)
}

// cost is the endpoint's latency estimate times its outstanding requests
// plus one, divided by its weight (0 means 1).
func (s *stat) cost(weight uint32, now time.Time, tau time.Duration) float64 {
	ewma, pending := s.decayed(now, tau), s.pending
	w := float64(weight)
	if w == 0 {
		w = 1
	}
	return ewma * float64(pending+1) / w
}

func (b *Balancer) statLocked(addr string, now time.Time) *stat {
	s, ok := b.stats[addr]
	if ok {
		return s
	}
	if len(b.stats) >= maxStats {
		b.evictLocked(now)
	}
	s = &stat{ewma: float64(DefaultRTT), stamp: now, used: now}
	b.stats[addr] = s
	return s
}

// evictLocked drops idle endpoints not used for a while (but keeps the
// penalties under way).
func (b *Balancer) evictLocked(now time.Time) {
	for addr, s := range b.stats {
		if s.pending == 0 && now.Sub(s.used) > time.Minute && !s.penalizedAt(now) {
			delete(b.stats, addr)
		}
	}
}

// decayed is the estimate at now without a new observation.
func (s *stat) decayed(now time.Time, tau time.Duration) float64 {
	elapsed := now.Sub(s.stamp)
	if elapsed <= 0 {
		return s.ewma
	}
	w := math.Exp(-float64(elapsed) / float64(tau))
	// Decay towards zero between observations so that a slow endpoint gets
	// probed again.
	return s.ewma * w
}

func (s *stat) observe(rtt float64, now time.Time, tau time.Duration) {
	if rtt > s.ewma {
		s.ewma = rtt // peak: jump up at once
	} else {
		elapsed := now.Sub(s.stamp)
		w := math.Exp(-float64(max(elapsed, 0)) / float64(tau))
		s.ewma = s.ewma*w + rtt*(1-w)
	}
	s.stamp = now
}
