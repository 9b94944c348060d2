package balance

import (
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

func TestPrefersFastEndpoint(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := New(clk.now)
	eps := []resolve.Endpoint{{Addr: "fast"}, {Addr: "slow"}}
	// Teach the balancer that "slow" takes 500ms and "fast" 1ms.
	for range 20 {
		ep, done := b.Pick(eps)
		if ep.Addr == "slow" {
			done(500*time.Millisecond, false)
		} else {
			done(time.Millisecond, false)
		}
		clk.t = clk.t.Add(10 * time.Millisecond)
	}
	counts := map[string]int{}
	for range 1000 {
		ep, done := b.Pick(eps)
		counts[ep.Addr]++
		done(map[string]time.Duration{"fast": time.Millisecond, "slow": 500 * time.Millisecond}[ep.Addr], false)
	}
	if counts["fast"] < 950 {
		t.Errorf("fast picked %d of 1000 times, want nearly all (%v)", counts["fast"], counts)
	}
}

func TestSpreadsLoadByPending(t *testing.T) {
	b := New(nil)
	eps := []resolve.Endpoint{{Addr: "a"}, {Addr: "b"}}
	// Requests that never finish: outstanding load must alternate.
	counts := map[string]int{}
	for range 100 {
		ep, _ := b.Pick(eps)
		counts[ep.Addr]++
	}
	if counts["a"] < 45 || counts["b"] < 45 {
		t.Errorf("unbalanced with equal latency: %v", counts)
	}
}

func TestFailuresArePenalised(t *testing.T) {
	clk := &fakeClock{t: time.Unix(1000, 0)}
	b := New(clk.now)
	eps := []resolve.Endpoint{{Addr: "ok"}, {Addr: "broken"}}
	for range 50 {
		ep, done := b.Pick(eps)
		done(time.Millisecond, ep.Addr == "broken")
	}
	counts := map[string]int{}
	for range 200 {
		ep, done := b.Pick(eps)
		counts[ep.Addr]++
		done(time.Millisecond, ep.Addr == "broken")
	}
	if counts["broken"] > 10 {
		t.Errorf("broken endpoint picked %d of 200 times", counts["broken"])
	}
}

func TestWeights(t *testing.T) {
	b := New(nil)
	eps := []resolve.Endpoint{{Addr: "heavy", Weight: 10}, {Addr: "light", Weight: 1}}
	counts := map[string]int{}
	for range 110 {
		ep, _ := b.Pick(eps)
		counts[ep.Addr]++
	}
	if counts["heavy"] < 80 {
		t.Errorf("weights ignored: %v", counts)
	}
}

func TestSingleAndDoneTwice(t *testing.T) {
	b := New(nil)
	ep, done := b.Pick([]resolve.Endpoint{{Addr: "only"}})
	if ep.Addr != "only" {
		t.Fatalf("got %q", ep.Addr)
	}
	done(time.Millisecond, false)
	done(time.Millisecond, false) // no double decrement
	if p := b.stats["only"].pending; p != 0 {
		t.Errorf("pending = %d", p)
	}
}
