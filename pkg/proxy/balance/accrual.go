package balance

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// Defaults of consecutive failure accrual: Linkerd's.
const (
	DefaultMaxFailures = 7
	DefaultMinPenalty  = time.Second
	DefaultMaxPenalty  = time.Minute
	DefaultJitterRatio = 0.5
	// MaxJitterRatio bounds Accrual.JitterRatio (as Linkerd does).
	MaxJitterRatio = 100
)

// ErrAllUnavailable is PickWith's answer when every endpoint is in
// penalty: the request should fail fast (503, gRPC UNAVAILABLE) rather
// than go to an endpoint that has just failed MaxFailures times in a row.
var ErrAllUnavailable = errors.New("every endpoint is out of the balancer after consecutive failures (failure accrual)")

// Accrual is consecutive failure accrual (circuit breaking), Linkerd's
// balancer.linkerd.io/failure-accrual: consecutive. An endpoint whose
// attempts fail MaxFailures times in a row is taken out of the balancer for
// a penalty; when it is over, the endpoint gets one request, the probe
// (preferred over the others whenever P2C samples it); while the probe is
// out the endpoint takes nothing else. A successful probe puts it back; a
// failed one takes it out again for twice the last penalty's base. The
// n-th penalty in a row is MinPenalty × 2ⁿ⁻¹, capped at MaxPenalty, plus a
// random share of it of up to JitterRatio, never past MaxPenalty: each
// penalty lies between MinPenalty and MaxPenalty.
//
// Outcomes of attempts that began before the endpoint's last change of
// state (taken out, probed, put back) are not counted. The state is kept
// per endpoint address in the Balancer.
type Accrual struct {
	MaxFailures int
	MinPenalty  time.Duration
	MaxPenalty  time.Duration
	JitterRatio float64
}

// DefaultAccrual is failure accrual with Linkerd's defaults: 7 failures in
// a row, penalties from 1s to 1m, jitter ratio 0.5.
func DefaultAccrual() Accrual {
	return Accrual{
		MaxFailures: DefaultMaxFailures,
		MinPenalty:  DefaultMinPenalty,
		MaxPenalty:  DefaultMaxPenalty,
		JitterRatio: DefaultJitterRatio,
	}
}

// Validate reports what is wrong with a: MaxFailures below 1, a penalty
// that is not positive, MinPenalty above MaxPenalty, a JitterRatio outside
// 0 to MaxJitterRatio.
func (a *Accrual) Validate() error {
	switch {
	case a.MaxFailures < 1:
		return fmt.Errorf("failure accrual: max failures %d is below 1", a.MaxFailures)
	case a.MinPenalty <= 0:
		return fmt.Errorf("failure accrual: min penalty %v is not positive", a.MinPenalty)
	case a.MaxPenalty < a.MinPenalty:
		return fmt.Errorf("failure accrual: min penalty %v is longer than max penalty %v", a.MinPenalty, a.MaxPenalty)
	case !(a.JitterRatio >= 0 && a.JitterRatio <= MaxJitterRatio):
		return fmt.Errorf("failure accrual: jitter ratio %v is not between 0 and %d", a.JitterRatio, MaxJitterRatio)
	}
	return nil
}

// penalty is the length of the penalty after trips earlier ones in a row,
// with r the random jitter factor in [0, 1).
func (a *Accrual) penalty(trips int, r float64) time.Duration {
	base := a.MinPenalty
	for range trips {
		if base > a.MaxPenalty/2 {
			base = a.MaxPenalty
			break
		}
		base *= 2
	}
	base = min(base, a.MaxPenalty)
	jitter := math.Min(float64(base)*a.JitterRatio*r, float64(a.MaxPenalty-base))
	return base + time.Duration(jitter)
}

// ParseAccrual reads the balancer.conduit.io annotations of a Service:
// nil when failure accrual is off (no balancer.conduit.io/failure-accrual;
// its parameters are then ignored), else the policy with the defaults for
// the parameters not set. The error names the annotation and its value.
func ParseAccrual(annotations map[string]string) (*Accrual, error) {
	mode, ok := annotations[contract.AnnotationFailureAccrual]
	if !ok {
		return nil, nil
	}
	if strings.TrimSpace(mode) != contract.FailureAccrualConsecutive {
		return nil, fmt.Errorf("annotation %s: %q is not a failure accrual mode: want %q",
			contract.AnnotationFailureAccrual, mode, contract.FailureAccrualConsecutive)
	}
	a := DefaultAccrual()
	if v, ok := annotations[contract.AnnotationFailureAccrualMaxFailures]; ok {
		n, err := strconv.Atoi(strings.TrimSpace(v))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("annotation %s: %q is not a whole number of failures of at least 1",
				contract.AnnotationFailureAccrualMaxFailures, v)
		}
		a.MaxFailures = n
	}
	for _, p := range [...]struct {
		key string
		d   *time.Duration
	}{
		{contract.AnnotationFailureAccrualMinPenalty, &a.MinPenalty},
		{contract.AnnotationFailureAccrualMaxPenalty, &a.MaxPenalty},
	} {
		if v, ok := annotations[p.key]; ok {
			d, err := time.ParseDuration(strings.TrimSpace(v))
			if err != nil || d <= 0 {
				return nil, fmt.Errorf("annotation %s: %q is not a positive duration with a unit, such as 1s or 500ms", p.key, v)
			}
			*p.d = d
		}
	}
	if a.MinPenalty > a.MaxPenalty {
		return nil, fmt.Errorf("annotation %s: %v is longer than %s (%v)",
			contract.AnnotationFailureAccrualMinPenalty, a.MinPenalty, contract.AnnotationFailureAccrualMaxPenalty, a.MaxPenalty)
	}
	if v, ok := annotations[contract.AnnotationFailureAccrualJitterRatio]; ok {
		r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || !(r >= 0 && r <= MaxJitterRatio) {
			return nil, fmt.Errorf("annotation %s: %q is not a ratio from 0 to %d",
				contract.AnnotationFailureAccrualJitterRatio, v, MaxJitterRatio)
		}
		a.JitterRatio = r
	}
	return &a, nil
}

