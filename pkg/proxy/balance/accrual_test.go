package balance

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

var (
	bad   = resolve.Endpoint{Addr: "bad"}
	good  = resolve.Endpoint{Addr: "good"}
	both  = []resolve.Endpoint{bad, good}
	alone = []resolve.Endpoint{bad}
)

// noJitter is accrual after 3 failures, penalties 1s, 2s, 4s, … up to 10s.
func noJitter() *Accrual {
	return &Accrual{MaxFailures: 3, MinPenalty: time.Second, MaxPenalty: 10 * time.Second}
}

// attempt picks from eps with acc and ends the attempt at once.
func attempt(t *testing.T, b *Balancer, eps []resolve.Endpoint, acc *Accrual, failed bool) (resolve.Endpoint, error) {
	t.Helper()
	ep, at, err := b.PickWith(eps, acc)
	if err == nil {
		at.Done(time.Millisecond, failed)
	}
	return ep, err
}

// mustFail sends n failing attempts to bad alone; they must all get
// through.
func mustFail(t *testing.T, b *Balancer, acc *Accrual, n int) {
	t.Helper()
	for i := range n {
		if _, err := attempt(t, b, alone, acc, true); err != nil {
			t.Fatalf("failure %d of %d: %v", i+1, n, err)
		}
	}
}

// isOut reports whether bad is out of the balancer (without sending it a
// request, which would count), and checks that PickWith agrees.
func isOut(t *testing.T, b *Balancer, acc *Accrual) bool {
	t.Helper()
	b.mu.Lock()
	s := b.stats[bad.Addr]
	out := s != nil && !s.available(b.now())
	b.mu.Unlock()
	if out {
		if _, _, err := b.PickWith(alone, acc); !errors.Is(err, ErrAllUnavailable) {
			t.Fatalf("bad is out but PickWith says %v", err)
		}
	}
	return out
}

// outAfter checks that bad is still in after n-1 more failures in a row,
// and out after n.
func outAfter(t *testing.T, b *Balancer, acc *Accrual, n int) {
	t.Helper()
	mustFail(t, b, acc, n-1)
	if isOut(t, b, acc) {
		t.Fatalf("out after %d failures in a row", n-1)
	}
	mustFail(t, b, acc, 1)
	if !isOut(t, b, acc) {
		t.Fatalf("still in after %d failures in a row", n)
	}
}

func TestAccrualTakesOutAfterMaxFailures(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := New(clk.now)
	acc := noJitter()
	// A success resets the count: 2 failures, a success, then 3.
	mustFail(t, b, acc, 2)
	if _, err := attempt(t, b, alone, acc, false); err != nil {
		t.Fatal(err)
	}
	outAfter(t, b, acc, acc.MaxFailures)
	for range 1000 {
		if ep, err := attempt(t, b, both, acc, false); err != nil || ep.Addr != good.Addr {
			t.Fatalf("picked %q, %v while bad is out", ep.Addr, err)
		}
	}
}

func TestAccrualProbeAfterPenalty(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := New(clk.now)
	acc := noJitter()
	mustFail(t, b, acc, 3)
	clk.t = clk.t.Add(time.Second - time.Nanosecond)
	if !isOut(t, b, acc) {
		t.Fatal("in before the penalty's end")
	}
	clk.t = clk.t.Add(time.Nanosecond)
	// The probe goes to bad although good is cheaper.
	ep, probe, err := b.PickWith(both, acc)
	if err != nil || ep.Addr != bad.Addr {
		t.Fatalf("after the penalty: picked %q, %v; want the probe to bad", ep.Addr, err)
	}
	// Nothing else while the probe is out.
	if !isOut(t, b, acc) {
		t.Fatal("a second request while the probe is out")
	}
	for range 100 {
		if ep, err := attempt(t, b, both, acc, false); err != nil || ep.Addr != good.Addr {
			t.Fatalf("picked %q, %v while the probe is out", ep.Addr, err)
		}
	}
	probe.Done(time.Millisecond, false)
	probe.Done(time.Millisecond, true) // a second Done is ignored
	if isOut(t, b, acc) {
		t.Fatal("out after a successful probe")
	}
	// Back in with its failures forgotten: it takes MaxFailures again.
	outAfter(t, b, acc, acc.MaxFailures)
	if s := b.stats["bad"]; s.until.Sub(clk.t) != time.Second {
		t.Errorf("penalty after a successful probe = %v, want the min penalty again", s.until.Sub(clk.t))
	}
}

