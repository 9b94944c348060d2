package stats

import (
	"encoding/binary"
	"math"
	"slices"
	"sort"
	"sync"
	"time"
	"unsafe"
)

// How history is kept: every scrape's growth on its own for the last
// fineFor, then merged into one point per wall-clock minute, up to the
// longest window. A window of w sums the points that end after now-w, so
// windows up to fineFor are as precise as the scrapes and longer ones cover
// at most a minute more than asked (the answer's span says how much).
const (
	fineFor    = 5 * time.Minute
	coarseStep = time.Minute
)

// group is the series of a pod's proxy that queries cannot tell apart:
// those with the same direction and the same values of the labels queries
// filter and group by (see scan.go). Its numbers are counters of the pod.
type group struct {
	key string // as built by page.add; the fields below are substrings of it
	dir byte
	// outbound groups only, but for authority, which inbound ones have too,
	// and the route, which retry groups have too
	authority, dstNs, dstDeploy, dstPod, dstSvc, tls, serverID, clientID string
	routeKind, routeName                                                 string
	// ctr is the pod's counter per slot, -1 for none (not slotBucket,
	// slotOpen or slotStart, which have none).
	ctr [numSlots]int32
	// les are the latency buckets' bounds, ascending (shared by groups of
	// the same layout), bctr their counters.
	les  []float64
	bctr []int32
	// gauge is tcp_open_connections at the last scrape, when hasGauge.
	gauge    float64
	hasGauge bool
	// present: some series of the group was on the last scraped page.
	present bool
}

func newGroup(key string) group {
	g := group{key: key, dir: key[0]}
	for i := range g.ctr {
		g.ctr[i] = -1
	}
	fields := [numKeyLabels]*string{&g.authority, &g.dstNs, &g.dstDeploy, &g.dstPod, &g.dstSvc, &g.tls, &g.serverID, &g.clientID,
		&g.routeKind, &g.routeName}
	rest := key[1:]
	for _, f := range fields {
		if len(rest) == 0 || rest[0] != keySep {
			break
		}
		rest = rest[1:]
		end := 0
		for end < len(rest) && rest[end] != keySep {
			end++
		}
		*f, rest = rest[:end], rest[end:]
	}
	return g
}

// point is the growth of a pod's counters between two scrapes (or over a
// merged run of them), sparse and varint-encoded (see appendDelta).
type point struct {
	at   int64 // UnixNano of the scrape that ends it
	span int64 // nanoseconds it covers
	d    []byte
}

// podData is everything kept about one pod's proxy.
type podData struct {
	pod    Pod
	groups []group
	byKey  map[string]int32 // group index by key
	// last is each counter's value at the last scrape (a histogram's
	// buckets uncumulated), NaN when its series was not on that page.
	last   []float64
	points []point   // oldest first
	start  float64   // process_start_time_seconds at the last scrape, NaN unknown
	authz  bool      // the last page had inbound HTTP authorization series
	rated  bool      // has a point: scraped successfully twice
	lastAt time.Time // last successful scrape
	seenAt time.Time // last time discovery listed the pod
	bornAt time.Time // first time discovery listed the pod
	err    error     // the last scrape's error, nil once one succeeds
}

// Store keeps windows of counter growth per pod. It is safe for concurrent use.
type Store struct {
	keep time.Duration // the longest window

	mu   sync.RWMutex // guards everything below and everything reachable from pods
	pods map[string]*podData
	// sorted are the pods by key, as queries visit them.
	sorted []*podData
	// listedAt is the time of the last SetPods: the pods seen then exist;
	// the others are gone and kept only for their traffic in the window.
	listedAt time.Time
	// layouts interns latency bucket layouts, by their bytes.
	layouts map[string][]float64

	// Ingest's scratch, used with mu held.
	cur   []float64
	seen  []bool
	enc   []byte
	dense []float64
	pg    page
}

// NewStore keeps enough history to answer windows up to maxWindow. The
// scrape interval does not matter: history is kept by age.
func NewStore(_, maxWindow time.Duration) *Store {
	return &Store{keep: maxWindow, pods: map[string]*podData{}, layouts: map[string][]float64{}}
}

func podKey(p Pod) string { return p.Namespace + "/" + p.Name }

// SetPods records the current pod list: new pods are added, known pods get
// their metadata refreshed, and pods unlisted for longer than the longest
// window are forgotten.
func (s *Store) SetPods(pods []Pod, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	changed := false
	for _, p := range pods {
		k := podKey(p)
		pd := s.pods[k]
		if pd == nil {
			pd = &podData{byKey: map[string]int32{}, start: math.NaN(), bornAt: now}
			s.pods[k] = pd
			changed = true
		}
		pd.pod, pd.seenAt = p, now
	}
	s.listedAt = now
	for k, pd := range s.pods {
		if now.Sub(pd.seenAt) > s.keep {
			delete(s.pods, k)
			changed = true
		}
	}
	if changed {
		s.sorted = s.sorted[:0]
		for _, pd := range s.pods {
			s.sorted = append(s.sorted, pd)
		}
		sort.Slice(s.sorted, func(i, j int) bool { return podKey(s.sorted[i].pod) < podKey(s.sorted[j].pod) })
	}
}

