package destination

import (
	"context"
	"errors"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// RouteSource computes the outbound route tables of Service authorities
// (package routes, on the Kubernetes backend).
type RouteSource interface {
	// WaitSynced blocks until the source can answer or ctx is done.
	WaitSynced(ctx context.Context) error
	// WatchRoutes follows an authority's table, resolved as Get resolves
	// it; it fails with discovery.ErrInvalidAuthority for an authority
	// that is not host:port.
	WatchRoutes(authority, ctxToken string) (RouteWatch, error)
}

// RouteWatch is one authority's table and its changes.
type RouteWatch interface {
	// Table computes the current table.
	Table() *destinationv1.OutboundRoutes
	// Changed receives a value whenever the table may have changed
	// (several changes may arrive as one).
	Changed() <-chan struct{}
	// Close stops the watch.
	Close()
}

// DefaultRouteDebounce is how long GetRoutes lets a burst of changes (a
// route and the Service it adds, a kubectl apply of several objects) settle
// before it computes the new table once.
const DefaultRouteDebounce = 20 * time.Millisecond

// SetRouteSource makes GetRoutes answer from src, computing a new table
// debounce after a change (DefaultRouteDebounce when 0). Without a source
// every authority gets found=false: call it before serving.
func (s *Server) SetRouteSource(src RouteSource, debounce time.Duration) {
	if debounce <= 0 {
		debounce = DefaultRouteDebounce
	}
	s.routes, s.routeDebounce = src, debounce
}

// GetRoutes implements destinationv1.DestinationServer: the table of the
// authority's Service at once, then a whole new table whenever it changes.
func (s *Server) GetRoutes(req *destinationv1.GetDestination, stream destinationv1.Destination_GetRoutesServer) error {
	ctx := stream.Context()
	if _, err := discovery.ParseAuthority(req.GetAuthority()); err != nil {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	if s.routes == nil {
		// No routes in this discovery mode: no authority is a Service with
		// routes; the stream stays open as for an unknown one.
		if err := s.sendRoutes(stream, &destinationv1.OutboundRoutes{}); err != nil {
			return err
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopped.Done():
			return status.Error(codes.Unavailable, "controller shutting down")
		}
	}
	if err := s.waitSynced(ctx, s.routes.WaitSynced); err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return status.Error(codes.Unavailable, "controller is starting or stopping")
	}
	// Watched before the first table: no change goes unseen.
	w, err := s.routes.WatchRoutes(req.GetAuthority(), req.GetContextToken())
	if err != nil {
		if errors.Is(err, discovery.ErrInvalidAuthority) {
			return status.Error(codes.InvalidArgument, err.Error())
		}
		s.log.Error("watching routes", "authority", req.GetAuthority(), "err", err)
		return status.Errorf(codes.Internal, "resolving %q: %v", req.GetAuthority(), err)
	}
	defer w.Close()
	s.routeStreams.Inc()
	defer s.routeStreams.Dec()
	s.log.Debug("routes stream opened", "authority", req.GetAuthority(), "context", req.GetContextToken())

	var last *destinationv1.OutboundRoutes
	for {
		table := w.Table()
		if last == nil || !proto.Equal(table, last) {
			if err := s.sendRoutes(stream, table); err != nil {
				return err
			}
			last = table
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopped.Done():
			return status.Error(codes.Unavailable, "controller shutting down")
		case <-w.Changed():
		}
		// Let the rest of a burst arrive, then compute once.
		t := time.NewTimer(s.routeDebounce)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil
		case <-s.stopped.Done():
			t.Stop()
			return status.Error(codes.Unavailable, "controller shutting down")
		case <-t.C:
		}
		select {
		case <-w.Changed():
		default:
		}
	}
}

func (s *Server) sendRoutes(stream destinationv1.Destination_GetRoutesServer, table *destinationv1.OutboundRoutes) error {
	if err := stream.Send(table); err != nil {
		return err
	}
	s.routeUpdates.Inc()
	return nil
}
