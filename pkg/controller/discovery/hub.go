package discovery

import (
	"maps"
	"sync"
)

// Hub keeps the subscribers of each watched key (a backend's notion of an
// authority) with the last snapshot they were given, so a backend computes a
// snapshot once per change and hands the same immutable value to every
// subscriber. Keys with no subscribers are forgotten.
type Hub[K comparable] struct {
	mu      sync.Mutex // guards topics, every topic's fields and version
	topics  map[K]*topic
	version uint64 // of the last snapshot published
}

type topic struct {
	last      Snapshot
	listeners map[uint64]Listener
	nextID    uint64
}

// Subscribe adds l to key's subscribers. If the key is not watched yet,
// compute gives its first snapshot. l receives the current snapshot before
// Subscribe returns.
func (h *Hub[K]) Subscribe(key K, compute func() Snapshot, l Listener) (cancel func()) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.topics == nil {
		h.topics = make(map[K]*topic)
	}
	t, ok := h.topics[key]
	if !ok {
		t = &topic{last: h.stamp(compute()), listeners: make(map[uint64]Listener)}
		h.topics[key] = t
	}
	id := t.nextID
	t.nextID++
	t.listeners[id] = l
	l.Update(t.last)
	var once sync.Once
	return func() {
		once.Do(func() {
			h.mu.Lock()
			defer h.mu.Unlock()
			delete(t.listeners, id)
			if len(t.listeners) == 0 && h.topics[key] == t {
				delete(h.topics, key)
			}
		})
	}
}

// Refresh recomputes the snapshot of every watched key that match selects
// and notifies its subscribers when it changed. It returns the number of keys
// whose snapshot changed.
func (h *Hub[K]) Refresh(match func(K) bool, compute func(K) Snapshot) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	changed := 0
	for k, t := range h.topics {
		if !match(k) {
			continue
		}
		s := compute(k)
		if SnapshotsEqual(s, t.last) {
			continue
		}
		changed++
		t.last = h.stamp(s)
		for _, l := range t.listeners {
			l.Update(t.last)
		}
	}
	return changed
}

// stamp gives s a version no other snapshot of this hub has.
func (h *Hub[K]) stamp(s Snapshot) Snapshot {
	h.version++
	s.Version = h.version
	return s
}

// Watched returns the number of keys with subscribers.
func (h *Hub[K]) Watched() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.topics)
}

// SnapshotsEqual reports whether two snapshots would be announced
// identically. Versions are not compared.
func SnapshotsEqual(a, b Snapshot) bool {
	if a.Exists != b.Exists || a.Reason != b.Reason || !maps.Equal(a.Labels, b.Labels) || len(a.Endpoints) != len(b.Endpoints) {
		return false
	}
	for addr, ea := range a.Endpoints {
		eb, ok := b.Endpoints[addr]
		if !ok || !ea.Equal(eb) {
			return false
		}
	}
	return true
}
