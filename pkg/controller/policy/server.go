package policy

import (
	"context"
	"errors"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// Source computes ports' policies and says when they may have changed:
// the Index, or Static.
type Source interface {
	// WaitSynced blocks until the source can answer or ctx is done.
	WaitSynced(ctx context.Context) error
	// Inbound returns ErrPodNotFound for a pod the source does not know (yet).
	Inbound(namespace, pod string, port uint32) (*policyv1.InboundServer, error)
	// Subscribe's channel receives a value whenever the policies of the
	// pod's ports may have changed, until cancel is called.
	Subscribe(namespace, pod string) (changed <-chan struct{}, cancel func())
}

// GRPCServer implements policyv1.InboundPoliciesServer on a Source.
type GRPCServer struct {
	policyv1.UnimplementedInboundPoliciesServer

	src Source
	log *slog.Logger

	// stopped is done once Shutdown was called.
	stopped context.Context
	stop    context.CancelFunc

	streams prometheus.Gauge
	updates prometheus.Counter
}

// NewGRPCServer returns a server answering from src. Its metrics are
// registered with reg when reg is not nil.
func NewGRPCServer(src Source, log *slog.Logger, reg prometheus.Registerer) (*GRPCServer, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stopped, stop := context.WithCancel(context.Background())
	s := &GRPCServer{
		src:     src,
		log:     log,
		stopped: stopped,
		stop:    stop,
		streams: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "inbound_policy_streams",
			Help: "Open InboundPolicies.WatchPort streams.",
		}),
		updates: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "inbound_policy_updates_total",
			Help: "Policies sent on InboundPolicies.WatchPort streams.",
		}),
	}
	if reg != nil {
		for _, c := range []prometheus.Collector{s.streams, s.updates} {
			if err := reg.Register(c); err != nil {
				return nil, err
			}
		}
	}
	return s, nil
}

// Shutdown ends every open stream with UNAVAILABLE, so proxies reconnect to
// another replica, and refuses new ones. It lets a graceful gRPC stop finish.
func (s *GRPCServer) Shutdown() { s.stop() }

// WatchPort implements policyv1.InboundPoliciesServer: the port's policy
// at once (once the pod is known), then again whenever it changes.
func (s *GRPCServer) WatchPort(req *policyv1.PortSpec, stream grpc.ServerStreamingServer[policyv1.InboundServer]) error {
	ns, pod, port := req.GetNamespace(), req.GetPod(), req.GetPort()
	switch {
	case ns == "" || pod == "":
		return status.Error(codes.InvalidArgument, "namespace and pod must be set")
	case port < 1 || port > 65535:
		return status.Errorf(codes.InvalidArgument, "port %d is not in 1-65535", port)
	}
	ctx := stream.Context()
	wctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(s.stopped, cancel)
	err := s.src.WaitSynced(wctx)
	stop()
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return nil
		}
		return status.Error(codes.Unavailable, "controller is starting or stopping")
	}
	// Subscribed before the first computation: no change goes unseen.
	changed, unsubscribe := s.src.Subscribe(ns, pod)
	defer unsubscribe()
	s.streams.Inc()
	defer s.streams.Dec()
	log := s.log.With("namespace", ns, "pod", pod, "port", port)
	log.Debug("inbound policy stream opened")

	var last *policyv1.InboundServer
	for {
		msg, err := s.src.Inbound(ns, pod, port)
		switch {
		case errors.Is(err, ErrPodNotFound):
			// Not yet (or no longer) known: send nothing; the pod's
			// arrival is a change.
		case err != nil:
			log.Error("computing the inbound policy", "err", err)
			return status.Errorf(codes.Internal, "computing the policy of %s/%s port %d: %v", ns, pod, port, err)
		case !proto.Equal(msg, last):
			if err := stream.Send(msg); err != nil {
				return err
			}
			s.updates.Inc()
			last = msg
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.stopped.Done():
			return status.Error(codes.Unavailable, "controller shutting down")
		case <-changed:
		}
	}
}

// Static serves the cluster's default policy for every port of every pod:
// there are no Servers and no annotations, so nothing ever changes. (The
// local discovery mode has its own objects: see Local.)
type Static struct{ Cluster Cluster }

// WaitSynced implements Source.
func (Static) WaitSynced(context.Context) error { return nil }

// Inbound implements Source.
func (s Static) Inbound(string, string, uint32) (*policyv1.InboundServer, error) {
	p := s.Cluster.DefaultPolicy
	if p == "" {
		p = AllUnauthenticated
	}
	return &policyv1.InboundServer{
		Server:         &policyv1.Ref{Kind: "default", Name: string(p)},
		Authorizations: p.authorizations(s.Cluster.ClusterNetworks),
		FailClosed:     p != AllUnauthenticated,
	}, nil
}

// Subscribe implements Source.
func (Static) Subscribe(string, string) (<-chan struct{}, func()) { return nil, func() {} }
