package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net/url"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

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
	o := c.opts
	var pods stats.Pods
	tcfg := tap.Config{Log: c.log.With("service", "tap")}
	switch b := c.backend.(type) {
	case *kube.Backend:
		pods = stats.PodsFunc(stats.KubePods{Pods: b.PodLister(), Services: b.ServiceLister(), TrustDomain: o.trustDomain}.List)
		tcfg.Authorizer = tap.KubeAuthorizer{Client: c.client}
		if c.identity != nil {
			tcfg.Dial = tlsTapDialer(c.identity, ownID)
		}
	default:
		// Local mode: proxies listen on loopback and accept plaintext taps from it.
		pods = stats.RegistryFilePods(o.registryFile)
	}
	tcfg.Pods = pods
	return &observability{
		stats:  stats.NewServer(stats.Config{Pods: pods, Interval: o.statsInterval, Log: c.log.With("service", "stats")}),
		tap:    tap.NewServer(tcfg),
		scrape: o.statsInterval > 0,
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

// tlsTapDialer dials a proxy's admin port with mutual TLS: the controller
// presents its own identity, which proxies require of tap callers, and
// checks that the proxy presents the identity discovery knows for the pod.
func tlsTapDialer(ids *identity.Server, ownID identity.ID) tap.Dialer {
	return func(_ context.Context, pod stats.Pod) (tapv1.TapClient, func(), error) {
		cfg := &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"h2"},
			GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
				return ids.Certificate(ownID)
			},
			InsecureSkipVerify: true, // verified below: the chain to the anchors and the SPIFFE ID
			VerifyConnection: func(cs tls.ConnectionState) error {
				return verifyPeer(cs, ids.Issuer().Anchors(), pod.Identity)
			},
		}
		cc, err := grpc.NewClient(pod.AdminAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return nil, nil, fmt.Errorf("dialing proxy %s/%s at %s: %w", pod.Namespace, pod.Name, pod.AdminAddr, err)
		}
		return tapv1.NewTapClient(cc), func() { cc.Close() }, nil
	}
}

// verifyPeer checks that the peer's certificate chains to anchors and, when
// want is known, carries that SPIFFE ID.
func verifyPeer(cs tls.ConnectionState, anchors *x509.CertPool, want string) error {
	if len(cs.PeerCertificates) == 0 {
		return fmt.Errorf("the proxy presented no certificate")
	}
	leaf := cs.PeerCertificates[0]
	inters := x509.NewCertPool()
	for _, c := range cs.PeerCertificates[1:] {
		inters.AddCert(c)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inters, CurrentTime: time.Now(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		return fmt.Errorf("the proxy's certificate: %w", err)
	}
	if want == "" {
		return nil
	}
	for _, u := range leaf.URIs {
		if u.String() == want {
			return nil
		}
	}
	return fmt.Errorf("the proxy presented %v, want %s", uriStrings(leaf.URIs), want)
}

func uriStrings(us []*url.URL) []string {
	out := make([]string, len(us))
	for i, u := range us {
		out[i] = u.String()
	}
	return out
}