// Failed probes double the penalty up to the max; a good probe resets it.
func TestAccrualBackoff(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := New(clk.now)
	acc := noJitter()
	mustFail(t, b, acc, 3)
	for _, want := range []time.Duration{1, 2, 4, 8, 10, 10, 10} {
		want *= time.Second
		if got := b.stats["bad"].until.Sub(clk.t); got != want {
			t.Fatalf("penalty = %v, want %v", got, want)
		}
		clk.t = clk.t.Add(want - time.Nanosecond)
		if !isOut(t, b, acc) {
			t.Fatalf("in before the end of a %v penalty", want)
		}
		clk.t = clk.t.Add(time.Nanosecond)
		if _, err := attempt(t, b, alone, acc, true); err != nil { // the probe fails
			t.Fatalf("no probe after a %v penalty: %v", want, err)
		}
	}
	clk.t = clk.t.Add(10 * time.Second)
	if _, err := attempt(t, b, alone, acc, false); err != nil {
		t.Fatal(err)
	}
	mustFail(t, b, acc, 3)
	if got := b.stats["bad"].until.Sub(clk.t); got != time.Second {
		t.Errorf("penalty after a good probe = %v, want 1s", got)
	}
}

func TestAccrualPenaltyJitter(t *testing.T) {
	acc := DefaultAccrual()
	for _, tc := range []struct {
		trips int
		r     float64
		want  time.Duration
	}{
		{0, 0, time.Second},
		{0, 0.5, 1250 * time.Millisecond},
		{1, 1, 3 * time.Second},
		{5, 0, 32 * time.Second},
		{5, 0.5, 40 * time.Second},
		{5, 1, 48 * time.Second},
		{6, 0, time.Minute}, // 64s, capped
		{6, 1, time.Minute},
		{1000, 0.7, time.Minute},
	} {
		if got := acc.penalty(tc.trips, tc.r); got != tc.want {
			t.Errorf("penalty(%d, %v) = %v, want %v", tc.trips, tc.r, got, tc.want)
		}
	}
	// Jitter never takes a penalty past the max.
	capped := Accrual{MaxFailures: 1, MinPenalty: 8 * time.Second, MaxPenalty: 10 * time.Second, JitterRatio: 0.5}
	if got := capped.penalty(0, 0.99); got != 10*time.Second {
		t.Errorf("8s + up to 4s of jitter, max 10s: %v", got)
	}

	// Endpoints taken out at once get penalties spread over [1s, 1.5s].
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := New(clk.now)
	acc.MaxFailures = 1
	seen := map[time.Duration]bool{}
	for i := range 200 {
		eps := []resolve.Endpoint{{Addr: fmt.Sprint("ep", i)}}
		if _, err := attempt(t, b, eps, &acc, true); err != nil {
			t.Fatal(err)
		}
		p := b.stats[eps[0].Addr].until.Sub(clk.t)
		if p < time.Second || p > 1500*time.Millisecond {
			t.Fatalf("penalty %v outside [1s, 1.5s]", p)
		}
		seen[p/(50*time.Millisecond)] = true
	}
	if len(seen) < 8 {
		t.Errorf("200 penalties fall in %d of the ten 50ms bands of [1s, 1.5s]: not jittered", len(seen))
	}
}

