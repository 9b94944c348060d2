package retry

import (
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

var epoch = time.Unix(1000, 0)

// TestBudgetBoundsRetries is the property issue 14 asks for: requests at a
// steady rate, every response a failure and every failure retried as long
// as the budget allows (up to three retries each); at no instant do the
// retries exceed ratio × requests + minPerSecond × elapsed seconds (the
// slice under way counted in full), so the load on the service stays
// under (1 + ratio) × requests + the minimum rate. And the budget is not
// stingier than that: by the end nearly all of it has been used.
func TestBudgetBoundsRetries(t *testing.T) {
	for _, tc := range []struct {
		name          string
		rps           int
		ratio         float64
		min           int
		ttl           time.Duration
		seconds       int
		retriesPerReq int
	}{
		{"defaults at 100 rps", 100, DefaultRatio, DefaultMinPerSecond, DefaultTTL, 120, 3},
		{"defaults at 1000 rps", 1000, DefaultRatio, DefaultMinPerSecond, DefaultTTL, 60, 3},
		{"defaults at 3 rps (min rate dominates)", 3, DefaultRatio, DefaultMinPerSecond, DefaultTTL, 120, 10},
		{"ratio 0.5, 1.5 s ttl", 77, 0.5, 4, 1500 * time.Millisecond, 90, 2},
		{"ratio only", 50, 0.3, 0, DefaultTTL, 60, 1},
		{"min rate only", 500, 0, 10, DefaultTTL, 60, 3},
		{"ratio above 1", 20, 2.5, 1, 5 * time.Second, 40, 5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := &fakeClock{t: epoch}
			b := NewBudget(tc.ratio, tc.min, tc.ttl, clk.now)
			slice := tc.ttl / slots
			interval := time.Second / time.Duration(tc.rps)
			bound := func(requests int) float64 {
				started := clk.t.Sub(epoch)/slice + 1
				elapsed := (started * slice).Seconds()
				return tc.ratio*float64(requests) + float64(tc.min)*elapsed + 1e-9
			}
			requests, retries := 0, 0
			total := tc.rps * tc.seconds
			for i := range total {
				clk.t = epoch.Add(time.Duration(i) * interval)
				b.Deposit()
				requests++
				for range tc.retriesPerReq {
					if !b.TryWithdraw() {
						break
					}
					retries++
				}
				if float64(retries) > bound(requests) {
					t.Fatalf("at %v: %d retries for %d requests, above %.2f",
						clk.t.Sub(epoch), retries, requests, bound(requests))
				}
			}
			// The whole simulated run: seconds × rps requests.
			clk.t = epoch.Add(time.Duration(tc.seconds)*time.Second - 1)
			want := tc.ratio*float64(requests) + float64(tc.min*tc.seconds)
			if float64(retries) > want+1e-9 {
				t.Errorf("%d retries for %d requests over %d s, above %.1f", retries, requests, tc.seconds, want)
			}
			if float64(retries) < 0.95*want {
				t.Errorf("%d retries for %d requests over %d s: the budget allowed less than 95%% of %.1f", retries, requests, tc.seconds, want)
			}
			if load := requests + retries; float64(load) > (1+tc.ratio)*float64(requests)+float64(tc.min*tc.seconds)+1e-9 {
				t.Errorf("load %d above (1 + %v) × %d + %d/s × %d s", load, tc.ratio, requests, tc.min, tc.seconds)
			}
			t.Logf("%d requests, %d retries (bound %.1f)", requests, retries, want)
		})
	}
}

func withdrawAll(b *Budget) int {
	n := 0
	for b.TryWithdraw() {
		n++
	}
	return n
}

// A new budget has one slice's share of the minimum rate, not the whole
// reserve; each slice adds its share.
func TestBudgetMinRateAccruesBySlice(t *testing.T) {
	clk := &fakeClock{t: epoch}
	b := NewBudget(DefaultRatio, 10, 10*time.Second, clk.now)
	if got := b.Balance(); got != 10 {
		t.Fatalf("new budget balance = %d, want 10 (one second of 10/s)", got)
	}
	if got := withdrawAll(b); got != 10 {
		t.Fatalf("withdrew %d, want 10", got)
	}
	clk.t = clk.t.Add(999 * time.Millisecond)
	if b.TryWithdraw() {
		t.Fatal("withdrew again within the first second")
	}
	clk.t = clk.t.Add(time.Millisecond)
	if got := withdrawAll(b); got != 10 {
		t.Fatalf("second second: withdrew %d, want 10", got)
	}
}

// After a TTL without traffic the window holds minPerSecond × TTL, as
// Finagle's reserve: a burst may use it (the idle seconds earned it).
func TestBudgetReserveAfterIdle(t *testing.T) {
	clk := &fakeClock{t: epoch}
	b := NewBudget(DefaultRatio, 10, 10*time.Second, clk.now)
	balanceAt(t, b, clk, time.Hour, 100)
	balanceAt(t, b, clk, time.Hour+3*time.Second, 100) // slices replaced, not added
}

// balanceAt moves the clock to epoch + at and checks the budget's balance.
func balanceAt(t *testing.T, b *Budget, clk *fakeClock, at time.Duration, want int) {
	t.Helper()
	clk.t = epoch.Add(at)
	if got := b.Balance(); got != want {
		t.Errorf("balance at %v = %d, want %d", at, got, want)
	}
}

