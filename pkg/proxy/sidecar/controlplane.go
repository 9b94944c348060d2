package sidecar

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/pki"
	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/destination"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	"github.com/conduitmesh/conduit/pkg/proxy/identity"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"github.com/conduitmesh/conduit/pkg/proxy/route"
	"github.com/conduitmesh/conduit/pkg/proxy/tlsconf"
)

// The control plane's sources answer an HTTP/2 connection's reader without
// waiting: a first answer the controller has not sent yet is awaited on
// the stream's own goroutine.
var (
	_ resolve.NowResolver  = (*destination.Resolver)(nil)
	_ proxy.NowRouteSource = (*route.Store)(nil)
)

// ControlPlane connects the proxy to the controller's Destination and
// Identity services; its fields are the conduit-proxy run flags of the same
// names, and Connect's messages name those flags.
//
// The connection to the controller is TLS when ControllerIdentity is set:
// the controller's certificate must chain to the trust anchors (TrustAnchors,
// PEM text, or TrustAnchorsFile) and carry that SPIFFE ID, and the proxy
// presents its own certificate once it has one. Without ControllerIdentity
// it is plaintext HTTP/2, meant for a controller on loopback (`conduit demo`,
// tests); a non-loopback plaintext controller address is logged as a warning.
type ControlPlane struct {
	ControllerAddr     string // HOST:PORT; empty runs without a control plane
	IdentityTokenFile  string // re-read at every renewal
	TrustAnchorsFile   string
	TrustAnchors       string // PEM text, alternative to TrustAnchorsFile
	IdentityName       string // the SPIFFE ID to request; empty runs without mTLS
	ControllerIdentity string
	PodNamespace       string // default: IdentityName's namespace
	ClusterDomain      string
	// PodName, when set, makes the proxy watch and enforce its pod's
	// inbound policy; DefaultInboundPolicy answers for a port until the
	// controller has sent its policy.
	PodName              string
	DefaultInboundPolicy string
}

// Plane is the proxy's connection to the control plane.
type Plane struct {
	Resolver resolve.Resolver // discovery
	TLS      tlsconf.Provider // the proxy's identity; nil without one
	Policy   *authz.Store     // inbound policy; nil when none is enforced
	// Routes are the outbound route tables (Destination.GetRoutes, watched
	// through the resolver); nil without a controller.
	Routes *route.Store
	Close  func() // stops them all
}

// Connect returns the controller-backed resolver, identity and inbound
// policy, or an empty Plane when no controller is configured.
func (o *ControlPlane) Connect(ctx context.Context, log *slog.Logger) (*Plane, error) {
	res, provider, policy, routes, release, err := o.connect(ctx, log)
	if err != nil {
		return nil, err
	}
	pl := &Plane{Resolver: res, Policy: policy, Routes: routes, Close: release}
	if provider != nil {
		pl.TLS = provider
	}
	return pl, nil
}

