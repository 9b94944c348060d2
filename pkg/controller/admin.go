package controller

import (
	"context"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// adminHandler serves /metrics, /ready (200 once discovery is synced, 503
// while starting or stopping) and /live.
func adminHandler(reg *prometheus.Registry, ready, stopping *atomic.Bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !ready.Load() || stopping.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) {
		w.Write([]byte("live\n"))
	})
	return mux
}

// grpcMetrics counts gRPC calls by service, method and result code.
type grpcMetrics struct {
	started, handled *prometheus.CounterVec
}

func newGRPCMetrics(reg prometheus.Registerer) *grpcMetrics {
	m := &grpcMetrics{
		started: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_started_total",
			Help: "gRPC calls started on the server.",
		}, []string{"grpc_service", "grpc_method"}),
		handled: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "grpc_server_handled_total",
			Help: "gRPC calls completed on the server, by result code.",
		}, []string{"grpc_service", "grpc_method", "grpc_code"}),
	}
	reg.MustRegister(m.started, m.handled)
	return m
}

func (m *grpcMetrics) observe(fullMethod string) func(error) {
	svc, method, _ := strings.Cut(strings.TrimPrefix(fullMethod, "/"), "/")
	m.started.WithLabelValues(svc, method).Inc()
	return func(err error) { m.handled.WithLabelValues(svc, method, status.Code(err).String()).Inc() }
}

func (m *grpcMetrics) unary(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	done := m.observe(info.FullMethod)
	resp, err := h(ctx, req)
	done(err)
	return resp, err
}

func (m *grpcMetrics) stream(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	done := m.observe(info.FullMethod)
	err := h(srv, ss)
	done(err)
	return err
}
