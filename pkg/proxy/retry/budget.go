// Package retry bounds the proxy's retries: a Budget caps them at a share
// of the requests plus a minimum rate, as Linkerd and Finagle do, so that
// retries never multiply the load on a failing service. What a route
// retries is its policy's (route.Retry, from the controller).
package retry

import (
	"fmt"
	"math"
	"sync"
	"time"
)

// Defaults of a Budget: Linkerd's.
const (
	// DefaultRatio is the share of requests that may be retried.
	DefaultRatio = 0.2
	// DefaultMinPerSecond is the retries allowed per second whatever the
	// request rate, so that a service with little traffic still gets some.
	DefaultMinPerSecond = 10
	// DefaultTTL is how long a request's deposit counts.
	DefaultTTL = 10 * time.Second
)

// Bounds of NewBudget's arguments (Finagle's).
const (
	MinTTL          = time.Second
	MaxTTL          = time.Minute
	MaxRatio        = 1000
	MaxMinPerSecond = 1 << 20
)

const (
	// slots is the number of slices the TTL window is cut into: a deposit
	// or withdrawal counts for between (slots-1)/slots × TTL and TTL.
	slots = 10
	// unit is the cost of one retry in credits; a request deposits
	// ratio × unit, so ratios are exact to 1e-6.
	unit = 1_000_000
)

// Budget is a retry budget: each request deposits ratio credits, each retry
// withdraws one, and a retry is allowed only while the credits deposited in
// the last TTL (plus minPerSecond × TTL) exceed those withdrawn. Deposits
// and withdrawals expire after the TTL, so the budget follows the current
// request rate.
//
// The minimum rate is added one slice (TTL/10) at a time and expires like
// deposits: in steady state the window holds minPerSecond × TTL of it, as
// Finagle's reserve, but a new Budget starts with one slice's share rather
// than the whole reserve. So, from the Budget's creation to any instant,
//
//	retries ≤ ratio × requests + minPerSecond × elapsed
//
// where elapsed counts the slice under way in full (with the default TTL,
// slices are one second). With every request failing, load on the service
// is at most (1 + ratio) × requests + the minimum rate.
//
// Safe for concurrent use; Deposit and TryWithdraw take a mutex for a few
// additions and do not allocate.
type Budget struct {
	now     func() time.Time
	origin  time.Time
	slice   time.Duration
	deposit int64 // credits per request: ratio × unit
	reserve int64 // credits the minimum rate adds per slice

	mu    sync.Mutex
	gen   int64        // index of the current slice since origin
	slots [slots]int64 // slots[gen%slots] is the current slice
	sum   int64        // sum of slots: the balance in credits
}

// NewBudget returns a Budget that allows retries of ratio of the requests
// (0 to MaxRatio) plus minPerSecond retries a second (0 to MaxMinPerSecond),
// counting requests over ttl (MinTTL to MaxTTL). It panics when an argument
// is out of range: they are constants of the caller's, not user input. now
// may be nil (time.Now).
func NewBudget(ratio float64, minPerSecond int, ttl time.Duration, now func() time.Time) *Budget {
	if math.IsNaN(ratio) || ratio < 0 || ratio > MaxRatio {
		panic(fmt.Sprintf("retry.NewBudget: ratio %v is not between 0 and %d", ratio, MaxRatio))
	}
	if minPerSecond < 0 || minPerSecond > MaxMinPerSecond {
		panic(fmt.Sprintf("retry.NewBudget: minPerSecond %d is not between 0 and %d", minPerSecond, MaxMinPerSecond))
	}
	if ttl < MinTTL || ttl > MaxTTL {
		panic(fmt.Sprintf("retry.NewBudget: ttl %v is not between %v and %v", ttl, MinTTL, MaxTTL))
	}
	if now == nil {
		now = time.Now
	}
	slice := ttl / slots
	b := &Budget{
		now:     now,
		origin:  now(),
		slice:   slice,
		deposit: int64(ratio * unit), // rounded down: never more than the ratio
		// minPerSecond × slice in seconds × unit, rounded down.
		reserve: int64(minPerSecond) * int64(slice) / (int64(time.Second) / unit),
	}
	b.slots[0] = b.reserve
	b.sum = b.reserve
	return b
}

// NewDefaultBudget returns a Budget with Linkerd's defaults: 20 % of
// requests plus 10 retries a second, over 10 s.
func NewDefaultBudget(now func() time.Time) *Budget {
	return NewBudget(DefaultRatio, DefaultMinPerSecond, DefaultTTL, now)
}

// Deposit records a request: call it once for every original request (not
// for retries) that the budget covers.
func (b *Budget) Deposit() {
	b.mu.Lock()
	b.advanceLocked()
	b.slots[b.gen%slots] += b.deposit
	b.sum += b.deposit
	b.mu.Unlock()
}

// TryWithdraw reports whether a retry may be sent now, and if so counts it.
// Call it before each retry; false means the request's last response is
// the answer.
func (b *Budget) TryWithdraw() bool {
	b.mu.Lock()
	b.advanceLocked()
	ok := b.sum >= unit
	if ok {
		b.slots[b.gen%slots] -= unit
		b.sum -= unit
	}
	b.mu.Unlock()
	return ok
}

// Balance is the number of retries TryWithdraw would allow now.
func (b *Budget) Balance() int {
	b.mu.Lock()
	b.advanceLocked()
	sum := b.sum
	b.mu.Unlock()
	if sum <= 0 {
		return 0
	}
	return int(sum / unit)
}

// advanceLocked moves the window to the current slice: slices that have
// ended more than a TTL ago expire, and each new slice starts with the
// minimum rate's share. A clock that goes back keeps the current slice.
func (b *Budget) advanceLocked() {
	gen := int64(b.now().Sub(b.origin) / b.slice)
	steps := gen - b.gen
	if steps <= 0 {
		return
	}
	if steps >= slots {
		for i := range b.slots {
			b.slots[i] = b.reserve
		}
		b.sum = slots * b.reserve
		b.gen = gen
		return
	}
	for range steps {
		b.gen++
		i := b.gen % slots
		b.sum += b.reserve - b.slots[i]
		b.slots[i] = b.reserve
	}
}
