package main

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"sync/atomic"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// fanoutRun collects, for each change of one run, when each proxy saw it.
type fanoutRun struct {
	base, changes, n int
	recv             []atomic.Int64 // unix nanos, [change*n + proxy]; 0: not yet
	count            []atomic.Int64
	done             []chan struct{} // closed when every proxy saw the change
}

func newFanoutRun(base, changes, n int) *fanoutRun {
	r := &fanoutRun{base: base, changes: changes, n: n,
		recv: make([]atomic.Int64, changes*n), count: make([]atomic.Int64, changes), done: make([]chan struct{}, changes)}
	for k := range r.done {
		r.done[k] = make(chan struct{})
	}
	return r
}

// received records that proxy saw marker g at now (the first time counts).
func (r *fanoutRun) received(g, proxy int, now int64) {
	k := g - r.base - 1
	if g == 0 || k < 0 || k >= r.changes || proxy >= r.n {
		return
	}
	if r.recv[k*r.n+proxy].CompareAndSwap(0, now) && r.count[k].Add(1) == int64(r.n) {
		close(r.done[k])
	}
}

// changeResult is one change: the write's own duration and, over the
// proxies, how long after the write was issued each saw it.
type changeResult struct {
	write                time.Duration
	first, p50, p99, max time.Duration
	missing              int
}

type fanoutResult struct {
	proxies, pods int
	changes       []changeResult
	all           []time.Duration // every proxy's latency of every change
	// CPU of the controller and of the bench process (the receiving
	// proxies) over the run, and the updates delivered meanwhile.
	controllerCPU, benchCPU time.Duration
	delivered               int64
}

// runFanout writes the hot EndpointSlice changes times (markers base+1...)
// and measures, for each write, when each proxy received the new endpoint,
// counted from just before the write request was sent.
func runFanout(ctx context.Context, f *fleet, c *controllerProc, client kubernetes.Interface, o options, base, pods int) (fanoutResult, error) {
	n := len(f.proxies)
	cBefore, err := c.sample()
	if err != nil {
		return fanoutResult{}, err
	}
	bBefore, _ := readUsage(os.Getpid())
	updBefore := f.updates.Load()
	run := newFanoutRun(base, o.changes, n)
	f.fan.Store(run)
	defer f.fan.Store(nil)
	res := fanoutResult{proxies: n, pods: pods}
	cur, err := client.DiscoveryV1().EndpointSlices(hotNamespace).Get(ctx, hotSlice, metav1.GetOptions{})
	if err != nil {
		return res, err
	}
	for k := range o.changes {
		next := hotSliceFor(o, base+k+1)
		next.ResourceVersion = cur.ResourceVersion
		t0 := time.Now()
		cur, err = client.DiscoveryV1().EndpointSlices(hotNamespace).Update(ctx, next, metav1.UpdateOptions{})
		write := time.Since(t0)
		if err != nil {
			return res, fmt.Errorf("change %d: %w", k+1, err)
		}
		select {
		case <-run.done[k]:
		case <-time.After(30 * time.Second):
		case <-ctx.Done():
			return res, ctx.Err()
		}
		cr := changeResult{write: write}
		var lat []time.Duration
		for i := range n {
			t := run.recv[k*n+i].Load()
			if t == 0 {
				cr.missing++
				continue
			}
			lat = append(lat, time.Duration(t-t0.UnixNano()))
		}
		slices.Sort(lat)
		cr.first, cr.p50, cr.p99, cr.max = pct(lat, 0), pct(lat, 50), pct(lat, 99), pct(lat, 100)
		res.changes = append(res.changes, cr)
		res.all = append(res.all, lat...)
		if err := f.check(); err != nil {
			return res, err
		}
		// Changes a little apart, as deployments roll: each is measured on
		// its own.
		time.Sleep(200 * time.Millisecond)
	}
	slices.Sort(res.all)
	cAfter, err := c.sample()
	if err != nil {
		return res, err
	}
	bAfter, _ := readUsage(os.Getpid())
	res.controllerCPU, res.benchCPU, res.delivered = cAfter.cpu-cBefore.cpu, bAfter.cpu-bBefore.cpu, f.updates.Load()-updBefore
	return res, nil
}

// pct is the p-th percentile (nearest rank) of sorted values; 0 for none.
func pct[T any](sorted []T, p float64) T {
	var zero T
	if len(sorted) == 0 {
		return zero
	}
	i := int(math.Ceil(p/100*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

// over summarizes one statistic of the changes: its median and its
// worst value across them.
func (r fanoutResult) over(get func(changeResult) time.Duration) (median, worst time.Duration) {
	v := make([]time.Duration, len(r.changes))
	for i, c := range r.changes {
		v[i] = get(c)
	}
	slices.Sort(v)
	return pct(v, 50), pct(v, 100)
}

func (r fanoutResult) missing() int {
	n := 0
	for _, c := range r.changes {
		n += c.missing
	}
	return n
}