func (o *ControlPlane) connect(ctx context.Context, log *slog.Logger) (resolve.Resolver, *identity.Provider, *authz.Store, *route.Store, func(), error) {
	noop := func() {}
	if o.DefaultInboundPolicy != "" {
		if err := contract.CheckDefaultInboundPolicy(o.DefaultInboundPolicy); err != nil {
			return nil, nil, nil, nil, noop, fmt.Errorf("--%s: %w", contract.FlagDefaultInboundPolicy, err)
		}
	}
	if o.ControllerAddr == "" {
		for _, f := range []struct{ name, value string }{
			{"identity-name", o.IdentityName},
			{"identity-token-file", o.IdentityTokenFile},
			{"trust-anchors-file", o.TrustAnchorsFile},
			{"trust-anchors", o.TrustAnchors},
			{"controller-identity", o.ControllerIdentity},
		} {
			if f.value != "" {
				return nil, nil, nil, nil, noop, fmt.Errorf("--%s needs --controller-addr: identity and discovery come from the controller", f.name)
			}
		}
		return nil, nil, nil, nil, noop, nil
	}
	if _, _, err := net.SplitHostPort(o.ControllerAddr); err != nil {
		return nil, nil, nil, nil, noop, fmt.Errorf("--controller-addr %q: want HOST:PORT", o.ControllerAddr)
	}
	if o.TrustAnchorsFile != "" && o.TrustAnchors != "" {
		return nil, nil, nil, nil, noop, fmt.Errorf("--trust-anchors and --trust-anchors-file are both set (%s, %s): set only one", contract.Env("trust-anchors"), contract.Env("trust-anchors-file"))
	}
	if o.IdentityName != "" || o.ControllerIdentity != "" {
		if o.TrustAnchorsFile == "" && o.TrustAnchors == "" {
			return nil, nil, nil, nil, noop, errors.New("--trust-anchors-file (or --trust-anchors) is required with --identity-name or --controller-identity")
		}
	}
	if o.IdentityName != "" && o.IdentityTokenFile == "" {
		return nil, nil, nil, nil, noop, errors.New("--identity-token-file is required with --identity-name")
	}
	if o.IdentityName == "" && o.IdentityTokenFile != "" {
		return nil, nil, nil, nil, noop, errors.New("--identity-token-file needs --identity-name (the SPIFFE ID the token proves)")
	}
	namespace := o.PodNamespace
	if o.IdentityName != "" {
		id, err := identity.ParseSPIFFEID(o.IdentityName)
		if err != nil {
			return nil, nil, nil, nil, noop, fmt.Errorf("--identity-name: %w", err)
		}
		if namespace == "" {
			namespace = strings.Split(strings.TrimPrefix(id.Path, "/"), "/")[1]
		}
	}
	if o.ControllerIdentity != "" {
		if _, err := identity.ParseSPIFFEID(o.ControllerIdentity); err != nil {
			return nil, nil, nil, nil, noop, fmt.Errorf("--controller-identity: %w", err)
		}
	}

	var anchors *x509.CertPool
	switch {
	case o.TrustAnchorsFile != "":
		var err error
		if anchors, err = identity.LoadTrustAnchors(o.TrustAnchorsFile); err != nil {
			return nil, nil, nil, nil, noop, fmt.Errorf("--trust-anchors-file: %w", err)
		}
	case o.TrustAnchors != "":
		var err error
		if anchors, err = pki.Pool([]byte(o.TrustAnchors)); err != nil {
			return nil, nil, nil, nil, noop, fmt.Errorf("--trust-anchors (%s): %w; want the PEM certificates of the trust anchors (ca-bundle.crt)", contract.Env(contract.FlagTrustAnchors), err)
		}
	}

	// The controller connection; its TLS client certificate is the proxy's
	// own once the identity provider has one (set below).
	var provider *identity.Provider
	var current atomic.Pointer[identity.Provider] // provider, for the TLS callback
	// The controller (pkg/controller) permits pings every 5 s, so
	// a dead connection is noticed within about 45 s.
	copts := grpcwire.Options{ReadIdleTimeout: 30 * time.Second}
	if o.ControllerIdentity != "" {
		copts.TLS = identity.ControllerTLS(anchors, o.ControllerIdentity, func() *tls.Certificate {
			if p := current.Load(); p != nil {
				return p.Certificate()
			}
			return nil
		})
	} else if !isLoopback(o.ControllerAddr) {
		log.Warn("the controller connection is plaintext: set --controller-identity to use TLS", "controller", o.ControllerAddr)
	}
	conn, err := grpcwire.New(o.ControllerAddr, copts)
	if err != nil {
		return nil, nil, nil, nil, noop, fmt.Errorf("--controller-addr: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if o.IdentityName != "" {
		provider, err = identity.New(identity.Config{
			Name:         o.IdentityName,
			TokenFile:    o.IdentityTokenFile,
			TrustAnchors: anchors,
			Client:       conn,
			Log:          log.With("component", "identity"),
		})
		if err != nil {
			cancel()
			conn.Close()
			return nil, nil, nil, nil, noop, err
		}
		current.Store(provider)
		wg.Add(1)
		go func() {
			defer wg.Done()
			provider.Run(ctx)
		}()
	}
	token, _ := json.Marshal(map[string]string{"ns": namespace})
	res := destination.New(ctx, destination.Config{
		Client:        conn,
		Namespace:     namespace,
		ClusterDomain: o.ClusterDomain,
		ContextToken:  string(token),
		Log:           log.With("component", "destination"),
	})
	// The inbound policy of the pod's ports, each watched from its first
	// connection (authz.Store.Lookup).
	var policy *authz.Store
	switch {
	case o.PodName != "" && namespace != "":
		policy = authz.NewStore(authz.Pending(o.DefaultInboundPolicy))
		wg.Add(1)
		go func() {
			defer wg.Done()
			policy.Watch(ctx, conn, namespace, o.PodName, nil, authz.WatchOptions{Log: log.With("component", "policy")})
		}()
	case o.PodName != "":
		log.Warn("no inbound policy is enforced: the pod's namespace is unknown (set --pod-namespace or --identity-name)")
	default:
		log.Info("no inbound policy is enforced: --pod-name is not set")
	}
	// The outbound route tables, each authority watched from its first
	// outbound request (route.Store.Lookup).
	routes := route.NewStore(ctx, res, route.StoreOptions{Log: log.With("component", "routes")})
	release := func() {
		cancel()
		routes.Close()
		res.Close()
		wg.Wait()
		conn.Close()
	}
	log.Info("using the control plane", "controller", o.ControllerAddr, "identity", o.IdentityName, "controller_tls", copts.TLS != nil,
		"namespace", namespace, "pod", o.PodName, "default_inbound_policy", o.DefaultInboundPolicy)
	return res, provider, policy, routes, release, nil
}

// isLoopback reports whether addr's host is a loopback IP or localhost.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