// With every endpoint out, PickWith fails fast; Pick (no accrual) does not.
func TestAccrualAllUnavailable(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := New(clk.now)
	acc := noJitter()
	acc.MaxFailures = 1
	eps := []resolve.Endpoint{{Addr: "a"}, {Addr: "b"}, {Addr: "c"}}
	for _, ep := range eps {
		if _, err := attempt(t, b, []resolve.Endpoint{ep}, acc, true); err != nil {
			t.Fatal(err)
		}
	}
	for range 50 {
		ep, at, err := b.PickWith(eps, acc)
		if !errors.Is(err, ErrAllUnavailable) || ep.Addr != "" {
			t.Fatalf("every endpoint out: %q, %v; want ErrAllUnavailable", ep.Addr, err)
		}
		at.Done(time.Millisecond, true) // the zero Attempt: nothing
	}
	if _, _, err := b.PickWith(nil, acc); !errors.Is(err, ErrAllUnavailable) {
		t.Errorf("no endpoints: %v", err)
	}
	ep, done := b.Pick(eps)
	if ep.Addr == "" {
		t.Fatal("Pick without accrual picked nothing")
	}
	done(time.Millisecond, false)
	// One endpoint back (the others' probes fail): it takes everything,
	// P2C sampling again when both its samples are out.
	clk.t = clk.t.Add(time.Second)
	for _, ep := range eps {
		if _, err := attempt(t, b, []resolve.Endpoint{ep}, acc, ep.Addr != "b"); err != nil {
			t.Fatal(err)
		}
	}
	for range 100 {
		if ep, err := attempt(t, b, eps, acc, false); err != nil || ep.Addr != "b" {
			t.Fatalf("picked %q, %v; want b, the one endpoint in", ep.Addr, err)
		}
	}
}

// Outcomes of attempts that began before the endpoint was taken out do
// not count; nor do those of attempts picked without accrual.
func TestAccrualIgnoresStaleOutcomes(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := New(clk.now)
	acc := noJitter()
	var inFlight [5]Attempt
	for i := range inFlight {
		_, at, err := b.PickWith(alone, acc)
		if err != nil {
			t.Fatal(err)
		}
		inFlight[i] = at
	}
	for i := range 3 {
		inFlight[i].Done(time.Millisecond, true)
	}
	until := b.stats["bad"].until
	if !isOut(t, b, acc) {
		t.Fatal("in after 3 failures")
	}
	clk.t = clk.t.Add(time.Second)
	_, probe, err := b.PickWith(alone, acc)
	if err != nil {
		t.Fatal(err)
	}
	inFlight[3].Done(time.Millisecond, false) // not the probe: still probing
	if !isOut(t, b, acc) {
		t.Fatal("a stale success ended the probe")
	}
	probe.Done(time.Millisecond, false)
	inFlight[4].Done(time.Millisecond, true) // stale failure: not counted
	if s := b.stats["bad"]; s.failures != 0 || s.until != until {
		t.Errorf("stale failure counted: %d failures", s.failures)
	}
	// Attempts picked without accrual are not counted.
	for range 10 {
		_, done := b.Pick(alone)
		done(time.Millisecond, true)
	}
	if isOut(t, b, acc) {
		t.Error("failures of Pick (no accrual) took the endpoint out")
	}
	if s := b.stats["bad"]; s.pending != 0 {
		t.Errorf("pending = %d, want 0", s.pending)
	}
}

// Without accrual nothing changes: a failing endpoint is still picked.
func TestAccrualOff(t *testing.T) {
	b := New(nil)
	for range 100 {
		ep, at, err := b.PickWith(alone, nil)
		if err != nil || ep.Addr != bad.Addr {
			t.Fatalf("PickWith without accrual: %q, %v", ep.Addr, err)
		}
		at.Done(time.Millisecond, true)
	}
}

// The penalty of an idle endpoint outlives the eviction of idle stats.
func TestAccrualSurvivesEviction(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := New(clk.now)
	acc := &Accrual{MaxFailures: 1, MinPenalty: 10 * time.Minute, MaxPenalty: time.Hour}
	mustFail(t, b, acc, 1)
	for i := range maxStats {
		_, done := b.Pick([]resolve.Endpoint{{Addr: fmt.Sprint("ep", i)}})
		done(time.Millisecond, false)
	}
	clk.t = clk.t.Add(2 * time.Minute)
	_, done := b.Pick([]resolve.Endpoint{{Addr: "new"}}) // evicts the idle
	done(time.Millisecond, false)
	if len(b.stats) > 3 {
		t.Fatalf("%d stats left after eviction", len(b.stats))
	}
	if !isOut(t, b, acc) {
		t.Error("eviction ended a penalty")
	}
}

