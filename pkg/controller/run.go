package controller

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	identityv1 "github.com/conduitmesh/conduit/pkg/api/identity/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/controller/destination"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
	"github.com/conduitmesh/conduit/pkg/controller/discovery/kube"
	"github.com/conduitmesh/conduit/pkg/controller/discovery/local"
	"github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/controller/injector"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
	"github.com/conduitmesh/conduit/pkg/controller/routes"
	"github.com/conduitmesh/conduit/pkg/inject"
	"github.com/conduitmesh/conduit/pkg/sniff"
	"github.com/conduitmesh/conduit/pkg/version"
)

// controller is everything Run wires together.
type controller struct {
	cfg         *Config
	log         *slog.Logger
	reg         *prometheus.Registry
	client      kubernetes.Interface // nil in local mode
	backend     discovery.Backend
	runBackend  func(ctx context.Context, ready func()) error
	destination *destination.Server
	identity    *identity.Server // nil when disabled
	policy      *policy.GRPCServer
	runPolicy   func(ctx context.Context) error
	routes      destination.RouteSource         // nil: GetRoutes knows no Service
	runRoutes   func(ctx context.Context) error // writes the routes' status (Kubernetes only)
}

// Run serves until ctx is done, then shuts down gracefully. It validates
// cfg first; a nil Log discards, a nil Announce announces nothing.
func Run(ctx context.Context, cfg Config) error {
	if err := cfg.Validate(); err != nil {
		return err
	}
	o := &cfg
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	stdout := o.Announce
	if stdout == nil {
		stdout = io.Discard
	}
	c := &controller{cfg: o, log: log, reg: prometheus.NewRegistry()}
	c.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "conduit_controller_info",
			Help:        "Always 1; the labels describe this controller.",
			ConstLabels: prometheus.Labels{"version": version.Version, "discovery": o.Discovery},
		}, func() float64 { return 1 }))
	if err := c.setUp(); err != nil {
		return err
	}

	// Bind every listener before announcing any, so a caller that reads the
	// addresses can use all of them.
	var lc net.ListenConfig
	grpcLn, err := lc.Listen(ctx, "tcp", o.GRPCAddr)
	if err != nil {
		return fmt.Errorf("--grpc-addr: %w", err)
	}
	defer grpcLn.Close()
	adminLn, err := lc.Listen(ctx, "tcp", o.AdminAddr)
	if err != nil {
		return fmt.Errorf("--admin-addr: %w", err)
	}
	defer adminLn.Close()
	var webhookLn net.Listener
	if o.WebhookCertDir != "" {
		if webhookLn, err = lc.Listen(ctx, "tcp", o.WebhookAddr); err != nil {
			return fmt.Errorf("--webhook-addr: %w", err)
		}
		defer webhookLn.Close()
	}

	// With an issuer, the gRPC port also speaks TLS with the controller's own
	// identity, for proxies started with --controller-identity.
	var ownID identity.ID
	var grpcListener net.Listener = grpcLn
	if c.identity != nil {
		ownID = identity.ID{TrustDomain: o.TrustDomain, Namespace: o.ControllerNamespace, ServiceAccount: "conduit-controller"}
		if _, err := c.identity.Certificate(ownID); err != nil {
			return err
		}
		serverTLS := c.identity.ServerTLS(ownID)
		sl := sniff.NewListener(grpcLn, 10*time.Second, func() *tls.Config { return serverTLS }, log)
		defer func() {
			sl.Close()
			sl.Wait()
		}()
		grpcListener = sl
	}

	var ready, stopping atomic.Bool
	metrics := newGRPCMetrics(c.reg)
	gs := grpc.NewServer(
		grpc.ChainUnaryInterceptor(metrics.unary),
		grpc.ChainStreamInterceptor(metrics.stream),
		// Proxies keep Destination streams open for hours; let them ping.
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Every proxy keeps a connection open, and grpc-go's defaults give
		// each a 32 KiB read and a 32 KiB write buffer for its lifetime
		// (64 of the ~100 KB a connected proxy cost, bench/notes.md).
		// Proxies send small frames: a 4 KiB read buffer; writes take a
		// 32 KiB buffer from a pool while they batch and give it back at
		// the flush, so idle connections hold none.
		grpc.ReadBufferSize(4<<10),
		grpc.SharedWriteBuffer(true),
	)
	destinationv1.RegisterDestinationServer(gs, c.destination)
	policyv1.RegisterInboundPoliciesServer(gs, c.policy)
	services := []string{"", destinationv1.Destination_ServiceDesc.ServiceName, policyv1.InboundPolicies_ServiceDesc.ServiceName}
	if c.identity != nil {
		identityv1.RegisterIdentityServer(gs, c.identity)
		services = append(services, identityv1.Identity_ServiceDesc.ServiceName)
	}
	obs := c.setUpObservability(ownID)
	services = append(services, obs.register(gs)...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(gs, hs)
	for _, s := range services {
		hs.SetServingStatus(s, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	admin := &http.Server{Handler: adminHandler(c.reg, &ready, &stopping), ReadHeaderTimeout: 10 * time.Second}

	fmt.Fprintf(stdout, "grpc-addr=%s\nadmin-addr=%s\n", grpcLn.Addr(), adminLn.Addr())
	if webhookLn != nil {
		fmt.Fprintf(stdout, "webhook-addr=%s\n", webhookLn.Addr())
	}
	if c.identity != nil {
		fmt.Fprintf(stdout, "controller-identity=%s\n", ownID)
	}
	log.Info("conduit-controller listening", "grpc", grpcLn.Addr().String(), "admin", adminLn.Addr().String(),
		"discovery", o.Discovery, "identity", c.identity != nil, "webhook", webhookLn != nil)

	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		return c.runBackend(gctx, func() {
			ready.Store(true)
			for _, s := range services {
				hs.SetServingStatus(s, healthpb.HealthCheckResponse_SERVING)
			}
			log.Info("conduit-controller ready")
		})
	})
	g.Go(func() error { return ignoreClosed(gs.Serve(grpcListener)) })
	g.Go(func() error { return ignoreClosed(admin.Serve(adminLn)) })
	if webhookLn != nil {
		g.Go(func() error { return c.serveWebhook(gctx, webhookLn) })
	}
	g.Go(func() error { return obs.run(gctx) })
	if c.runPolicy != nil {
		g.Go(func() error { return c.runPolicy(gctx) })
	}
	if c.runRoutes != nil {
		g.Go(func() error { return c.runRoutes(gctx) })
	}
	if c.identity != nil {
		g.Go(func() error {
			identity.WatchIssuer(gctx, o.IssuerDir, o.TrustAnchorsFile, o.IdentityReload, c.identity.SetIssuer, log.With("service", "identity"))
			return nil
		})
	}
	g.Go(func() error {
		<-gctx.Done()
		log.Info("conduit-controller shutting down")
		stopping.Store(true)
		hs.Shutdown()
		c.destination.Shutdown()
		c.policy.Shutdown()
		stopped := make(chan struct{})
		go func() {
			gs.GracefulStop()
			close(stopped)
		}()
		select {
		case <-stopped:
		case <-time.After(o.ShutdownGrace):
			log.Warn("grace period over, closing open calls")
			gs.Stop()
			<-stopped
		}
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		return admin.Shutdown(sctx)
	})
	return g.Wait()
}

