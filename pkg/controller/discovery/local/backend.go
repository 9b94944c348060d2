package local

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"sync"
	"time"

	"k8s.io/client-go/tools/cache"

	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// Options configure a Backend.
type Options struct {
	// Path is the registry file.
	Path string
	// ClusterDomain completes service names; default cluster.local.
	ClusterDomain string
	// PollInterval is how often the file is checked for changes; default 250ms.
	PollInterval time.Duration
	Log          *slog.Logger
	// OnLoad, when set, is given every registry the backend reads and
	// would use (the first, then each change): an error rejects it as an
	// invalid file would be (New fails; a reload keeps the last good one).
	// The inbound policy of local mode keeps its objects in step with it.
	OnLoad func(Registry) error
}

// Backend serves a registry file.
type Backend struct {
	opts Options
	hub  discovery.Hub[key]

	reloadMu sync.Mutex // serializes Reload; guards handlers and serviceGen
	// handlers are told of the Services' changes (AddServiceHandler);
	// serviceGen numbers the registries, the resourceVersion of the
	// Services each changed.
	handlers   []cache.ResourceEventHandler
	serviceGen uint64

	mu      sync.RWMutex // guards ix, raw and loadErr
	ix      *index
	raw     []byte
	loadErr error // the last reload's error, nil once a reload succeeds
}

// key is what a subscriber watches: the parsed authority, plus the caller's
// namespace for single-label names.
type key struct {
	authority discovery.Authority
	namespace string
}

// New reads the registry at opts.Path. It fails if the file is missing or invalid.
func New(opts Options) (*Backend, error) {
	if opts.ClusterDomain == "" {
		opts.ClusterDomain = "cluster.local"
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 250 * time.Millisecond
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	b := &Backend{opts: opts}
	raw, r, ix, err := b.read()
	if err == nil {
		err = b.load(r)
	}
	if err != nil {
		return nil, err
	}
	b.inheritServices(nil, ix)
	b.raw, b.ix = raw, ix
	return b, nil
}

func (b *Backend) read() ([]byte, Registry, *index, error) {
	raw, err := os.ReadFile(b.opts.Path)
	if err != nil {
		return nil, Registry{}, nil, fmt.Errorf("reading registry file: %w", err)
	}
	return b.parse(raw)
}

// parse parses and indexes the registry raw.
func (b *Backend) parse(raw []byte) ([]byte, Registry, *index, error) {
	r, err := ParseRegistry(raw)
	if err != nil {
		return nil, Registry{}, nil, fmt.Errorf("registry file %s: %w", b.opts.Path, err)
	}
	ix, err := newIndex(r, b.opts.ClusterDomain)
	if err != nil {
		return nil, Registry{}, nil, fmt.Errorf("registry file %s: %w", b.opts.Path, err)
	}
	return raw, r, ix, nil
}

// load hands r to OnLoad.
func (b *Backend) load(r Registry) error {
	if b.opts.OnLoad == nil {
		return nil
	}
	if err := b.opts.OnLoad(r); err != nil {
		return fmt.Errorf("registry file %s: %w", b.opts.Path, err)
	}
	return nil
}

// Run watches the registry file until ctx is done. A file that becomes
// invalid is reported and ignored: subscribers keep the last good registry.
func (b *Backend) Run(ctx context.Context) error {
	t := time.NewTicker(b.opts.PollInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			b.Reload()
		}
	}
}

// Reload re-reads the registry file now and notifies subscribers of changes.
func (b *Backend) Reload() {
	b.reloadMu.Lock()
	defer b.reloadMu.Unlock()
	// The file is polled: parse it only when its bytes changed (a large
	// registry, such as one with many policies, costs milliseconds to
	// parse, four times a second otherwise).
	raw, err := os.ReadFile(b.opts.Path)
	if err != nil {
		err = fmt.Errorf("reading registry file: %w", err)
	} else if b.unchanged(raw) {
		b.mu.Lock()
		b.loadErr = nil
		b.mu.Unlock()
		return
	}
	var r Registry
	var ix *index
	if err == nil {
		if raw, r, ix, err = b.parse(raw); err == nil {
			err = b.load(r)
		}
	}
	b.mu.Lock()
	if err != nil {
		if b.loadErr == nil || b.loadErr.Error() != err.Error() {
			b.opts.Log.Warn("keeping the last good registry", "err", err)
		}
		b.loadErr = err
		b.mu.Unlock()
		return
	}
	b.loadErr = nil
	if bytes.Equal(raw, b.raw) {
		b.mu.Unlock()
		return
	}
	changes := b.inheritServices(b.ix, ix)
	b.raw, b.ix = raw, ix
	b.mu.Unlock()
	b.notifyServices(changes)
	n := b.hub.Refresh(func(key) bool { return true }, ix.snapshot)
	b.opts.Log.Info("registry reloaded", "path", b.opts.Path, "changed_watches", n)
}

// unchanged reports whether raw is the registry in use.
func (b *Backend) unchanged(raw []byte) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return bytes.Equal(raw, b.raw)
}

// Subscribe implements discovery.Backend.
func (b *Backend) Subscribe(authority, ctxToken string, l discovery.Listener) (func(), error) {
	a, err := discovery.ParseAuthority(authority)
	if err != nil {
		return nil, err
	}
	k := key{authority: a}
	if !a.IP.IsValid() {
		k.namespace = discovery.ParseContextToken(ctxToken).Namespace
	}
	return b.hub.Subscribe(k, func() discovery.Snapshot {
		b.mu.RLock()
		defer b.mu.RUnlock()
		return b.ix.snapshot(k)
	}, l), nil
}
