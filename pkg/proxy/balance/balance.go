// Package balance picks one endpoint of a service for each request or
// connection with power-of-two-choices over peak-EWMA latency, the algorithm
// of Linkerd and Finagle: sample two endpoints at random and take the one
// whose cost — its latency estimate times its outstanding requests plus one,
// divided by its weight — is lower. The latency estimate jumps up to a new
// peak at once and decays towards lower observations with time constant Tau.
package balance

import (
	"math"
	"math/rand/v2"
	"sync"
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
// the time to the response (or connection) and whether it failed.
func (b *Balancer) Pick(eps []resolve.Endpoint) (resolve.Endpoint, func(rtt time.Duration, failed bool)) {
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	var ep resolve.Endpoint
	switch len(eps) {
	case 1:
		ep = eps[0]
	default:
		i := rand.IntN(len(eps))
		j := rand.IntN(len(eps) - 1)
		if j >= i {
			j++
		}
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
	var once sync.Once
	return ep, func(rtt time.Duration, failed bool) {
		once.Do(func() { b.done(ep.Addr, rtt, failed) })
	}
}

func (b *Balancer) done(addr string, rtt time.Duration, failed bool) {
	if failed && rtt < FailurePenalty {
		rtt = FailurePenalty
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	now := b.now()
	s := b.statLocked(addr, now)
	if s.pending > 0 {
		s.pending--
	}
	s.observe(float64(rtt), now, b.tau)
}

func (b *Balancer) costLocked(ep resolve.Endpoint, now time.Time) float64 {
	// A new endpoint starts at DefaultRTT and decays like any other, so an
	// endpoint that has not been picked for a while gets probed again.
	s := b.statLocked(ep.Addr, now)
	ewma, pending := s.decayed(now, b.tau), s.pending
	w := float64(ep.Weight)
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

// evictLocked drops idle endpoints not used for a while.
func (b *Balancer) evictLocked(now time.Time) {
	for addr, s := range b.stats {
		if s.pending == 0 && now.Sub(s.used) > time.Minute {
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
