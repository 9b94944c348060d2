package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/inject"
	"github.com/conduitmesh/conduit/pkg/version"
)

type options struct {
	grpcAddr, adminAddr, webhookAddr string
	discovery                        string
	registryFile                     string
	kubeconfig                       string
	trustDomain, clusterDomain       string
	issuerDir, trustAnchorsFile      string
	identityLifetime                 time.Duration
	identityReload                   time.Duration
	localTokensFile                  string
	webhookCertDir                   string
	controllerNamespace              string
	proxyImage, proxyVersion         string
	otherMeshContainers              string
	otherMeshAnnotations             string
	shutdownGrace                    time.Duration
	statsInterval                    time.Duration
	logLevel, logFormat              string
	version                          bool
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("conduit-controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.grpcAddr, "grpc-addr", ":8086", "gRPC listener: Destination, Identity, health (port 0 picks a free port)")
	fs.StringVar(&o.adminAddr, "admin-addr", ":9990", "admin listener: /metrics, /ready, /live")
	fs.StringVar(&o.webhookAddr, "webhook-addr", ":8443", "proxy-injector webhook listener (HTTPS); served when --webhook-cert-dir is set")
	fs.StringVar(&o.discovery, "discovery", "kubernetes", "discovery backend: kubernetes or local")
	fs.StringVar(&o.registryFile, "registry-file", "", "registry file (YAML or JSON) of the local backend, re-read when it changes")
	fs.StringVar(&o.kubeconfig, "kubeconfig", "", "kubeconfig file; default in-cluster config, then $KUBECONFIG or ~/.kube/config")
	fs.StringVar(&o.trustDomain, "trust-domain", "cluster.local", "trust domain of proxy identities (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)")
	fs.StringVar(&o.clusterDomain, "cluster-domain", "cluster.local", "DNS domain of the cluster's service names")
	fs.StringVar(&o.issuerDir, "identity-issuer-dir", "", "directory with the issuer's tls.crt and tls.key and the trust anchors' ca.crt; empty disables Identity")
	fs.StringVar(&o.trustAnchorsFile, "trust-anchors-file", "", "PEM trust anchors; default ca.crt in --identity-issuer-dir")
	fs.DurationVar(&o.identityLifetime, "identity-lifetime", identity.DefaultLifetime, "lifetime of the certificates issued to proxies")
	fs.DurationVar(&o.identityReload, "identity-reload-interval", 10*time.Second, "how often the issuer files are checked for a rotated issuer")
	fs.StringVar(&o.localTokensFile, "local-tokens-file", "", "local mode: file mapping proxy tokens to identities (Kubernetes mode uses TokenReview)")
	fs.StringVar(&o.webhookCertDir, "webhook-cert-dir", "", "directory with the webhook's serving tls.crt and tls.key (reloaded when they change)")
	fs.StringVar(&o.controllerNamespace, "controller-namespace", "conduit", "namespace of the control plane")
	fs.StringVar(&o.proxyImage, "proxy-image", version.ProxyImage, "proxy image the injector adds (without tag)")
	fs.StringVar(&o.proxyVersion, "proxy-version", version.Version, "proxy image tag the injector adds")
	fs.StringVar(&o.otherMeshContainers, "other-mesh-containers", "", "comma-separated container names of another mesh, besides Linkerd's and Istio's: pods carrying one are admitted uninjected")
	fs.StringVar(&o.otherMeshAnnotations, "other-mesh-annotations", "", "comma-separated pod annotations (key or key=value) that mark another mesh's pods likewise")
	fs.DurationVar(&o.statsInterval, "stats-interval", 10*time.Second, "how often the proxies' /metrics are scraped for conduit stat and edges; 0 disables scraping")
	fs.DurationVar(&o.shutdownGrace, "shutdown-grace-period", 10*time.Second, "on SIGTERM, time allowed for in-flight calls to finish")
	fs.StringVar(&o.logLevel, "log-level", "info", "debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "plain", "plain or json")
	fs.BoolVar(&o.version, "version", false, "print the version and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if o.version {
		return o, nil
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q: conduit-controller takes only flags", fs.Arg(0))
	}
	switch o.discovery {
	case "kubernetes":
		if o.localTokensFile != "" {
			return nil, errors.New("--local-tokens-file is for --discovery local; Kubernetes mode validates tokens with TokenReview")
		}
	case "local":
		if o.registryFile == "" {
			return nil, errors.New("--discovery local needs --registry-file")
		}
		if o.issuerDir != "" && o.localTokensFile == "" {
			return nil, errors.New("--discovery local with --identity-issuer-dir needs --local-tokens-file to validate proxies' tokens")
		}
	default:
		return nil, fmt.Errorf("--discovery %q: want kubernetes or local", o.discovery)
	}
	if o.identityLifetime < time.Minute {
		return nil, fmt.Errorf("--identity-lifetime %s: want at least 1m", o.identityLifetime)
	}
	if o.statsInterval != 0 && o.statsInterval < time.Second {
		return nil, fmt.Errorf("--stats-interval %s: want at least 1s, or 0 to disable scraping", o.statsInterval)
	}
	if o.identityReload <= 0 {
		return nil, fmt.Errorf("--identity-reload-interval %s: want a positive duration", o.identityReload)
	}
	if _, err := o.otherMeshes(); err != nil {
		return nil, err
	}
	if o.trustDomain == "" || strings.ContainsAny(o.trustDomain, "/: ") {
		return nil, fmt.Errorf("--trust-domain %q: want a DNS-like name such as cluster.local", o.trustDomain)
	}
	return o, nil
}

// otherMeshes are the meshes whose pods the injector leaves alone: the
// known ones and the one the flags describe.
func (o *options) otherMeshes() ([]inject.OtherMesh, error) {
	meshes := inject.DefaultOtherMeshes()
	if o.otherMeshContainers == "" && o.otherMeshAnnotations == "" {
		return meshes, nil
	}
	m, err := inject.CustomMesh(splitList(o.otherMeshContainers), splitList(o.otherMeshAnnotations))
	if err != nil {
		return nil, fmt.Errorf("--other-mesh-containers/--other-mesh-annotations: %w", err)
	}
	return append(meshes, m), nil
}

func splitList(s string) []string {
	var out []string
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func (o *options) logger(stderr io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(o.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", o.logLevel)
	}
	hopts := &slog.HandlerOptions{Level: level}
	switch o.logFormat {
	case "plain":
		return slog.New(slog.NewTextHandler(stderr, hopts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(stderr, hopts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want plain or json", o.logFormat)
}