// Ingest records one scrape of a pod's proxy taken at at, as parsed by
// ParseMetrics. The scraper itself reduces pages with scan, not this.
func (s *Store) Ingest(p Pod, at time.Time, samples []Sample) {
	var pg page
	pg.reset()
	for _, smp := range samples {
		if err := pg.addSample(smp); err != nil {
			s.ScrapeFailed(p, err)
			return
		}
	}
	s.apply(p, at, &pg)
}

// apply records a reduced page: each counter's growth since the last
// scrape becomes a point. A counter that went down, or whose series is new,
// or any counter of a proxy that restarted (its start time changed),
// counts from zero.
func (s *Store) apply(p Pod, at time.Time, pg *page) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pd := s.pods[podKey(p)]
	if pd == nil {
		return // forgotten meanwhile
	}
	first := pd.lastAt.IsZero()
	restarted := !math.IsNaN(pg.start) && !math.IsNaN(pd.start) && pg.start != pd.start
	s.cur, s.seen = s.cur[:0], s.seen[:0]
	s.grow(len(pd.last))
	for i := range pd.groups {
		g := &pd.groups[i]
		g.present, g.hasGauge, g.gauge = false, false, 0
	}
	gi, lastKey := int32(-1), int32(-1)
	for _, e := range pg.entries {
		if e.key != lastKey {
			gi, lastKey = s.groupOf(pd, pg.keys[e.key:e.key+e.keyLen]), e.key
		}
		g := &pd.groups[gi]
		g.present = true
		if e.slot == slotOpen {
			g.gauge += e.v
			g.hasGauge = true
			continue
		}
		c := s.counterOf(pd, g, e.slot, e.le)
		s.cur[c] += e.v
		s.seen[c] = true
	}
	// A page's buckets are cumulative; kept per bucket, most of a point's
	// growth is in a few buckets and the rest is zero.
	for i := range pd.groups {
		g := &pd.groups[i]
		prev := 0.0
		for _, c := range g.bctr {
			if s.seen[c] {
				v := s.cur[c]
				s.cur[c], prev = v-prev, v
			}
		}
	}
	enc, lastIdx := s.enc[:0], -1
	for c, prev := range pd.last {
		if !s.seen[c] {
			pd.last[c] = math.NaN()
			continue
		}
		v := s.cur[c]
		pd.last[c] = v
		if first {
			continue
		}
		d := 0.0
		switch {
		case restarted || math.IsNaN(prev) || v < prev:
			d = v // a new series, or a restarted proxy's, counted from zero
		case v > prev:
			d = v - prev
		}
		if d > 0 {
			enc = appendDelta(enc, c-lastIdx-1, d)
			lastIdx = c
		}
	}
	s.enc = enc
	pd.start, pd.authz = pg.start, pg.authz
	span := at.Sub(pd.lastAt)
	pd.lastAt, pd.err = at, nil
	if first {
		return
	}
	pd.rated = true
	pd.points = append(pd.points, point{at: at.UnixNano(), span: int64(span), d: clone(enc)})
	s.compact(pd, at.UnixNano())
}

// grow makes the scratch cover n counters, zeroed.
func (s *Store) grow(n int) {
	for len(s.cur) < n {
		s.cur = append(s.cur, 0)
		s.seen = append(s.seen, false)
	}
}

// groupOf returns the index of the group with key, adding it if new.
func (s *Store) groupOf(pd *podData, key []byte) int32 {
	if i, ok := pd.byKey[string(key)]; ok {
		return i
	}
	g := newGroup(string(key))
	i := int32(len(pd.groups))
	pd.groups = append(pd.groups, g)
	pd.byKey[g.key] = i
	return i
}

// counterOf returns the pod's counter for a slot of a group (and a bucket's
// bound), adding it if new.
func (s *Store) counterOf(pd *podData, g *group, sl slot, le float64) int32 {
	if sl != slotBucket {
		if g.ctr[sl] < 0 {
			g.ctr[sl] = s.newCounter(pd)
		}
		return g.ctr[sl]
	}
	i, found := slices.BinarySearch(g.les, le)
	if found {
		return g.bctr[i]
	}
	les := slices.Insert(slices.Clone(g.les), i, le)
	g.les = s.layout(les)
	g.bctr = slices.Insert(g.bctr, i, s.newCounter(pd))
	return g.bctr[i]
}

func (s *Store) newCounter(pd *podData) int32 {
	pd.last = append(pd.last, math.NaN())
	s.grow(len(pd.last))
	return int32(len(pd.last) - 1)
}

// layout interns a bucket layout: every proxy has the same.
func (s *Store) layout(les []float64) []float64 {
	k := unsafe.String((*byte)(unsafe.Pointer(unsafe.SliceData(les))), len(les)*8)
	if l, ok := s.layouts[k]; ok {
		return l
	}
	s.layouts[string([]byte(k))] = les
	return les
}

