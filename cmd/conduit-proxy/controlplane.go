package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/proxy/destination"
	"github.com/conduitmesh/conduit/pkg/proxy/grpclite"
	"github.com/conduitmesh/conduit/pkg/proxy/identity"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"github.com/conduitmesh/conduit/pkg/proxy/tlsconf"

	"github.com/conduitmesh/conduit/pkg/pemcert"
)

// controlPlaneOptions connect the proxy to the controller's Destination and
// Identity services.
//
// The connection to the controller is TLS when --controller-identity is set:
// the controller's certificate must chain to the trust anchors (--trust-anchors,
// PEM text, or --trust-anchors-file) and carry that SPIFFE ID, and the proxy presents its own certificate once it has one.
// Without --controller-identity it is plaintext HTTP/2, meant for a
// controller on loopback (`conduit demo`, tests); a non-loopback plaintext
// controller address is logged as a warning.
type controlPlaneOptions struct {
	controllerAddr     string
	identityTokenFile  string
	trustAnchorsFile   string
	trustAnchors       string
	identityName       string
	controllerIdentity string
	podNamespace       string
	clusterDomain      string
}

func registerControlPlaneFlags(fs *flag.FlagSet) *controlPlaneOptions {
	o := &controlPlaneOptions{}
	fs.StringVar(&o.controllerAddr, contract.FlagControllerAddr, "", "controller gRPC address (HOST:PORT) for discovery and identity; empty runs without a control plane")
	fs.StringVar(&o.identityTokenFile, contract.FlagIdentityTokenFile, "", "token file proving --identity-name, re-read at every renewal (a projected service-account token)")
	fs.StringVar(&o.trustAnchorsFile, "trust-anchors-file", "", "file of PEM trust anchors that verify meshed peers and the controller")
	fs.StringVar(&o.trustAnchors, contract.FlagTrustAnchors, "", "PEM trust anchors as text (what the injector sets); alternative to --trust-anchors-file")
	fs.StringVar(&o.identityName, contract.FlagIdentityName, "", "SPIFFE ID to request, e.g. spiffe://cluster.local/ns/default/sa/web; empty runs without mTLS")
	fs.StringVar(&o.controllerIdentity, contract.FlagControllerIdentity, "", "the controller's SPIFFE ID; when set the controller connection is TLS verified against the trust anchors, else plaintext (loopback only)")
	fs.StringVar(&o.podNamespace, "pod-namespace", "", "the pod's namespace, to resolve one-label service names; default: the namespace of --identity-name")
	fs.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	return o
}

// connect returns the controller-backed resolver and identity, or nil, nil
// when no controller is configured. The returned func stops them.
func (o *controlPlaneOptions) connect(ctx context.Context, log *slog.Logger) (resolve.Resolver, tlsconf.Provider, func(), error) {
	noop := func() {}
	if o.controllerAddr == "" {
		for _, f := range []struct{ name, value string }{
			{"identity-name", o.identityName},
			{"identity-token-file", o.identityTokenFile},
			{"trust-anchors-file", o.trustAnchorsFile},
			{"trust-anchors", o.trustAnchors},
			{"controller-identity", o.controllerIdentity},
		} {
			if f.value != "" {
				return nil, nil, noop, fmt.Errorf("--%s needs --controller-addr: identity and discovery come from the controller", f.name)
			}
		}
		return nil, nil, noop, nil
	}
	if _, _, err := net.SplitHostPort(o.controllerAddr); err != nil {
		return nil, nil, noop, fmt.Errorf("--controller-addr %q: want HOST:PORT", o.controllerAddr)
	}
	if o.trustAnchorsFile != "" && o.trustAnchors != "" {
		return nil, nil, noop, fmt.Errorf("--trust-anchors and --trust-anchors-file are both set (%s, %s): set only one", contract.Env("trust-anchors"), contract.Env("trust-anchors-file"))
	}
	if o.identityName != "" || o.controllerIdentity != "" {
		if o.trustAnchorsFile == "" && o.trustAnchors == "" {
			return nil, nil, noop, errors.New("--trust-anchors-file (or --trust-anchors) is required with --identity-name or --controller-identity")
		}
	}
	if o.identityName != "" && o.identityTokenFile == "" {
		return nil, nil, noop, errors.New("--identity-token-file is required with --identity-name")
	}
	if o.identityName == "" && o.identityTokenFile != "" {
		return nil, nil, noop, errors.New("--identity-token-file needs --identity-name (the SPIFFE ID the token proves)")
	}
	namespace := o.podNamespace
	if o.identityName != "" {
		id, err := identity.ParseSPIFFEID(o.identityName)
		if err != nil {
			return nil, nil, noop, fmt.Errorf("--identity-name: %w", err)
		}
		if namespace == "" {
			namespace = strings.Split(strings.TrimPrefix(id.Path, "/"), "/")[1]
		}
	}
	if o.controllerIdentity != "" {
		if _, err := identity.ParseSPIFFEID(o.controllerIdentity); err != nil {
			return nil, nil, noop, fmt.Errorf("--controller-identity: %w", err)
		}
	}

	var anchors *x509.CertPool
	switch {
	case o.trustAnchorsFile != "":
		var err error
		if anchors, err = identity.LoadTrustAnchors(o.trustAnchorsFile); err != nil {
			return nil, nil, noop, fmt.Errorf("--trust-anchors-file: %w", err)
		}
	case o.trustAnchors != "":
		var err error
		if anchors, err = pemcert.Pool([]byte(o.trustAnchors)); err != nil {
			return nil, nil, noop, fmt.Errorf("--trust-anchors (%s): %w; want the PEM certificates of the trust anchors (ca-bundle.crt)", contract.Env(contract.FlagTrustAnchors), err)
		}
	}

	// The controller connection; its TLS client certificate is the proxy's
	// own once the identity provider has one (set below).
	var provider *identity.Provider
	var current atomic.Pointer[identity.Provider] // provider, for the TLS callback
	// The controller (pkg/controller) permits pings every 5 s, so
	// a dead connection is noticed within about 45 s.
	copts := grpclite.Options{ReadIdleTimeout: 30 * time.Second}
	if o.controllerIdentity != "" {
		copts.TLS = identity.ControllerTLS(anchors, o.controllerIdentity, func() *tls.Certificate {
			if p := current.Load(); p != nil {
				return p.Certificate()
			}
			return nil
		})
	} else if !isLoopback(o.controllerAddr) {
		log.Warn("the controller connection is plaintext: set --controller-identity to use TLS", "controller", o.controllerAddr)
	}
	conn, err := grpclite.New(o.controllerAddr, copts)
	if err != nil {
		return nil, nil, noop, fmt.Errorf("--controller-addr: %w", err)
	}

	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if o.identityName != "" {
		provider, err = identity.New(identity.Config{
			Name:         o.identityName,
			TokenFile:    o.identityTokenFile,
			TrustAnchors: anchors,
			Client:       conn,
			Log:          log.With("component", "identity"),
		})
		if err != nil {
			cancel()
			conn.Close()
			return nil, nil, noop, err
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
		ClusterDomain: o.clusterDomain,
		ContextToken:  string(token),
		Log:           log.With("component", "destination"),
	})
	release := func() {
		cancel()
		res.Close()
		wg.Wait()
		conn.Close()
	}
	log.Info("using the control plane", "controller", o.controllerAddr, "identity", o.identityName, "controller_tls", copts.TLS != nil, "namespace", namespace)
	if provider == nil {
		return res, nil, release, nil
	}
	return res, provider, release, nil
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
