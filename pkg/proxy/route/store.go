package route

import (
	"context"
	"log/slog"
	"maps"
	"sync"
	"sync/atomic"
	"time"
)

// Watcher streams the outbound routing of authorities from the controller
// (Destination.GetRoutes); *destination.Resolver implements it.
type Watcher interface {
	// WatchRoutes hands update every OutboundRoutes message the controller
	// sends for authority, in order, keeping the stream open (reopening
	// it with backoff when it fails) until ctx ends, and then returns. An
	// authority the controller refuses is handed one empty message (a
	// table without routes).
	WatchRoutes(ctx context.Context, authority string, update func(msg []byte))
}

// FirstTableWait bounds how long Lookups wait for an authority's first
// table after its watch opened (see Lookup); it is authz.FirstPolicyWait's
// counterpart.
const FirstTableWait = time.Second

// StoreOptions tune a Store; the zero value is usable.
type StoreOptions struct {
	// FirstTableWait defaults to FirstTableWait.
	FirstTableWait time.Duration
	// IdleTimeout closes the watch of an authority no Lookup asked for
	// during that long (at most twice that long); default 10 min, as the
	// destination resolver's streams.
	IdleTimeout time.Duration
	Log         *slog.Logger
}

// Store holds the current route table of every outbound authority the
// proxy routes to, each watched from its first Lookup. Lookup is lock-free
// once the authority is watched.
type Store struct {
	watcher Watcher
	opts    StoreOptions
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	entries atomic.Pointer[map[string]*entry] // immutable; replaced whole
	mu      sync.Mutex                        // serializes writers of entries
}

// entry is one authority's watch and table.
type entry struct {
	authority string
	opened    time.Time
	cancel    context.CancelFunc
	// table is the last table that decoded, nil for no routes.
	table atomic.Pointer[Table]
	// known is set, and arrived closed, when the first message arrived.
	known   atomic.Bool
	arrived chan struct{}
	// used is set by Lookup and cleared by the janitor.
	used atomic.Bool
}

// NewStore returns a Store whose watches live until ctx ends or Close.
func NewStore(ctx context.Context, w Watcher, opts StoreOptions) *Store {
	if opts.FirstTableWait <= 0 {
		opts.FirstTableWait = FirstTableWait
	}
	if opts.IdleTimeout <= 0 {
		opts.IdleTimeout = 10 * time.Minute
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	ctx, cancel := context.WithCancel(ctx)
	s := &Store{watcher: w, opts: opts, ctx: ctx, cancel: cancel}
	s.entries.Store(&map[string]*entry{})
	s.wg.Go(s.janitor)
	return s
}

// Close stops every watch and waits for them.
func (s *Store) Close() {
	s.cancel()
	s.wg.Wait()
}

// Lookup returns authority's route table: nil (no routes: send the request
// to the authority as without a Store) while none has arrived, and for an
// authority that is not a Service the controller knows. The first Lookup
// of an authority starts watching it; Lookups during the first
// FirstTableWait after that wait for the first table (or until ctx ends),
// so that the first requests are routed by the real routes, and no Lookup
// ever waits after it, so that a controller that does not answer stalls
// nothing (destination.Resolver.Endpoints waits the same way; authz's
// Store lets only the first Lookup wait). An authority keeps its last
// table while the controller is unreachable. Authorities are keys as
// given: pass the authority the request is resolved by (the Watcher
// normalizes what it asks the controller for).
func (s *Store) Lookup(ctx context.Context, authority string) *Table {
	t, e := s.lookupNow(authority)
	if e == nil {
		return t
	}
	if wait := s.opts.FirstTableWait - time.Since(e.opened); wait > 0 {
		t := time.NewTimer(wait)
		select {
		case <-e.arrived:
		case <-t.C:
		case <-ctx.Done():
		}
		t.Stop()
	}
	return e.table.Load()
}

// LookupNow is Lookup without its wait: ok is false while Lookup would
// wait for authority's first table (the first call starts watching it).
// A caller that serves other work on the same goroutine (an HTTP/2
// connection's reader) looks up with it, and a pending authority
// elsewhere.
func (s *Store) LookupNow(authority string) (t *Table, ok bool) {
	t, e := s.lookupNow(authority)
	return t, e == nil
}

// lookupNow is Lookup's answer when it needs no wait; else the entry whose
// first table Lookup waits for.
func (s *Store) lookupNow(authority string) (*Table, *entry) {
	e := (*s.entries.Load())[authority]
	if e == nil {
		if e = s.open(authority); e == nil {
			return nil, nil
		}
	}
	if !e.used.Load() {
		e.used.Store(true)
	}
	if e.known.Load() || time.Since(e.opened) >= s.opts.FirstTableWait {
		return e.table.Load(), nil
	}
	return nil, e
}

// open starts watching authority; nil once the Store is closed.
func (s *Store) open(authority string) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	if e := (*s.entries.Load())[authority]; e != nil {
		return e
	}
	if s.ctx.Err() != nil {
		return nil
	}
	ctx, cancel := context.WithCancel(s.ctx)
	e := &entry{authority: authority, opened: time.Now(), cancel: cancel, arrived: make(chan struct{})}
	e.used.Store(true) // not idle before its first Lookup returns
	next := maps.Clone(*s.entries.Load())
	next[authority] = e
	s.entries.Store(&next)
	log := s.opts.Log.With("authority", authority)
	s.wg.Go(func() {
		s.watcher.WatchRoutes(ctx, authority, func(msg []byte) { s.update(e, msg, log) })
	})
	return e
}

// update takes in one message of e's stream: a table that does not decode
// is logged and the previous one stays.
func (s *Store) update(e *entry, msg []byte, log *slog.Logger) {
	t, err := Decode(e.authority, msg)
	switch {
	case err != nil:
		log.Warn("outbound routes rejected; keeping the previous ones", "err", err)
	case !t.Found():
		e.table.Store(nil)
		log.Debug("outbound routes", "table", t.String())
	default:
		e.table.Store(t)
		log.Info("outbound routes", "table", t.String())
	}
	if !e.known.Swap(true) {
		close(e.arrived)
	}
}

// janitor closes the watches of authorities no Lookup asked for during a
// whole IdleTimeout.
func (s *Store) janitor() {
	t := time.NewTicker(s.opts.IdleTimeout)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
			s.sweep()
		}
	}
}

// sweep closes the watches no Lookup asked for since the last sweep.
func (s *Store) sweep() {
	s.mu.Lock()
	defer s.mu.Unlock()
	var idle []*entry
	for _, e := range *s.entries.Load() {
		if !e.used.Swap(false) {
			idle = append(idle, e)
		}
	}
	if len(idle) == 0 {
		return
	}
	next := maps.Clone(*s.entries.Load())
	for _, e := range idle {
		e.cancel()
		delete(next, e.authority)
	}
	s.entries.Store(&next)
}
