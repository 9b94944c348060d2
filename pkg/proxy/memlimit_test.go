package proxy

import (
	"runtime"
	"runtime/metrics"
	"testing"
)

// TestMemoryGovernorDecide: headroom grows a step while the collector
// takes a high share of the CPU, up to the cap, and shrinks only after a
// calm spell; idle intervals change nothing.
func TestMemoryGovernorDecide(t *testing.T) {
	g := &memoryGovernor{}
	h := int64(0)
	if h = g.decide(h, 0.5, 1, 400); h != memHeadroomStep {
		t.Fatalf("after a thrashing second: headroom %d, want one step", h)
	}
	for range 20 {
		h = g.decide(h, 0.5, 1, 400)
	}
	if h != memMaxHeadroom {
		t.Fatalf("headroom %d, want the cap %d", h, memMaxHeadroom)
	}
	for i := range memCalmChecks - 1 {
		if h2 := g.decide(h, 0, 0, 0); h2 != h {
			t.Fatalf("headroom shrank after %d calm checks, want %d", i+1, memCalmChecks)
		}
	}
	if h2 := g.decide(h, 0.001, 1, 1); h2 != h-memHeadroomStep/2 {
		t.Errorf("after %d calm checks: headroom %d, want %d", memCalmChecks, h2, h-memHeadroomStep/2)
	}
	// One expensive collection in a quiet second is not thrashing.
	if h2 := (&memoryGovernor{}).decide(0, 0.004, 0.01, 1); h2 != 0 {
		t.Errorf("one collection grew the headroom to %d", h2)
	}
	// Frequent but cheap collections neither grow nor shrink it, and end
	// the calm spell.
	g.calm = memCalmChecks - 1
	if h2 := g.decide(h, 0.05, 1, 30); h2 != h || g.calm != 0 {
		t.Errorf("cheap collections: headroom %d (want %d), calm %d (want 0)", h2, h, g.calm)
	}
	// Collections every few milliseconds are a spiral even when each is
	// cheap.
	if h2 := (&memoryGovernor{}).decide(0, 0.03, 1, 250); h2 != memHeadroomStep {
		t.Errorf("250 cheap collections in a second: headroom %d, want one step", h2)
	}
	if h2 := (&memoryGovernor{}).decide(0, 0, 0, 0); h2 != 0 {
		t.Errorf("no headroom to give back: %d", h2)
	}
}

// TestMemoryGovernorReadsTheRuntime: the runtime metrics it reads exist.
func TestMemoryGovernorReadsTheRuntime(t *testing.T) {
	g := newMemoryGovernor()
	for _, s := range g.samples {
		if s.Value.Kind() == metrics.KindBad {
			t.Errorf("runtime metric %s is not supported", s.Name)
		}
	}
	runtime.GC() // the CPU estimates are updated at collections
	if _, busy, cycles := g.read(); busy <= 0 || cycles < 1 {
		t.Errorf("busy CPU seconds %v, collections %v", busy, cycles)
	}
}
