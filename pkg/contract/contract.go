// Package contract holds the names Conduit's processes share across process
// boundaries, so that each is spelled once: the proxy's ports, flags and
// environment variables (which the injector writes and conduit-proxy
// reads), the annotations, labels and container names the injector writes
// and the CLI and controller read, and the schema of the local registry that
// `conduit demo` writes and the controller reads. Standard library only:
// the proxy imports it.
package contract

import (
	"flag"
	"fmt"
	"strings"
)

// Ports of the proxy and the controller.
const (
	ProxyInboundPort   = 4143
	ProxyOutboundPort  = 4140
	ProxyAdminPort     = 4191
	ControllerGRPCPort = 8086
)

// EnvPrefix prefixes the environment variable of every conduit-proxy flag
// (run and init): --skip-outbound-ports ⇔ CONDUIT_PROXY_SKIP_OUTBOUND_PORTS.
const EnvPrefix = "CONDUIT_PROXY_"

// Env is the environment variable of a conduit-proxy flag.
func Env(flag string) string {
	return EnvPrefix + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// ApplyEnv sets every flag of fs that was not given on the command line from
// its environment variable (Env), when that is set: flags win.
func ApplyEnv(fs *flag.FlagSet, getenv func(string) string) error {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if err != nil || given[f.Name] {
			return
		}
		name := Env(f.Name)
		if v := getenv(name); v != "" {
			if setErr := fs.Set(f.Name, v); setErr != nil {
				err = fmt.Errorf("environment variable %s=%q is not a valid --%s: %v", name, v, f.Name, setErr)
			}
		}
	})
	return err
}

// Flags of `conduit-proxy run` that the injector sets through Env.
const (
	FlagLogLevel           = "log-level"
	FlagInboundListen      = "inbound-listen"
	FlagOutboundListen     = "outbound-listen"
	FlagAdminListen        = "admin-listen"
	FlagControllerAddr     = "controller-addr"
	FlagControllerIdentity = "controller-identity"
	FlagIdentityName       = "identity-name"
	FlagIdentityTokenFile  = "identity-token-file"
	FlagTrustAnchors       = "trust-anchors"
	FlagOpaquePorts        = "opaque-ports"
	// FlagPodName and FlagDefaultInboundPolicy: the proxy watches its pod's
	// inbound policy (and answers with the default until it arrives).
	FlagPodName              = "pod-name"
	FlagDefaultInboundPolicy = "default-inbound-policy"
)

// The default inbound policies: of the ports no Server selects, as the
// chart value, the controller's and the proxy's --default-inbound-policy
// and AnnotationDefaultInboundPolicy spell them.
const (
	PolicyAllUnauthenticated     = "all-unauthenticated"
	PolicyAllAuthenticated       = "all-authenticated"
	PolicyClusterAuthenticated   = "cluster-authenticated"
	PolicyClusterUnauthenticated = "cluster-unauthenticated"
	PolicyDeny                   = "deny"
)

// DefaultInboundPolicies lists the default inbound policies.
var DefaultInboundPolicies = []string{PolicyAllUnauthenticated, PolicyAllAuthenticated,
	PolicyClusterAuthenticated, PolicyClusterUnauthenticated, PolicyDeny}

// CheckDefaultInboundPolicy reports whether s names a default inbound policy.
func CheckDefaultInboundPolicy(s string) error {
	for _, p := range DefaultInboundPolicies {
		if s == p {
			return nil
		}
	}
	return fmt.Errorf("%q is not a default inbound policy: want %s", s, strings.Join(DefaultInboundPolicies, ", "))
}

// The pod's namespace and service account, from the downward API: the
// injector sets them so that Env(FlagIdentityName) can name them as
// $(CONDUIT_POD_NS) and $(CONDUIT_POD_SA). No flag reads them.
const (
	EnvPodNamespace      = "CONDUIT_POD_NS"
	EnvPodServiceAccount = "CONDUIT_POD_SA"
)

// Annotations, labels and container names of meshed pods.
const (
	// AnnotationInject turns injection on ("enabled") or off ("disabled") on a
	// namespace or a pod template.
	AnnotationInject = "conduit.io/inject"
	// AnnotationProxyVersion records the injected proxy's version (also a label).
	AnnotationProxyVersion = "conduit.io/proxy-version"
	// LabelProxyVersion is the pod label carrying the injected proxy's version.
	LabelProxyVersion = "conduit.io/proxy-version"
	// ConfigPrefix prefixes the per-workload proxy overrides.
	ConfigPrefix = "config.conduit.io/"
	// AnnotationDefaultInboundPolicy on a namespace or pod overrides the
	// cluster's default inbound policy (all-unauthenticated,
	// all-authenticated, cluster-authenticated, cluster-unauthenticated or
	// deny) of the ports no Server selects; the pod's wins.
	AnnotationDefaultInboundPolicy = ConfigPrefix + "default-inbound-policy"

	// ProxyContainerName and InitContainerName name the injected containers.
	ProxyContainerName = "conduit-proxy"
	InitContainerName  = "conduit-init"
)
