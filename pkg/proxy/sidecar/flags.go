package sidecar

import (
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/proxy"
)

// AddFlags defines the conduit-proxy run flags on fs, each setting its field
// of o, with the defaults the injector relies on.
func (o *Config) AddFlags(fs *flag.FlagSet) {
	o.MaxHeaderBytes, o.MemoryLimit = 64<<10, DefaultMemoryLimit
	fs.StringVar(&o.InboundListen, contract.FlagInboundListen, fmt.Sprintf("0.0.0.0:%d", contract.ProxyInboundPort), "inbound listener: all traffic to the pod")
	fs.StringVar(&o.OutboundListen, contract.FlagOutboundListen, fmt.Sprintf("127.0.0.1:%d", contract.ProxyOutboundPort), "outbound listener: the pod's own outgoing traffic")
	fs.StringVar(&o.AdminListen, contract.FlagAdminListen, fmt.Sprintf("0.0.0.0:%d", contract.ProxyAdminPort), "admin listener: /metrics, /ready, /live, /shutdown, /log-level")
	fs.StringVar(&o.InboundTarget, "inbound-target", "", "send all inbound traffic to HOST:PORT (explicit mode); empty uses each connection's original destination")
	fs.Var(&o.Routes, "outbound-route", "route outbound AUTHORITY=HOST:PORT (repeatable; comma-separated in the environment)")
	fs.Var(&o.OpaquePorts, contract.FlagOpaquePorts, fmt.Sprintf("comma-separated ports never detected, relayed as TCP (in addition to %v)", proxy.DefaultOpaquePorts))
	fs.DurationVar(&o.DetectTimeout, "detect-timeout", 10*time.Second, "how long to wait for a client's first bytes before treating the connection as opaque")
	fs.DurationVar(&o.ConnectTimeout, "connect-timeout", time.Second, "timeout for connecting to an upstream")
	fs.DurationVar(&o.FailFastTimeout, "failfast-timeout", 3*time.Second, "how long an outbound request waits for a Service without a ready endpoint to gain one before it is answered 503 (0: no wait)")
	fs.DurationVar(&o.HeaderReadTimeout, "header-read-timeout", 10*time.Second, "time allowed to read a request's headers")
	fs.DurationVar(&o.IdleTimeout, "idle-timeout", 90*time.Second, "idle keep-alive connections are closed after this long")
	fs.DurationVar(&o.ShutdownGrace, "shutdown-grace-period", 20*time.Second, "on SIGTERM, time for in-flight requests to finish")
	fs.Var(&o.MaxHeaderBytes, "max-header-bytes", "largest request header block accepted (larger gets 431)")
	fs.DurationVar(&o.BodyIdleTimeout, "body-idle-timeout", 60*time.Second, "abort a request body the client stops sending, or a response it stops reading, for this long")
	fs.IntVar(&o.MaxConnections, "max-connections", 0, "open connections per traffic listener; past it new ones are reset at once (0: derived from --max-memory, else 10000)")
	fs.IntVar(&o.MaxRequests, "max-requests", 0, "in-flight HTTP requests per traffic listener; past it requests get 503 (0: derived from --max-memory, else 10000)")
	fs.Var(&o.MaxMemory, "max-memory", "memory the proxy must stay under (e.g. 64MiB; 0 = its container's memory limit when it has one): the connection and request caps are derived from it and the soft memory limit never grows past it")
	fs.StringVar(&o.LogLevel, contract.FlagLogLevel, "info", "debug, info, warn or error (changeable at PUT /log-level)")
	fs.StringVar(&o.LogFormat, "log-format", "plain", "plain or json")
	fs.Var(&o.MemoryLimit, "memory-limit", "Go runtime soft memory limit with no connections open (e.g. 7MiB; 0 = none); it grows by 64 KiB per open connection, and by up to 8 MiB while garbage collection takes over 10 % of the CPU")
	fs.IntVar(&o.GCPercent, "gc-percent", DefaultGCPercent, "Go GC target percentage (-1 disables proportional GC)")
	fs.BoolVar(&o.HTTP1FastPath, "http1-fast-path", true, "serve plain HTTP/1.1 keep-alive requests, and HTTP/2, on the lean fast paths (false: always net/http)")
	fs.StringVar(&o.ControlPlane.ControllerAddr, contract.FlagControllerAddr, "", "controller gRPC address (HOST:PORT) for discovery and identity; empty runs without a control plane")
	fs.StringVar(&o.ControlPlane.IdentityTokenFile, contract.FlagIdentityTokenFile, "", "token file proving --identity-name, re-read at every renewal (a projected service-account token)")
	fs.StringVar(&o.ControlPlane.TrustAnchorsFile, "trust-anchors-file", "", "file of PEM trust anchors that verify meshed peers and the controller")
	fs.StringVar(&o.ControlPlane.TrustAnchors, contract.FlagTrustAnchors, "", "PEM trust anchors as text (what the injector sets); alternative to --trust-anchors-file")
	fs.StringVar(&o.ControlPlane.IdentityName, contract.FlagIdentityName, "", "SPIFFE ID to request, e.g. spiffe://cluster.local/ns/default/sa/web; empty runs without mTLS")
	fs.StringVar(&o.ControlPlane.ControllerIdentity, contract.FlagControllerIdentity, "", "the controller's SPIFFE ID; when set the controller connection is TLS verified against the trust anchors, else plaintext (loopback only)")
	fs.StringVar(&o.ControlPlane.PodNamespace, "pod-namespace", "", "the pod's namespace, to resolve one-label service names; default: the namespace of --identity-name")
	fs.StringVar(&o.ControlPlane.ClusterDomain, "cluster-domain", "cluster.local", "the cluster's DNS domain")
	fs.StringVar(&o.ControlPlane.PodName, contract.FlagPodName, "", "the pod's name: with --controller-addr, the proxy enforces its pod's inbound policy (empty enforces none)")
	fs.StringVar(&o.ControlPlane.DefaultInboundPolicy, contract.FlagDefaultInboundPolicy, contract.PolicyAllUnauthenticated,
		"the policy a port has until the controller sends its own: "+strings.Join(contract.DefaultInboundPolicies, ", ")+" (every one but all-unauthenticated refuses until then)")
}
