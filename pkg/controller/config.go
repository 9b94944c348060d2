package controller

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/controller/policy"
	"github.com/conduitmesh/conduit/pkg/inject"
	"github.com/conduitmesh/conduit/pkg/pki"
)

// Config is what Run serves. Its fields are the conduit-controller flags of
// the same names, and Validate's messages name those flags.
type Config struct {
	GRPCAddr, AdminAddr string
	WebhookAddr         string // served when WebhookCertDir is set

	Discovery    string // "kubernetes" or "local"
	RegistryFile string // local mode's registry, re-read when it changes
	Kubeconfig   string // empty: in-cluster config, then $KUBECONFIG or ~/.kube/config

	TrustDomain, ClusterDomain string

	IssuerDir        string // tls.crt, tls.key and ca.crt; empty disables Identity
	TrustAnchorsFile string // default ca.crt in IssuerDir
	IdentityLifetime time.Duration
	IdentityReload   time.Duration // how often the issuer files are checked for a rotation
	LocalTokensFile  string        // local mode: proxy tokens to identities

	WebhookCertDir      string // the webhook's serving tls.crt and tls.key
	ControllerNamespace string
	ProxyImage          string // without tag
	ProxyVersion        string // the tag

	// OtherMeshContainers and OtherMeshAnnotations (key or key=value)
	// describe another mesh, besides Linkerd and Istio, whose pods are
	// admitted uninjected.
	OtherMeshContainers, OtherMeshAnnotations []string

	// DefaultInboundPolicy is the inbound policy of the ports no Server
	// selects (policy.DefaultPolicies; empty: all-unauthenticated);
	// ClusterNetworks the CIDRs the cluster-* policies admit (empty:
	// policy.DefaultClusterNetworks).
	DefaultInboundPolicy string
	ClusterNetworks      []string

	ShutdownGrace time.Duration // on cancellation, time allowed for in-flight calls
	StatsInterval time.Duration // proxies' /metrics scrape interval; 0 disables scraping

	Log *slog.Logger
	// Announce receives the bound addresses once listening, one per line:
	// grpc-addr=HOST:PORT, admin-addr=HOST:PORT, and when served
	// webhook-addr=HOST:PORT and controller-identity=SPIFFE-ID.
	Announce io.Writer
}

// Validate reports the first inconsistent or out-of-range setting.
func (c *Config) Validate() error {
	switch c.Discovery {
	case "kubernetes":
		if c.LocalTokensFile != "" {
			return errors.New("--local-tokens-file is for --discovery local; Kubernetes mode validates tokens with TokenReview")
		}
	case "local":
		if c.RegistryFile == "" {
			return errors.New("--discovery local needs --registry-file")
		}
		if c.IssuerDir != "" && c.LocalTokensFile == "" {
			return errors.New("--discovery local with --identity-issuer-dir needs --local-tokens-file to validate proxies' tokens")
		}
	default:
		return fmt.Errorf("--discovery %q: want kubernetes or local", c.Discovery)
	}
	if c.IdentityLifetime < pki.MinLeafLifetime {
		return fmt.Errorf("--identity-lifetime %s: want at least %v", c.IdentityLifetime, pki.MinLeafLifetime)
	}
	if c.StatsInterval != 0 && c.StatsInterval < time.Second {
		return fmt.Errorf("--stats-interval %s: want at least 1s, or 0 to disable scraping", c.StatsInterval)
	}
	if c.IdentityReload <= 0 {
		return fmt.Errorf("--identity-reload-interval %s: want a positive duration", c.IdentityReload)
	}
	if _, err := c.otherMeshes(); err != nil {
		return err
	}
	if _, err := c.policyCluster(); err != nil {
		return err
	}
	if c.TrustDomain == "" || strings.ContainsAny(c.TrustDomain, "/: ") {
		return fmt.Errorf("--trust-domain %q: want a DNS-like name such as cluster.local", c.TrustDomain)
	}
	return nil
}

// policyCluster is what every port's inbound policy depends on.
func (c *Config) policyCluster() (policy.Cluster, error) {
	p := policy.AllUnauthenticated
	if c.DefaultInboundPolicy != "" {
		var err error
		if p, err = policy.ParseDefaultPolicy(c.DefaultInboundPolicy); err != nil {
			return policy.Cluster{}, fmt.Errorf("--default-inbound-policy: %w", err)
		}
	}
	cidrs := c.ClusterNetworks
	if len(cidrs) == 0 {
		cidrs = policy.DefaultClusterNetworks
	}
	nets, err := policy.ParseNetworks(cidrs)
	if err != nil {
		return policy.Cluster{}, fmt.Errorf("--cluster-networks: %w", err)
	}
	return policy.Cluster{TrustDomain: c.TrustDomain, DefaultPolicy: p, ClusterNetworks: nets}, nil
}

// otherMeshes are the meshes whose pods the injector leaves alone: the
// known ones and the one the config describes.
func (c *Config) otherMeshes() ([]inject.OtherMesh, error) {
	meshes, err := inject.OtherMeshesWith(c.OtherMeshContainers, c.OtherMeshAnnotations)
	if err != nil {
		return nil, fmt.Errorf("--other-mesh-containers/--other-mesh-annotations: %w", err)
	}
	return meshes, nil
}
