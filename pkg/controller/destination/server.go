// Package destination serves the Destination gRPC API on top of a discovery
// backend: every Get stream subscribes to its authority and receives the
// changes between the snapshots the backend publishes; every GetRoutes
// stream gets its authority's whole route table from a RouteSource (package
// routes) each time it changes.
package destination

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// syncer is a backend that must fill its caches before it can answer.
type syncer interface {
	WaitSynced(ctx context.Context) error
}

// Server implements destinationv1.DestinationServer.
type Server struct {
	destinationv1.UnimplementedDestinationServer

	backend discovery.Backend
	log     *slog.Logger

	// stopped is done once Shutdown was called.
	stopped context.Context
	stop    context.CancelFunc

	diffs diffCache

	// routes answers GetRoutes (nil: no routes); set before serving.
	routes        RouteSource
	routeDebounce time.Duration

	streams      prometheus.Gauge
	updates      *prometheus.CounterVec
	routeStreams prometheus.Gauge
	routeUpdates prometheus.Counter
}

// NewServer returns a server resolving with backend. Its metrics are
// registered with reg when reg is not nil.
func NewServer(backend discovery.Backend, log *slog.Logger, reg prometheus.Registerer) (*Server, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stopped, stop := context.WithCancel(context.Background())
	s := &Server{
		backend: backend,
		log:     log,
		stopped: stopped,
		stop:    stop,
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "destination_streams",
			Help: "Open Destination.Get streams.",
		}),
		updates: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "destination_updates_total",
			Help: "Updates sent on Destination.Get streams, by kind (add, remove, no_endpoints).",
		}, []string{"kind"}),
		routeStreams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "destination_route_streams",
			Help: "Open Destination.GetRoutes streams.",
		}),
		routeUpdates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "destination_route_updates_total",
			Help: "Route tables sent on Destination.GetRoutes streams.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.streams, s.updates, s.routeStreams, s.routeUpdates} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Shutdown ends every open stream with UNAVAILABLE, so proxies reconnect to
// another replica, and refuses new ones. It lets a graceful gRPC stop finish.
func (s *Server) Shutdown() {
	s.stop()
}

// Get implements destinationv1.DestinationServer.
func (s *Server) Get(req *destinationv1.GetDestination, stream destinationv1.Destination_GetServer) error {
	ctx := stream.Context()
	if sy, ok := s.backend.(syncer); ok {
		if err := s.waitSynced(ctx, sy.WaitSynced); err != nil {
			return status.Error(codes.Unavailable, "controller is starting or stopping")
		}
	}
	mb := newMailbox()
	cancel, err := s.backend.Subscribe(req.GetAuthority(), req.GetContextToken(), mb)
	if err != nil {
		if errors.Is(err, discovery.ErrInvalidAuthority) {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		s.log.Error("subscribing", "authority", req.GetAuthority(), "err", err)
		return status.Errorf(codes.Internal, "resolving %q: %v", req.GetAuthority(), err)
	}
	defer cancel()
	s.streams.Inc()
	defer s.streams.Dec()
	s.log.Debug("destination stream opened", "authority", req.GetAuthority(), "context", req.GetContextToken())

	var prev *discovery.Snapshot
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopped.Done():
			return status.Error(codes.Unavailable, "controller shutting down")
		case <-mb.ready:
		}
		next := mb.take()
		for _, u := range s.diffs.get(prev, next) {
			if err := stream.Send(u); err != nil {
				return err
			}
			s.updates.WithLabelValues(kind(u)).Inc()
		}
		prev = &next
	}
}

// waitSynced calls wait until it returns, ctx is done or the server shuts
// down.
func (s *Server) waitSynced(ctx context.Context, wait func(context.Context) error) error {
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stop := context.AfterFunc(s.stopped, cancel)
	defer stop()
	return wait(wctx)
}

func kind(u *destinationv1.Update) string {
	switch u.GetUpdate().(type) {
	case *destinationv1.Update_Add:
		return "add"
	case *destinationv1.Update_Remove:
		return "remove"
	default:
		return "no_endpoints"
	}
}

// mailbox holds the latest snapshot for one stream. A stream that falls
// behind skips to the newest state instead of queueing every change.
type mailbox struct {
	ready chan struct{} // has a token when snap is unread

	mu   sync.Mutex // guards snap
	snap discovery.Snapshot
}

func newMailbox() *mailbox {
	return &mailbox{ready: make(chan struct{}, 1)}
}

// Update implements discovery.Listener; it never blocks.
func (m *mailbox) Update(s discovery.Snapshot) {
	m.mu.Lock()
	m.snap = s
	m.mu.Unlock()
	select {
	case m.ready <- struct{}{}:
	default:
	}
}

func (m *mailbox) take() discovery.Snapshot {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.snap
}