// Deposits count for the TTL (the slices under way and the nine before).
func TestBudgetDepositsExpire(t *testing.T) {
	clk := &fakeClock{t: epoch}
	b := NewBudget(0.5, 0, 10*time.Second, clk.now)
	clk.t = epoch.Add(500 * time.Millisecond)
	for range 100 {
		b.Deposit()
	}
	balanceAt(t, b, clk, 500*time.Millisecond, 50)
	balanceAt(t, b, clk, 9*time.Second+999*time.Millisecond, 50)
	balanceAt(t, b, clk, 10*time.Second, 0)
}

// A credit is spent once: a deposit that expires before the retry it paid
// for leaves a debt, so new deposits pay the debt before they allow
// retries, until the retry expires too.
func TestBudgetCreditIsSpentOnce(t *testing.T) {
	clk := &fakeClock{t: epoch}
	b := NewBudget(1, 0, 10*time.Second, clk.now)
	for range 10 {
		b.Deposit()
	}
	clk.t = epoch.Add(5 * time.Second)
	if got := withdrawAll(b); got != 10 {
		t.Fatalf("withdrew %d, want 10", got)
	}
	clk.t = epoch.Add(10 * time.Second) // the deposits expire, not the retries
	for range 10 {
		b.Deposit()
	}
	if got := withdrawAll(b); got != 0 {
		t.Fatalf("withdrew %d while the first retries still count, want 0", got)
	}
	clk.t = epoch.Add(15 * time.Second) // the first retries expire
	if got := withdrawAll(b); got != 10 {
		t.Fatalf("withdrew %d, want 10", got)
	}
}

func TestBudgetClockGoingBack(t *testing.T) {
	clk := &fakeClock{t: epoch}
	b := NewBudget(1, 0, 10*time.Second, clk.now)
	clk.t = epoch.Add(5 * time.Second)
	b.Deposit()
	clk.t = epoch.Add(-time.Hour)
	b.Deposit()
	balanceAt(t, b, clk, -time.Hour, 2)
	balanceAt(t, b, clk, 15*time.Second, 0)
}

func TestNewBudgetRejectsBadArguments(t *testing.T) {
	for _, tc := range []struct {
		name  string
		ratio float64
		min   int
		ttl   time.Duration
	}{
		{"negative ratio", -0.1, 10, DefaultTTL},
		{"NaN ratio", math.NaN(), 10, DefaultTTL},
		{"huge ratio", 1001, 10, DefaultTTL},
		{"negative min", 0.2, -1, DefaultTTL},
		{"short ttl", 0.2, 10, 999 * time.Millisecond},
		{"long ttl", 0.2, 10, 61 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("no panic")
				}
			}()
			NewBudget(tc.ratio, tc.min, tc.ttl, nil)
		})
	}
}

// Many goroutines deposit and retry while the clock moves: the bound holds
// exactly (run with -race).
func TestBudgetConcurrent(t *testing.T) {
	var nanos atomic.Int64
	now := func() time.Time { return epoch.Add(time.Duration(nanos.Load())) }
	b := NewBudget(DefaultRatio, DefaultMinPerSecond, DefaultTTL, now)
	const workers, perWorker = 8, 2000
	var requests, retries atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range perWorker {
				nanos.Add(int64(2 * time.Millisecond))
				b.Deposit()
				requests.Add(1)
				for range 2 {
					if !b.TryWithdraw() {
						break
					}
					retries.Add(1)
				}
				_ = b.Balance()
			}
		}()
	}
	wg.Wait()
	elapsed := float64(time.Duration(nanos.Load())/time.Second + 1)
	bound := DefaultRatio*float64(requests.Load()) + DefaultMinPerSecond*elapsed
	if float64(retries.Load()) > bound {
		t.Errorf("%d retries for %d requests over %.0f s, above %.1f", retries.Load(), requests.Load(), elapsed, bound)
	}
	if float64(retries.Load()) < 0.9*bound {
		t.Errorf("%d retries for %d requests over %.0f s: less than 90%% of %.1f", retries.Load(), requests.Load(), elapsed, bound)
	}
}

func TestBudgetDoesNotAllocate(t *testing.T) {
	b := NewDefaultBudget(nil)
	if n := testing.AllocsPerRun(1000, func() {
		b.Deposit()
		b.TryWithdraw()
	}); n != 0 {
		t.Errorf("Deposit + TryWithdraw: %v allocations", n)
	}
}

func BenchmarkBudgetDeposit(b *testing.B) {
	bud := NewDefaultBudget(nil)
	b.ReportAllocs()
	for b.Loop() {
		bud.Deposit()
	}
}

func BenchmarkBudgetTryWithdraw(b *testing.B) {
	bud := NewDefaultBudget(nil)
	b.ReportAllocs()
	for b.Loop() {
		bud.Deposit()
		bud.TryWithdraw()
	}
}

// BenchmarkBudgetParallel: every goroutine deposits and tries a retry, on
// one budget (one per route or Service in the proxy).
func BenchmarkBudgetParallel(b *testing.B) {
	bud := NewDefaultBudget(nil)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			bud.Deposit()
			bud.TryWithdraw()
		}
	})
}
