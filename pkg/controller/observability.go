package controller

import (
	"context"
	"crypto/tls"
	"crypto/x509"

	"google.golang.org/grpc"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/controller/discovery/kube"
	"github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
	"github.com/conduitmesh/conduit/pkg/controller/tap"
)

// observability is the Stats and TapAPI services over the proxies that
// discovery knows: the registry's proxies in local mode, meshed pods in
// Kubernetes mode.
type observability struct {
	stats  *stats.Server
	tap    *tap.Server
	scrape bool
}

func (c *controller) setUpObservability(ownID identity.ID) *observability {
	o := c.cfg
	var pods stats.Pods
	var resources stats.Resources
	tcfg := tap.Config{Log: c.log.With("service", "tap")}
	local := true
	switch b := c.backend.(type) {
	case *kube.Backend:
		local = false
		kp := stats.KubePods{Pods: b.PodLister(), Services: b.ServiceLister(), ReplicaSets: b.ReplicaSetLister(), Namespaces: b.NamespaceLister(), TrustDomain: o.TrustDomain}
		pods, resources = stats.PodsFunc(kp.List), kp
		tcfg.Authorizer = tap.KubeAuthorizer{Client: c.client}
	default:
		pods = stats.RegistryFilePods(o.RegistryFile)
	}
	// Proxies with an identity are tapped over mTLS as the controller's own
	// identity, the only one they let tap them; in local mode (`conduit
	// demo`) too, so that the demo takes the cluster's path. Without an
	// issuer, or for a local proxy without identity, plaintext: proxies
	// accept it from loopback only.
	if c.identity != nil {
		ids := c.identity
		tcfg.Dial = tap.MTLSDialer(func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return ids.Certificate(ownID)
		}, func() *x509.CertPool {
			if is := ids.Issuer(); is != nil {
				return is.Anchors()
			}
			return nil
		})
		if local {
			tcfg.Dial = tap.MeshDialer(tcfg.Dial, tap.InsecureDialer)
		}
	}
	tcfg.Pods = pods
	return &observability{
		stats:  stats.NewServer(stats.Config{Pods: pods, Resources: resources, Interval: o.StatsInterval, Log: c.log.With("service", "stats")}),
		tap:    tap.NewServer(tcfg),
		scrape: o.StatsInterval > 0,
	}
}

func (ob *observability) register(gs *grpc.Server) []string {
	statsv1.RegisterStatsServer(gs, ob.stats)
	tapv1.RegisterTapAPIServer(gs, ob.tap)
	return []string{statsv1.Stats_ServiceDesc.ServiceName, tapv1.TapAPI_ServiceDesc.ServiceName}
}

func (ob *observability) run(ctx context.Context) error {
	if !ob.scrape {
		return nil
	}
	return ob.stats.Run(ctx)
}
