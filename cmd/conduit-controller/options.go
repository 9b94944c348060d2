package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/controller"
	"github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/version"
)

// options are the flags: the controller's Config and what only the command uses.
type options struct {
	controller.Config
	logLevel, logFormat string
	version             bool
}

func parseOptions(args []string, stderr io.Writer) (*options, error) {
	o := &options{}
	fs := flag.NewFlagSet("conduit-controller", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&o.GRPCAddr, "grpc-addr", ":8086", "gRPC listener: Destination, Identity, health (port 0 picks a free port)")
	fs.StringVar(&o.AdminAddr, "admin-addr", ":9990", "admin listener: /metrics, /ready, /live")
	fs.StringVar(&o.WebhookAddr, "webhook-addr", ":8443", "proxy-injector webhook listener (HTTPS); served when --webhook-cert-dir is set")
	fs.StringVar(&o.Discovery, "discovery", "kubernetes", "discovery backend: kubernetes or local")
	fs.StringVar(&o.RegistryFile, "registry-file", "", "registry file (YAML or JSON) of the local backend, re-read when it changes")
	fs.StringVar(&o.Kubeconfig, "kubeconfig", "", "kubeconfig file; default in-cluster config, then $KUBECONFIG or ~/.kube/config")
	fs.StringVar(&o.TrustDomain, "trust-domain", "cluster.local", "trust domain of proxy identities (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)")
	fs.StringVar(&o.ClusterDomain, "cluster-domain", "cluster.local", "DNS domain of the cluster's service names")
	fs.StringVar(&o.IssuerDir, "identity-issuer-dir", "", "directory with the issuer's tls.crt and tls.key and the trust anchors' ca.crt; empty disables Identity")
	fs.StringVar(&o.TrustAnchorsFile, "trust-anchors-file", "", "PEM trust anchors; default ca.crt in --identity-issuer-dir")
	fs.DurationVar(&o.IdentityLifetime, "identity-lifetime", identity.DefaultLifetime, "lifetime of the certificates issued to proxies")
	fs.DurationVar(&o.IdentityReload, "identity-reload-interval", 10*time.Second, "how often the issuer files are checked for a rotated issuer")
	fs.StringVar(&o.LocalTokensFile, "local-tokens-file", "", "local mode: file mapping proxy tokens to identities (Kubernetes mode uses TokenReview)")
	fs.StringVar(&o.WebhookCertDir, "webhook-cert-dir", "", "directory with the webhook's serving tls.crt and tls.key (reloaded when they change)")
	fs.StringVar(&o.ControllerNamespace, "controller-namespace", "conduit", "namespace of the control plane")
	fs.StringVar(&o.ProxyImage, "proxy-image", version.ProxyImage, "proxy image the injector adds (without tag)")
	fs.StringVar(&o.ProxyVersion, "proxy-version", version.Version, "proxy image tag the injector adds")
	fs.Func("other-mesh-containers", "comma-separated container names of another mesh, besides Linkerd's and Istio's: pods carrying one are admitted uninjected", func(s string) error { o.OtherMeshContainers = splitList(s); return nil })
	fs.Func("other-mesh-annotations", "comma-separated pod annotations (key or key=value) that mark another mesh's pods likewise", func(s string) error { o.OtherMeshAnnotations = splitList(s); return nil })
	fs.StringVar(&o.DefaultInboundPolicy, "default-inbound-policy", "all-unauthenticated", "inbound policy of the ports no Server selects: all-unauthenticated, all-authenticated, cluster-authenticated, cluster-unauthenticated or deny")
	fs.Func("cluster-networks", "comma-separated CIDRs of the cluster's pods and nodes, which the cluster-* policies admit (default 10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8)", func(s string) error { o.ClusterNetworks = splitList(s); return nil })
	fs.DurationVar(&o.StatsInterval, "stats-interval", 10*time.Second, "how often the proxies' /metrics are scraped for conduit stat and edges; 0 disables scraping")
	fs.DurationVar(&o.ShutdownGrace, "shutdown-grace-period", 10*time.Second, "on SIGTERM, time allowed for in-flight calls to finish")
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
	return o, o.Validate()
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
