package demo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// DefaultProbeEvery is how often the demo probes each app, as the kubelet
// does with a probe's default periodSeconds.
const DefaultProbeEvery = 10 * time.Second

// prober plays the kubelet's part: it probes every app's health through its
// proxy's inbound listener, from outside the mesh (plaintext, no identity),
// the way a kubelet's HTTP and gRPC probes reach a meshed pod. The proxies
// count probes like any other inbound request, so every workload, the
// traffic generator included, serves some traffic.
// It runs on one goroutine.
type prober struct {
	http    *http.Client
	conns   map[string]*grpc.ClientConn // by inbound address
	failing map[string]bool             // by workload, to log changes only
}

func newProber() *prober {
	return &prober{
		http:    &http.Client{Timeout: time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1}},
		conns:   map[string]*grpc.ClientConn{},
		failing: map[string]bool{},
	}
}

func (p *prober) close() {
	p.http.CloseIdleConnections()
	for _, cc := range p.conns {
		cc.Close()
	}
}

// run probes every workload each interval until ctx ends.
func (d *demo) probeLoop(ctx context.Context, every time.Duration) {
	p := newProber()
	defer p.close()
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		for _, w := range d.workloads {
			err := p.probe(ctx, w)
			if ctx.Err() != nil {
				return
			}
			if failing := err != nil; failing != p.failing[w.name] {
				p.failing[w.name] = failing
				if failing {
					d.opts.Log.Warn("probe failed", "app", w.name, "err", err)
				} else {
					d.opts.Log.Info("probe succeeded again", "app", w.name)
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe checks one app: gRPC health for the gRPC services, GET /healthz
// for the HTTP ones.
func (p *prober) probe(ctx context.Context, w *workload) error {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	switch w.role {
	case RoleBooks, RoleAuthors:
		cc, err := p.grpcConn(w.inbound)
		if err != nil {
			return err
		}
		resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{})
		if err != nil {
			return fmt.Errorf("gRPC health check on %s: %w", w.inbound, err)
		}
		if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
			return fmt.Errorf("gRPC health check on %s: %s", w.inbound, resp.GetStatus())
		}
		return nil
	default:
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+w.inbound+"/healthz", nil)
		if err != nil {
			return err
		}
		req.Header.Set("User-Agent", "kube-probe/conduit-demo")
		resp, err := p.http.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, io.LimitReader(resp.Body, 4<<10))
		if resp.StatusCode < 200 || resp.StatusCode >= 400 {
			return fmt.Errorf("GET http://%s/healthz: %s", w.inbound, resp.Status)
		}
		return nil
	}
}

func (p *prober) grpcConn(addr string) (*grpc.ClientConn, error) {
	if cc := p.conns[addr]; cc != nil {
		return cc, nil
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithUserAgent("kube-probe/conduit-demo"))
	if err != nil {
		return nil, err
	}
	p.conns[addr] = cc
	return cc, nil
}
