package proxy

import (
	"context"
	"runtime/metrics"
	"time"
)

// The soft memory limit (Config.MemoryLimit) keeps a quiet proxy small, but
// a limit below what the process really needs turns it into a collection on
// nearly every allocation: Go then spends up to half the CPU collecting and
// latencies grow to milliseconds. That happens with identity, mTLS and
// HTTP/2, whose runtime overhead alone can exceed a few MiB (conduit demo's
// proxies collected 100-160 times a second at 10 requests/s). So the proxy
// watches the share of its CPU that goes to the collector and, while it
// stays high, gives the limit headroom in steps, up to memMaxHeadroom; it
// takes the headroom back slowly once collection is cheap again.
//
// The runtime updates its CPU estimates at each collection, so a check with
// no collection learns nothing from them; it is calm when few collections
// ran. Growing also takes many collections in the check, so that one
// collection in a quiet second (start-up, a lull) does not count as
// thrashing.
const (
	memCheckEvery    = time.Second
	memHighGCShare   = 0.10 // of the process's CPU time, over one check
	memBusyCycles    = 10   // collections in one check, at least, to grow
	memCalmCycles    = 2    // collections in one check, at most, to be calm
	memHeadroomStep  = 1 << 20
	memMaxHeadroom   = 8 << 20
	memCalmChecks    = 30 // consecutive calm checks before headroom shrinks
	memMinBusyCPUSec = 0.005
	// memSpiralCycles collections in one check grow the headroom however
	// cheap they are: a collection every 20 ms means the limit, not the
	// allocation rate, drives the collector (seen at 250 a second with a
	// 1 MB heap, each one cheap enough to stay under memHighGCShare, and
	// every one of them a stop of the world).
	memSpiralCycles = 50
)

// memoryGovernor adjusts Proxy.memHeadroom from the collector's CPU share.
type memoryGovernor struct {
	samples                 []metrics.Sample
	lastGC, lastAll, lastNo float64
	calm                    int
}

func newMemoryGovernor() *memoryGovernor {
	g := &memoryGovernor{samples: []metrics.Sample{
		{Name: "/cpu/classes/gc/total:cpu-seconds"},
		{Name: "/cpu/classes/total:cpu-seconds"},
		{Name: "/cpu/classes/idle:cpu-seconds"},
		{Name: "/gc/cycles/total:gc-cycles"},
	}}
	g.lastGC, g.lastAll, g.lastNo = g.read()
	return g
}

// read returns the collector's and the process's busy CPU seconds and the
// number of collections so far.
func (g *memoryGovernor) read() (gc, busy, cycles float64) {
	metrics.Read(g.samples)
	val := func(i int) float64 {
		switch v := g.samples[i].Value; v.Kind() {
		case metrics.KindFloat64:
			return v.Float64()
		case metrics.KindUint64:
			return float64(v.Uint64())
		}
		return 0
	}
	return val(0), val(1) - val(2), val(3)
}

// next is the headroom after one check, given the current one.
func (g *memoryGovernor) next(headroom int64) int64 {
	gc, busy, cycles := g.read()
	dGC, dBusy, dCycles := gc-g.lastGC, busy-g.lastAll, cycles-g.lastNo
	g.lastGC, g.lastAll, g.lastNo = gc, busy, cycles
	return g.decide(headroom, dGC, dBusy, dCycles)
}

// decide is next's policy, on one interval's collector and busy CPU
// seconds and its number of collections.
func (g *memoryGovernor) decide(headroom int64, dGC, dBusy, dCycles float64) int64 {
	switch {
	case dCycles >= memBusyCycles && dBusy >= memMinBusyCPUSec && dGC/dBusy > memHighGCShare,
		dCycles >= memSpiralCycles:
		g.calm = 0
		return min(headroom+memHeadroomStep, memMaxHeadroom)
	case dCycles <= memCalmCycles:
		if g.calm++; g.calm >= memCalmChecks && headroom > 0 {
			g.calm = 0
			return max(headroom-memHeadroomStep/2, 0)
		}
	default:
		g.calm = 0
	}
	return headroom
}

// governMemory runs the governor until ctx ends.
func (p *Proxy) governMemory(ctx context.Context) {
	g := newMemoryGovernor()
	t := time.NewTicker(memCheckEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		p.mu.Lock()
		if h := g.next(p.memHeadroom); h != p.memHeadroom {
			p.log.Debug("memory limit headroom", "from", p.memHeadroom, "to", h)
			p.memHeadroom = h
			p.adjustMemoryLimitLocked(true)
		}
		p.mu.Unlock()
	}
}