func ignoreClosed(err error) error {
	if errors.Is(err, grpc.ErrServerStopped) || errors.Is(err, http.ErrServerClosed) || errors.Is(err, net.ErrClosed) {
		return nil
	}
	return err
}

// setUp builds discovery, Destination, InboundPolicies and Identity from
// the options.
func (c *controller) setUp() error {
	o := c.cfg
	cluster, err := o.policyCluster()
	if err != nil {
		return err
	}
	var policies policy.Source = policy.Static{Cluster: cluster}
	switch o.Discovery {
	case "local":
		// The registry's namespaces, proxies and policy objects feed the
		// same policy index as a cluster's, kept in step on every reload.
		index, err := policy.NewLocal(policy.LocalOptions{Cluster: cluster, Log: c.log.With("service", "policy")})
		if err != nil {
			return err
		}
		lb, err := local.New(local.Options{Path: o.RegistryFile, ClusterDomain: o.ClusterDomain, Log: c.log.With("backend", "local"), OnLoad: index.Apply})
		if err != nil {
			return fmt.Errorf("--registry-file: %w", err)
		}
		policies, c.runPolicy = index, index.Run
		c.backend = lb
		// Outbound routes as in a cluster, from the registry's Services
		// and routes; there is no route status to write.
		if c.routes, err = routes.New(routes.Options{Services: lb, Routes: index, ClusterDomain: o.ClusterDomain, Log: c.log.With("service", "routes")}); err != nil {
			return err
		}
		c.runBackend = func(ctx context.Context, ready func()) error {
			ready()
			return lb.Run(ctx)
		}
	case "kubernetes":
		cfg, err := restConfig(o.Kubeconfig)
		if err != nil {
			return err
		}
		cfg.UserAgent = "conduit-controller"
		if c.client, err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("kubernetes client: %w", err)
		}
		kb, err := kube.New(kube.Options{Client: c.client, TrustDomain: o.TrustDomain, ClusterDomain: o.ClusterDomain, Log: c.log.With("backend", "kubernetes")})
		if err != nil {
			return err
		}
		c.backend, c.runBackend = kb, kb.Run
		dyn, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("kubernetes dynamic client: %w", err)
		}
		index, err := policy.NewIndex(policy.Options{Client: c.client, Dynamic: dyn, Cluster: cluster, Log: c.log.With("service", "policy")})
		if err != nil {
			return err
		}
		policies, c.runPolicy = index, index.Run
		if err := c.setUpRoutes(kb, index, dyn); err != nil {
			return err
		}
	}

	if c.policy, err = policy.NewGRPCServer(policies, c.log.With("service", "policy"), c.reg); err != nil {
		return err
	}
	if c.destination, err = destination.NewServer(c.backend, c.log.With("service", "destination"), c.reg); err != nil {
		return err
	}
	if c.routes != nil {
		c.destination.SetRouteSource(c.routes, 0)
	}
	if o.IssuerDir == "" {
		c.log.Warn("--identity-issuer-dir not set: Identity is disabled and proxies cannot get certificates")
		return nil
	}
	issuer, err := identity.LoadIssuer(o.IssuerDir, o.TrustAnchorsFile, time.Now())
	if err != nil {
		return fmt.Errorf("--identity-issuer-dir %s: %w", o.IssuerDir, err)
	}
	var tokens identity.TokenValidator = identity.TokenReviewer{Client: c.client}
	if o.Discovery == "local" {
		f := identity.LocalTokenFile{Path: o.LocalTokensFile, TrustDomain: o.TrustDomain}
		if _, err := f.Load(); err != nil {
			return fmt.Errorf("--local-tokens-file: %w", err)
		}
		tokens = f
	}
	c.identity, err = identity.NewServer(identity.Config{
		TrustDomain: o.TrustDomain,
		Issuer:      issuer,
		Tokens:      tokens,
		Lifetime:    o.IdentityLifetime,
		Log:         c.log.With("service", "identity"),
		Registerer:  c.reg,
	})
	return err
}