// Goroutines pick concurrently, half from bad alone (which always fails),
// half from all four endpoints, while the clock moves (run with -race).
func TestAccrualConcurrent(t *testing.T) {
	var nanos atomic.Int64
	b := New(func() time.Time { return time.Unix(1000, nanos.Load()) })
	acc := DefaultAccrual()
	all := []resolve.Endpoint{{Addr: "a"}, {Addr: "b"}, {Addr: "c"}, bad}
	var badPicks, errsAll atomic.Int64
	var wg sync.WaitGroup
	for g := range 8 {
		eps := all
		if g%2 == 0 {
			eps = alone
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 2000 {
				nanos.Add(int64(time.Millisecond))
				ep, at, err := b.PickWith(eps, &acc)
				if err != nil {
					if len(eps) > 1 {
						errsAll.Add(1)
					}
					continue
				}
				if ep.Addr == bad.Addr {
					badPicks.Add(1)
				}
				at.Done(time.Millisecond, ep.Addr == bad.Addr)
			}
		}()
	}
	wg.Wait()
	if errsAll.Load() != 0 {
		t.Errorf("%d errors with healthy endpoints", errsAll.Load())
	}
	// 16 s of traffic: bad takes requests until 7 failures (plus what the 8
	// goroutines have in flight then), then probes after 1s, 2s, 4s and 8s
	// (+ jitter): a handful, where it would take some 8,000 without
	// accrual.
	if n := badPicks.Load(); n > 7+8+6 {
		t.Errorf("bad picked %d times", n)
	} else {
		t.Logf("bad picked %d times of 16,000", n)
	}
}

func TestParseAccrual(t *testing.T) {
	if a, err := ParseAccrual(map[string]string{contract.AnnotationFailureAccrualMaxFailures: "3"}); a != nil || err != nil {
		t.Errorf("without failure-accrual: %+v, %v; want off", a, err)
	}
	a, err := ParseAccrual(map[string]string{contract.AnnotationFailureAccrual: "consecutive"})
	if err != nil || *a != DefaultAccrual() {
		t.Errorf("defaults: %+v, %v", a, err)
	}
	a, err = ParseAccrual(map[string]string{
		contract.AnnotationFailureAccrual:            "consecutive",
		contract.AnnotationFailureAccrualMaxFailures: "3",
		contract.AnnotationFailureAccrualMinPenalty:  "500ms",
		contract.AnnotationFailureAccrualMaxPenalty:  "2m",
		contract.AnnotationFailureAccrualJitterRatio: "0",
	})
	want := Accrual{MaxFailures: 3, MinPenalty: 500 * time.Millisecond, MaxPenalty: 2 * time.Minute}
	if err != nil || *a != want {
		t.Errorf("all set: %+v, %v; want %+v", a, err, want)
	}
	if err := a.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}
	for _, tc := range []struct {
		key, val, msg string
	}{
		{contract.AnnotationFailureAccrual, "sometimes", `is not a failure accrual mode: want "consecutive"`},
		{contract.AnnotationFailureAccrual, "", `is not a failure accrual mode`},
		{contract.AnnotationFailureAccrualMaxFailures, "0", "is not a whole number of failures of at least 1"},
		{contract.AnnotationFailureAccrualMaxFailures, "seven", "is not a whole number of failures of at least 1"},
		{contract.AnnotationFailureAccrualMinPenalty, "1", "is not a positive duration with a unit"},
		{contract.AnnotationFailureAccrualMaxPenalty, "-1m", "is not a positive duration with a unit"},
		{contract.AnnotationFailureAccrualJitterRatio, "101", "is not a ratio from 0 to 100"},
		{contract.AnnotationFailureAccrualJitterRatio, "NaN", "is not a ratio from 0 to 100"},
		{contract.AnnotationFailureAccrualJitterRatio, "half", "is not a ratio from 0 to 100"},
	} {
		ann := map[string]string{contract.AnnotationFailureAccrual: "consecutive", tc.key: tc.val}
		_, err := ParseAccrual(ann)
		if err == nil || !strings.HasPrefix(err.Error(), "annotation "+tc.key+": ") ||
			!strings.Contains(err.Error(), fmt.Sprintf("%q", tc.val)) || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: %q: error %v; want one naming both and saying %q", tc.key, tc.val, err, tc.msg)
		}
	}
	_, err = ParseAccrual(map[string]string{
		contract.AnnotationFailureAccrual:           "consecutive",
		contract.AnnotationFailureAccrualMinPenalty: "2m",
	})
	if want := "annotation " + contract.AnnotationFailureAccrualMinPenalty + ": 2m0s is longer than " +
		contract.AnnotationFailureAccrualMaxPenalty + " (1m0s)"; err == nil || err.Error() != want {
		t.Errorf("min above max: %v; want %q", err, want)
	}
}

