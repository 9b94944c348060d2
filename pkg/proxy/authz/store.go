package authz

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
)

// watchMethod is the full gRPC method name of InboundPolicies.WatchPort.
const watchMethod = "/conduit.policy.v1.InboundPolicies/WatchPort"

// Store holds the current policy of every inbound port. Lookup is lock-free;
// Set and Watch replace policies.
type Store struct {
	pending *Server
	table   atomic.Pointer[map[uint16]*Server] // immutable; replaced whole
	mu      sync.Mutex                         // serializes writers
	// arrived is closed (and replaced) whenever a policy is set.
	arrived chan struct{}
	// watch, while Watch runs, starts watching a port it was not given
	// (see Lookup); watching are the ports watched.
	watch    atomic.Pointer[func(uint16)]
	watchMu  sync.Mutex
	watching map[uint16]bool
}

// FirstPolicyWait bounds how long the first Lookup of a port nobody
// watched yet waits for the controller's answer (see Lookup).
const FirstPolicyWait = time.Second

// NewStore returns a Store that answers with pending (see Pending) for every
// port whose policy has not arrived.
func NewStore(pending *Server) *Store {
	if pending == nil {
		pending = Pending("")
	}
	s := &Store{pending: pending, arrived: make(chan struct{}), watching: map[uint16]bool{}}
	s.table.Store(&map[uint16]*Server{})
	return s
}

// Lookup returns port's policy and true, or the pending policy and false
// when none has arrived for it. While Watch runs, the first Lookup of a
// port it was not given (a port the pod did not declare) starts watching
// that port and waits up to FirstPolicyWait for its policy, so that the
// first connection is decided by the real policy rather than the pending
// one; later Lookups never wait.
func (s *Store) Lookup(port uint16) (*Server, bool) {
	if srv, ok := (*s.table.Load())[port]; ok {
		return srv, true
	}
	if start := s.watch.Load(); start != nil && s.startWatching(port) {
		(*start)(port)
		deadline := time.NewTimer(FirstPolicyWait)
		defer deadline.Stop()
		for {
			s.mu.Lock()
			arrived := s.arrived
			s.mu.Unlock()
			if srv, ok := (*s.table.Load())[port]; ok {
				return srv, true
			}
			select {
			case <-arrived:
			case <-deadline.C:
				return s.pending, false
			}
		}
	}
	return s.pending, false
}

// startWatching records that port is watched; false if it already was.
func (s *Store) startWatching(port uint16) bool {
	s.watchMu.Lock()
	defer s.watchMu.Unlock()
	if s.watching[port] {
		return false
	}
	s.watching[port] = true
	return true
}

// Set makes srv port's policy.
func (s *Store) Set(port uint16, srv *Server) {
	s.mu.Lock()
	defer s.mu.Unlock()
	next := maps.Clone(*s.table.Load())
	next[port] = srv
	s.table.Store(&next)
	close(s.arrived)
	s.arrived = make(chan struct{})
}

// Streamer opens a server-streaming call; *grpcwire.Conn implements it.
type Streamer interface {
	Stream(ctx context.Context, method string, req []byte) (*grpcwire.Stream, error)
}

// WatchOptions tune Watch; the zero value is usable.
type WatchOptions struct {
	// BackoffBase and BackoffMax bound reconnect delays; defaults 250 ms
	// and 15 s. Each delay is drawn uniformly from [d/2, d) where d doubles
	// from BackoffBase up to BackoffMax; a stream that delivered a message
	// starts over from BackoffBase.
	BackoffBase, BackoffMax time.Duration
	Log                     *slog.Logger
}

// Watch keeps the policies of ports current until ctx ends: it opens one
// WatchPort stream per port for the pod namespace/pod and sets each policy
// it receives. A stream that fails is opened again with jittered
// exponential backoff; meanwhile the port keeps its last policy (or stays
// pending). A message that does not decode is logged and the previous
// policy stays. Watch returns ctx's error once ctx ends, or at once an
// error for arguments the controller would refuse.
func (s *Store) Watch(ctx context.Context, client Streamer, namespace, pod string, ports []uint16, opts WatchOptions) error {
	switch {
	case client == nil:
		return errors.New("watching inbound policies: no controller client")
	case namespace == "" || pod == "":
		return fmt.Errorf("watching inbound policies: namespace %q and pod %q must both be set", namespace, pod)
	case slices.Contains(ports, 0):
		return errors.New("watching inbound policies: port 0")
	}
	if opts.BackoffBase <= 0 {
		opts.BackoffBase = 250 * time.Millisecond
	}
	if opts.BackoffMax <= 0 {
		opts.BackoffMax = 15 * time.Second
	}
	if opts.Log == nil {
		opts.Log = slog.New(slog.DiscardHandler)
	}
	var (
		wg     sync.WaitGroup
		mu     sync.Mutex
		closed bool
	)
	start := func(port uint16) {
		mu.Lock()
		defer mu.Unlock()
		if closed {
			return
		}
		w := &portWatch{store: s, client: client, port: port, opts: opts,
			req: encodePortSpec(namespace, pod, port), log: opts.Log.With("port", port)}
		wg.Go(func() { w.run(ctx) })
	}
	for _, port := range ports {
		if s.startWatching(port) {
			start(port)
		}
	}
	s.watch.Store(&start)
	<-ctx.Done()
	s.watch.Store(nil)
	mu.Lock()
	closed = true
	mu.Unlock()
	wg.Wait()
	s.watchMu.Lock()
	clear(s.watching)
	s.watchMu.Unlock()
	return ctx.Err()
}

// encodePortSpec encodes a conduit.policy.v1.PortSpec.
func encodePortSpec(namespace, pod string, port uint16) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, namespace)
	b = protowire.AppendTag(b, 2, protowire.BytesType)
	b = protowire.AppendString(b, pod)
	b = protowire.AppendTag(b, 3, protowire.VarintType)
	return protowire.AppendVarint(b, uint64(port))
}

// portWatch is one port's stream.
type portWatch struct {
	store  *Store
	client Streamer
	port   uint16
	req    []byte
	opts   WatchOptions
	log    *slog.Logger
}

func (w *portWatch) run(ctx context.Context) {
	failures := 0
	for {
		received, err := w.stream(ctx)
		if ctx.Err() != nil {
			return
		}
		if received {
			failures = 0
		}
		delay := grpcwire.Backoff(w.opts.BackoffBase, w.opts.BackoffMax, failures)
		failures++
		_, has := w.store.Lookup(w.port)
		switch {
		case grpcwire.CodeOf(err) == grpcwire.InvalidArgument:
			w.log.Error("the controller refuses to serve this port's inbound policy", "err", err, "retry_in", delay)
		case failures == 1:
			w.log.Info("inbound policy stream ended", "err", err, "retry_in", delay, "keeping_last_policy", has)
		default:
			w.log.Debug("inbound policy stream failed", "err", err, "retry_in", delay)
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// stream runs one WatchPort call; received reports whether any message
// arrived.
func (w *portWatch) stream(ctx context.Context) (received bool, err error) {
	st, err := w.client.Stream(ctx, watchMethod, w.req)
	if err != nil {
		return false, err
	}
	defer st.Close()
	for {
		msg, err := st.Recv()
		if err != nil {
			return received, err
		}
		received = true
		srv, err := Decode(msg)
		if err != nil {
			w.log.Warn("inbound policy rejected; keeping the previous one", "err", err)
			continue
		}
		w.store.Set(w.port, srv)
		w.log.Info("inbound policy", "server", srv.String())
	}
}