// state is an endpoint's failure accrual state.
type state uint8

const (
	ready   state = iota // picked as usual; failures in a row are counted
	penalty              // not picked until the penalty ends, then probed
	probing              // the probe is out: not picked
)

// available reports whether the endpoint may be picked now.
func (s *stat) available(now time.Time) bool {
	switch s.state {
	case ready:
		return true
	case penalty:
		return !now.Before(s.until)
	}
	return false
}

// penalizedAt reports whether the endpoint is serving a penalty at now.
func (s *stat) penalizedAt(now time.Time) bool {
	return s.state == penalty && now.Before(s.until)
}

// admitLocked records that the endpoint was picked under an Accrual: an
// endpoint whose penalty is over gets its probe.
func (s *stat) admitLocked(now time.Time) {
	if s.state == penalty && !now.Before(s.until) {
		s.state = probing
		s.epoch++
	}
}

// accrueLocked counts an outcome of an attempt of the current epoch.
func (s *stat) accrueLocked(acc *Accrual, failed bool, now time.Time) {
	switch s.state {
	case ready:
		if !failed {
			s.failures = 0
			return
		}
		s.failures++
		if s.failures >= acc.MaxFailures {
			s.tripLocked(acc, now)
		}
	case probing:
		if failed {
			s.tripLocked(acc, now)
			return
		}
		s.state, s.failures, s.trips = ready, 0, 0
		s.epoch++
	}
}

// tripLocked takes the endpoint out for its next penalty.
func (s *stat) tripLocked(acc *Accrual, now time.Time) {
	s.state = penalty
	s.until = now.Add(acc.penalty(s.trips, rand.Float64()))
	s.trips++
	s.failures = 0
	s.epoch++
}

// p2cAccrualLocked is power of two choices over the endpoints available
// under failure accrual: it returns the index in eps of the endpoint to
// pick, or -1 when none is available.
func (b *Balancer) p2cAccrualLocked(eps []resolve.Endpoint, now time.Time) int {
	switch len(eps) {
	case 0:
		return -1
	case 1:
		if b.statLocked(eps[0].Addr, now).available(now) {
			return 0
		}
		return -1
	}
	i, j := twoOf(len(eps))
	si, sj := b.statLocked(eps[i].Addr, now), b.statLocked(eps[j].Addr, now)
	okI, okJ := si.available(now), sj.available(now)
	switch {
	case okI && okJ:
		return b.preferLocked(eps, i, j, si, sj, now)
	case okI:
		return i
	case okJ:
		return j
	}
	return b.resampleLocked(eps, now)
}

// resampleLocked is p2cAccrualLocked when both samples are out: it samples
// again among the available endpoints, walking eps (only while endpoints
// are out).
func (b *Balancer) resampleLocked(eps []resolve.Endpoint, now time.Time) int {
	n := 0
	for _, ep := range eps {
		if b.statLocked(ep.Addr, now).available(now) {
			n++
		}
	}
	if n == 0 {
		return -1
	}
	ri, rj := 0, -1 // ranks among the available endpoints
	if n > 1 {
		ri, rj = twoOf(n)
	}
	i, j := -1, -1
	var si, sj *stat
	rank := 0
	for k, ep := range eps {
		s := b.statLocked(ep.Addr, now)
		if !s.available(now) {
			continue
		}
		switch rank {
		case ri:
			i, si = k, s
		case rj:
			j, sj = k, s
		}
		rank++
	}
	if j < 0 {
		return i
	}
	return b.preferLocked(eps, i, j, si, sj, now)
}

// twoOf returns two distinct random indices below n (at least 2).
func twoOf(n int) (int, int) {
	i := rand.IntN(n)
	j := rand.IntN(n - 1)
	if j >= i {
		j++
	}
	return i, j
}

// preferLocked picks between two available endpoints, eps[i] and eps[j]
// with stats si and sj: one whose penalty is over first (its probe), else
// the cheaper.
func (b *Balancer) preferLocked(eps []resolve.Endpoint, i, j int, si, sj *stat, now time.Time) int {
	switch {
	case si.state == penalty:
		return i
	case sj.state == penalty:
		return j
	}
	if si.cost(eps[i].Weight, now, b.tau) <= sj.cost(eps[j].Weight, now, b.tau) {
		return i
	}
	return j
}