// compact drops the points no window reaches and merges the points older
// than fineFor that end in the same minute.
func (s *Store) compact(pd *podData, now int64) {
	cut, old, step := now-int64(s.keep), now-int64(fineFor), int64(coarseStep)
	drop := 0
	for drop < len(pd.points) && pd.points[drop].at <= cut {
		drop++
	}
	out := pd.points[:0]
	for _, pt := range pd.points[drop:] {
		if n := len(out); n > 0 && pt.at <= old && out[n-1].at/step == pt.at/step {
			out[n-1] = s.merge(out[n-1], pt)
			continue
		}
		out = append(out, pt)
	}
	clear(pd.points[len(out):])
	pd.points = out
}

// merge sums two consecutive points into one ending where b ends.
func (s *Store) merge(a, b point) point {
	n := 0
	for _, d := range [][]byte{a.d, b.d} {
		n = max(n, maxIndex(d)+1)
	}
	for len(s.dense) < n {
		s.dense = append(s.dense, 0)
	}
	dense := s.dense[:n]
	clear(dense)
	addDeltas(dense, a.d)
	addDeltas(dense, b.d)
	enc, last := s.enc[:0], -1
	for c, v := range dense {
		if v > 0 {
			enc = appendDelta(enc, c-last-1, v)
			last = c
		}
	}
	s.enc = enc
	return point{at: b.at, span: a.span + b.span, d: clone(enc)}
}

// clone copies an encoding out of the scratch; nil for no growth.
func clone(b []byte) []byte {
	if len(b) == 0 {
		return nil
	}
	return slices.Clone(b)
}

// A point's encoding: for each counter that grew, in index order, the
// number of counters skipped since the previous one (uvarint), then the
// growth: uvarint(2n) for an integer n < 2^62, else 1 and the float64's 8
// bytes (little endian).
func appendDelta(b []byte, skip int, v float64) []byte {
	b = binary.AppendUvarint(b, uint64(skip))
	if v == math.Trunc(v) && v < 1<<62 {
		return binary.AppendUvarint(b, uint64(v)<<1)
	}
	b = append(b, 1)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

// forDeltas calls f for each counter's growth in a point's encoding.
func forDeltas(b []byte, f func(c int, v float64)) {
	c := -1
	for len(b) > 0 {
		skip, n := binary.Uvarint(b)
		b = b[n:]
		c += int(skip) + 1
		x, n := binary.Uvarint(b)
		b = b[n:]
		if x == 1 {
			f(c, math.Float64frombits(binary.LittleEndian.Uint64(b)))
			b = b[8:]
			continue
		}
		f(c, float64(x>>1))
	}
}

func addDeltas(dense []float64, b []byte) {
	forDeltas(b, func(c int, v float64) { dense[c] += v })
}

func maxIndex(b []byte) int {
	last := -1
	forDeltas(b, func(c int, _ float64) { last = c })
	return last
}

// youngWithoutRate is how long a new pod may wait for its first rate
// before it is scraped at the normal interval like everyone else.
const youngWithoutRate = 30 * time.Second

// AwaitingRate counts meshed pods, listed for less than 30 s, that have no
// rate yet (fewer than two successful scrapes): worth scraping again soon.
func (s *Store) AwaitingRate(now time.Time) int {
	s.mu.RLock()
	defer s.mu.RUnlock()
	n := 0
	for _, pd := range s.pods {
		if pd.pod.Meshed() && !pd.rated && now.Sub(pd.bornAt) < youngWithoutRate {
			n++
		}
	}
	return n
}

// ScrapeFailed records that a pod could not be scraped.
func (s *Store) ScrapeFailed(p Pod, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if pd := s.pods[podKey(p)]; pd != nil {
		pd.err = err
	}
}

// podWindow is one pod's counters summed over a window, for queries.
type podWindow struct {
	pod    Pod
	pd     *podData
	sums   []float64     // growth per counter; 0 for counters not on the last page
	span   time.Duration // the time the sums cover
	listed bool          // discovery listed the pod last time: it exists
}

// sum is a counter's growth, 0 for none.
func (w *podWindow) sum(c int32) float64 {
	if c < 0 {
		return 0
	}
	return w.sums[c]
}

// eachWindow calls f with every pod's window ending at now, in pod key
// order. The window and its sums are valid only during the call.
func (s *Store) eachWindow(now time.Time, w time.Duration, f func(*podWindow)) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	from := now.Add(-w).UnixNano()
	var pw podWindow
	for _, pd := range s.sorted {
		pw = podWindow{pod: pd.pod, pd: pd, sums: pw.sums[:0], listed: pd.seenAt.Equal(s.listedAt)}
		for range pd.last {
			pw.sums = append(pw.sums, 0)
		}
		for i := len(pd.points) - 1; i >= 0 && pd.points[i].at > from; i-- {
			pw.span += time.Duration(pd.points[i].span)
			addDeltas(pw.sums, pd.points[i].d)
		}
		// Series that vanished since keep their sums but no query sees them.
		for c, v := range pd.last {
			if math.IsNaN(v) {
				pw.sums[c] = 0
			}
		}
		f(&pw)
	}
}