func TestAccrualValidate(t *testing.T) {
	d := DefaultAccrual()
	if err := d.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	for _, tc := range []struct {
		change func(*Accrual)
		msg    string
	}{
		{func(a *Accrual) { a.MaxFailures = 0 }, "max failures 0 is below 1"},
		{func(a *Accrual) { a.MinPenalty = 0 }, "min penalty 0s is not positive"},
		{func(a *Accrual) { a.MaxPenalty = time.Millisecond }, "min penalty 1s is longer than max penalty 1ms"},
		{func(a *Accrual) { a.JitterRatio = -1 }, "jitter ratio -1 is not between 0 and 100"},
	} {
		a := DefaultAccrual()
		tc.change(&a)
		if err := a.Validate(); err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("error %v, want %q", err, tc.msg)
		}
	}
}

func TestPickWithDoesNotAllocate(t *testing.T) {
	b := New(nil)
	eps := benchEndpoints()
	acc := DefaultAccrual()
	for _, tc := range []struct {
		name string
		acc  *Accrual
	}{{"off", nil}, {"on", &acc}} {
		if n := testing.AllocsPerRun(1000, func() {
			_, at, _ := b.PickWith(eps, tc.acc)
			at.Done(time.Millisecond, false)
		}); n != 0 {
			t.Errorf("accrual %s: %v allocations", tc.name, n)
		}
	}
}

func benchEndpoints() []resolve.Endpoint {
	eps := make([]resolve.Endpoint, 8)
	for i := range eps {
		eps[i] = resolve.Endpoint{Addr: fmt.Sprintf("10.0.0.%d:8080", i+1)}
	}
	return eps
}

// BenchmarkPick is the existing API (a done closure).
func BenchmarkPick(b *testing.B) {
	bal := New(nil)
	eps := benchEndpoints()
	b.ReportAllocs()
	for b.Loop() {
		_, done := bal.Pick(eps)
		done(time.Millisecond, false)
	}
}

func BenchmarkPickWith(b *testing.B) {
	acc := DefaultAccrual()
	for _, bc := range []struct {
		name string
		acc  *Accrual
		out  int
	}{
		{"accrual=off", nil, 0},
		{"accrual=on", &acc, 0},
		{"accrual=on/2of8out", &acc, 2},
		{"accrual=on/7of8out", &acc, 7},
	} {
		b.Run(bc.name, func(b *testing.B) {
			bal := New(nil)
			eps := benchEndpoints()
			one := Accrual{MaxFailures: 1, MinPenalty: time.Hour, MaxPenalty: time.Hour}
			for _, ep := range eps[:bc.out] {
				_, at, _ := bal.PickWith([]resolve.Endpoint{ep}, &one)
				at.Done(time.Millisecond, true)
			}
			b.ReportAllocs()
			for b.Loop() {
				_, at, _ := bal.PickWith(eps, bc.acc)
				at.Done(time.Millisecond, false)
			}
		})
	}
}
