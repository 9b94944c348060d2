package destination

import (
	"sync"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// diffCacheSize bounds the cache; it is emptied when full. One change
// watched by many streams needs one entry.
const diffCacheSize = 4096

// diffCache shares the updates between two snapshot versions among every
// stream that makes the same step, so a change watched by a thousand
// streams is diffed once. The cached updates are only read (marshalled)
// afterwards, which protobuf allows concurrently.
type diffCache struct {
	mu sync.Mutex // guards m
	m  map[[2]uint64][]*destinationv1.Update
}

func (c *diffCache) get(prev *discovery.Snapshot, next discovery.Snapshot) []*destinationv1.Update {
	var prevVersion uint64
	if prev != nil {
		prevVersion = prev.Version
		if prevVersion == 0 {
			return Diff(prev, next)
		}
	}
	if next.Version == 0 {
		return Diff(prev, next)
	}
	k := [2]uint64{prevVersion, next.Version}
	c.mu.Lock()
	us, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return us
	}
	us = Diff(prev, next)
	c.mu.Lock()
	if c.m == nil || len(c.m) >= diffCacheSize {
		c.m = make(map[[2]uint64][]*destinationv1.Update)
	}
	c.m[k] = us
	c.mu.Unlock()
	return us
}