// setUpRoutes serves outbound routes (Destination.GetRoutes) from the
// policy index's route informers and the discovery backend's Services, and
// writes the routes' status: every replica serves, the one that holds the
// Lease contract.RouteStatusLease in the controller's namespace writes.
func (c *controller) setUpRoutes(kb *kube.Backend, index *policy.Index, dyn dynamic.Interface) error {
	opts := routes.Options{Services: kb, Routes: index, ClusterDomain: c.cfg.ClusterDomain, Log: c.log.With("service", "routes")}
	src, err := routes.New(opts)
	if err != nil {
		return err
	}
	status, err := routes.NewStatusWriter(routes.StatusOptions{Options: opts, Dynamic: dyn, Lease: &routes.Lease{
		Client: c.client, Namespace: c.cfg.ControllerNamespace, Name: contract.RouteStatusLease, Identity: routes.LeaseIdentity()}})
	if err != nil {
		return err
	}
	c.routes, c.runRoutes = src, status.Run
	return nil
}

func (c *controller) serveWebhook(ctx context.Context, ln net.Listener) error {
	proxy := inject.DefaultProxyConfig(c.cfg.ProxyVersion)
	proxy.Image = c.cfg.ProxyImage
	proxy.ControlPlaneNamespace = c.cfg.ControllerNamespace
	proxy.TrustDomain = c.cfg.TrustDomain
	proxy.ClusterDomain = c.cfg.ClusterDomain
	proxy.DefaultInboundPolicy = c.cfg.DefaultInboundPolicy
	// The proxies get the trust anchors in their environment: a pod cannot
	// mount the control plane's ConfigMap from another namespace.
	if f := c.cfg.TrustAnchorsFile; f != "" || c.cfg.IssuerDir != "" {
		if f == "" {
			f = filepath.Join(c.cfg.IssuerDir, "ca.crt")
		}
		pem, err := os.ReadFile(f)
		if err == nil {
			err = inject.CheckTrustAnchors(string(pem))
		}
		if err != nil {
			return fmt.Errorf("proxy-injector webhook: trust anchors %s: %w", f, err)
		}
		proxy.TrustAnchorsPEM = string(pem)
	} else {
		c.log.Warn("no --trust-anchors-file or --identity-issuer-dir: the proxy injector admits pods uninjected")
	}
	meshes, _ := c.cfg.otherMeshes() // checked by Validate
	cfg := injector.Config{Proxy: proxy, OtherMeshes: meshes, Logger: c.log.With("service", "proxy-injector")}
	if c.client != nil {
		cfg.Namespaces = injector.KubeNamespaces(c.client)
	}
	err := injector.ServeListener(ctx, ln, c.cfg.WebhookCertDir, injector.NewHandler(cfg))
	if err != nil {
		return fmt.Errorf("proxy-injector webhook: %w", err)
	}
	return nil
}

