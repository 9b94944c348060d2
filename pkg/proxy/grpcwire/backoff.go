package grpcwire

import (
	"math/rand/v2"
	"time"
)

// Backoff is the delay before retrying a call that failed n times in a row
// (n from 0): base doubled n times, at most limit, with equal jitter (drawn
// uniformly from [d/2, d]) so that proxies restarted together do not call
// the controller in step. The proxy's control-plane clients (identity,
// destination, inbound policy) all retry with it.
func Backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 0; i < n && d < limit; i++ {
		d *= 2
	}
	d = min(d, limit)
	return d/2 + rand.N(d/2+1)
}
