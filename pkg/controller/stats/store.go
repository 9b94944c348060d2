package stats

import (
	"math"
	"sort"
	"strings"
	"sync"
	"time"
)

// series is one labelled time series of a pod's proxy.
type series struct {
	name   string
	labels map[string]string
	typ    MetricType
}

// scrapeDelta is how much each counter grew between two scrapes.
type scrapeDelta struct {
	at     time.Time
	span   time.Duration // since the previous scrape
	deltas map[string]float64
}

// podData is everything kept about one pod's proxy.
type podData struct {
	pod    Pod
	series map[string]*series // by key
	last   map[string]float64 // cumulative counter values at the last scrape
	gauges map[string]float64 // gauge values at the last scrape
	ring   []scrapeDelta      // newest last; at most Store.capacity entries
	lastAt time.Time          // last successful scrape
	seenAt time.Time          // last time discovery listed the pod
	bornAt time.Time          // first time discovery listed the pod
	err    error              // the last scrape's error, nil once one succeeds
}

// Store keeps windows of counter deltas per pod. It is safe for concurrent use.
type Store struct {
	capacity int // ring entries per pod: max window / interval, plus one
	keep     time.Duration

	mu   sync.RWMutex // guards pods, listedAt and everything reachable from them
	pods map[string]*podData
	// listedAt is the time of the last SetPods: the pods seen then exist;
	// the others are gone and kept only for their traffic in the window.
	listedAt time.Time
}

// NewStore keeps enough scrapes at interval to answer windows up to maxWindow.
func NewStore(interval, maxWindow time.Duration) *Store {
	return &Store{
		capacity: int(maxWindow/interval) + 2,
		keep:     maxWindow,
		pods:     map[string]*podData{},
	}
}

func podKey(p Pod) string { return p.Namespace + "/" + p.Name }

func seriesKey(name string, labels map[string]string) string {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(name)
	for _, k := range keys {
		b.WriteByte(0)
		b.WriteString(k)
		b.WriteByte('=')
		b.WriteString(labels[k])
	}
	return b.String()
}

// SetPods records the current pod list: new pods are added, known pods get
// their metadata refreshed, and pods unlisted for longer than the longest
// window are forgotten.
func (s *Store) SetPods(pods []Pod, now time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, p := range pods {
		k := podKey(p)
		pd := s.pods[k]
		if pd == nil {
			pd = &podData{series: map[string]*series{}, last: map[string]float64{}, gauges: map[string]float64{}, bornAt: now}
			s.pods[k] = pd
		}
		pd.pod, pd.seenAt = p, now
	}
	s.listedAt = now
	for k, pd := range s.pods {
		if now.Sub(pd.seenAt) > s.keep {
			delete(s.pods, k)
		}
	}
}

// Ingest records one scrape of a pod's proxy taken at at.
func (s *Store) Ingest(p Pod, at time.Time, samples []Sample) {
	s.mu.Lock()
	defer s.mu.Unlock()
	pd := s.pods[podKey(p)]
	if pd == nil {
		return // forgotten meanwhile
	}
	first := pd.lastAt.IsZero()
	d := scrapeDelta{at: at, span: at.Sub(pd.lastAt), deltas: map[string]float64{}}
	gauges := make(map[string]float64, len(pd.gauges))
	seen := make(map[string]bool, len(samples))
	for _, smp := range samples {
		if math.IsNaN(smp.Value) || math.IsInf(smp.Value, 0) {
			continue
		}
		k := seriesKey(smp.Name, smp.Labels)
		sr := pd.series[k]
		if sr == nil {
			sr = &series{name: smp.Name, labels: smp.Labels, typ: smp.Type}
			pd.series[k] = sr
		}
		seen[k] = true
		if sr.typ == Gauge {
			gauges[k] = smp.Value
			continue
		}
		prev, had := pd.last[k]
		pd.last[k] = smp.Value
		switch {
		case first:
		case !had || smp.Value < prev:
			// A new series (or a restarted proxy's) counted from zero.
			if smp.Value > 0 {
				d.deltas[k] = smp.Value
			}
		case smp.Value > prev:
			d.deltas[k] = smp.Value - prev
		}
	}
	for k := range pd.series {
		if !seen[k] {
			delete(pd.series, k)
			delete(pd.last, k)
		}
	}
	pd.gauges = gauges
	pd.lastAt, pd.err = at, nil
	if first {
		return
	}
	pd.ring = append(pd.ring, d)
	if len(pd.ring) > s.capacity {
		pd.ring = append(pd.ring[:0], pd.ring[len(pd.ring)-s.capacity:]...)
	}
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
		if pd.pod.Meshed() && len(pd.ring) == 0 && now.Sub(pd.bornAt) < youngWithoutRate {
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

// snapshot is one pod's data summed over a window, for queries.
type snapshot struct {
	pod    Pod
	series map[string]*series
	sums   map[string]float64 // counter growth over the window
	gauges map[string]float64
	span   time.Duration // the time the sums cover
	// listed is true when discovery listed the pod last time: it exists.
	listed bool
}

// window sums every pod's deltas newer than now-w.
func (s *Store) window(now time.Time, w time.Duration) []snapshot {
	s.mu.RLock()
	defer s.mu.RUnlock()
	out := make([]snapshot, 0, len(s.pods))
	for _, pd := range s.pods {
		sn := snapshot{pod: pd.pod, series: map[string]*series{}, sums: map[string]float64{}, gauges: pd.gauges,
			listed: pd.seenAt.Equal(s.listedAt)}
		for k, v := range pd.series {
			sn.series[k] = v
		}
		for i := len(pd.ring) - 1; i >= 0; i-- {
			d := pd.ring[i]
			if !d.at.After(now.Add(-w)) {
				break
			}
			sn.span += d.span
			for k, v := range d.deltas {
				sn.sums[k] += v
			}
		}
		// Series that vanished since keep their sums but need their metadata.
		for k := range sn.sums {
			if sn.series[k] == nil {
				delete(sn.sums, k)
			}
		}
		out = append(out, sn)
	}
	sort.Slice(out, func(i, j int) bool { return podKey(out[i].pod) < podKey(out[j].pod) })
	return out
}