// The controller's client-side rate limit on API requests. Every
// Identity.Certify makes a TokenReview, and client-go's default (5 requests
// per second, bursts of 10) capped issuance at about 5 certificates per
// second (bench/RESULTS-controlplane.md): half an hour for 10,000 proxies
// starting at once. Linkerd's controllers default to 100 and 200 too.
const (
	kubeAPIQPS   = 100
	kubeAPIBurst = 200
)

// restConfig uses the kubeconfig flag, else the in-cluster config, else
// $KUBECONFIG or ~/.kube/config, with the controller's rate limit.
func restConfig(kubeconfig string) (*rest.Config, error) {
	cfg, err := loadRESTConfig(kubeconfig)
	if err != nil {
		return nil, err
	}
	cfg.QPS, cfg.Burst = kubeAPIQPS, kubeAPIBurst
	return cfg, nil
}

func loadRESTConfig(kubeconfig string) (*rest.Config, error) {
	if kubeconfig == "" {
		cfg, err := rest.InClusterConfig()
		if err == nil {
			return cfg, nil
		}
		if !errors.Is(err, rest.ErrNotInCluster) {
			return nil, fmt.Errorf("in-cluster config: %w", err)
		}
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig (set --kubeconfig, or run in a pod): %w", err)
	}
	return cfg, nil
}
