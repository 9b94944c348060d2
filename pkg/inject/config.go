package inject

import (
	"fmt"
	"strconv"
	"strings"

	"k8s.io/apimachinery/pkg/api/resource"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/version"
)

// Annotation and label names (the ones other processes read are defined in
// contract).
const (
	AnnotationInject       = contract.AnnotationInject
	AnnotationProxyVersion = contract.AnnotationProxyVersion
	LabelProxyVersion      = contract.LabelProxyVersion
	// AnnotationRestore records what injection changed, so that uninject can
	// restore the original object exactly.
	AnnotationRestore = "conduit.io/inject-restore"
	ConfigPrefix      = contract.ConfigPrefix

	// ValueEnabled and ValueDisabled are the values of AnnotationInject.
	ValueEnabled  = "enabled"
	ValueDisabled = "disabled"

	ProxyContainerName = contract.ProxyContainerName
	InitContainerName  = contract.InitContainerName
	// TokenVolumeName names the injected token volume.
	TokenVolumeName = "conduit-identity-token"
	// TrustRootsConfigMap is the ConfigMap in the control-plane namespace
	// holding the PEM trust anchors under TrustRootsKey. Injection copies
	// them into the proxy's environment (ProxyConfig.TrustAnchorsPEM): a
	// ConfigMap volume could only name a ConfigMap in the pod's namespace.
	TrustRootsConfigMap = "conduit-identity-trust-roots"
	TrustRootsKey       = "ca-bundle.crt"
	// TokenAudience is the audience of the projected service-account token
	// the proxy presents to the identity service.
	TokenAudience = "identity.conduit.io"
)

// Override names: the suffixes of config.conduit.io/<name> annotations, which
// are also the names of the CLI's flags.
const (
	OverrideProxyImage           = "proxy-image"
	OverrideProxyVersion         = "proxy-version"
	OverrideProxyImagePullPolicy = "proxy-image-pull-policy"
	OverrideProxyCPURequest      = "proxy-cpu-request"
	OverrideProxyCPULimit        = "proxy-cpu-limit"
	OverrideProxyMemoryRequest   = "proxy-memory-request"
	OverrideProxyMemoryLimit     = "proxy-memory-limit"
	OverrideProxyLogLevel        = "proxy-log-level"
	OverrideProxyUID             = "proxy-uid"
	OverrideProxyInboundPort     = "proxy-inbound-port"
	OverrideProxyOutboundPort    = "proxy-outbound-port"
	OverrideProxyAdminPort       = "proxy-admin-port"
	OverrideSkipInboundPorts     = "skip-inbound-ports"
	OverrideSkipOutboundPorts    = "skip-outbound-ports"
	OverrideOpaquePorts          = "opaque-ports"
	OverrideNativeSidecar        = "native-sidecar"
	// OverrideDefaultInboundPolicy is contract.AnnotationDefaultInboundPolicy
	// without its prefix: the controller reads it too.
	OverrideDefaultInboundPolicy = "default-inbound-policy"
)

// OverrideNames returns the names of all config.conduit.io/* overrides, in
// the order the CLI documents them.
func OverrideNames() []string {
	return []string{
		OverrideProxyImage, OverrideProxyVersion, OverrideProxyImagePullPolicy,
		OverrideProxyCPURequest, OverrideProxyCPULimit, OverrideProxyMemoryRequest, OverrideProxyMemoryLimit,
		OverrideProxyLogLevel, OverrideProxyUID,
		OverrideProxyInboundPort, OverrideProxyOutboundPort, OverrideProxyAdminPort,
		OverrideSkipInboundPorts, OverrideSkipOutboundPorts, OverrideOpaquePorts,
		OverrideNativeSidecar, OverrideDefaultInboundPolicy,
	}
}

// Defaults for ProxyConfig.
const (
	DefaultProxyImage         = version.ProxyImage
	DefaultControlPlaneNS     = "conduit"
	DefaultTrustDomain        = "cluster.local"
	DefaultClusterDomain      = "cluster.local"
	DefaultProxyUID           = 2102
	DefaultInboundPort        = contract.ProxyInboundPort
	DefaultOutboundPort       = contract.ProxyOutboundPort
	DefaultAdminPort          = contract.ProxyAdminPort
	DefaultControllerGRPCPort = contract.ControllerGRPCPort
	DefaultTokenExpiration    = 86400
	DefaultProxyCPURequest    = "10m"
	DefaultProxyMemoryRequest = "20Mi"
	DefaultProxyMemoryLimit   = "250Mi"
	DefaultProxyLogLevel      = "info"
	tokenMountPath            = "/var/run/conduit/identity"
	// legacyTrustRootsVolume is the ConfigMap volume earlier versions
	// injected; uninject still removes it.
	legacyTrustRootsVolume = "conduit-trust-roots"
)

// ProxyConfig is everything the injector writes into a pod. Start from
// DefaultProxyConfig; per-workload annotations are applied on top by
// WithOverrides.
type ProxyConfig struct {
	Image           string // without tag
	Version         string // the tag, and the conduit.io/proxy-version value
	ImagePullPolicy string // "" leaves the Kubernetes default

	CPURequest, CPULimit       string // Kubernetes quantities; "" = unset
	MemoryRequest, MemoryLimit string

	LogLevel string
	UID      int64

	InboundPort, OutboundPort, AdminPort int

	SkipInboundPorts  string // comma-separated ports or ranges
	SkipOutboundPorts string
	OpaquePorts       string

	// DefaultInboundPolicy is the policy the proxy applies to a port until
	// the controller has sent the port's own ("" leaves the proxy's
	// default, all-unauthenticated).
	DefaultInboundPolicy string

	// NativeSidecar runs the proxy as an init container with
	// restartPolicy: Always (Kubernetes ≥ 1.29), so Jobs complete.
	NativeSidecar bool

	ControlPlaneNamespace string
	TrustDomain           string
	ClusterDomain         string

	// TrustAnchorsPEM are the mesh's trust anchors (the control plane's
	// TrustRootsConfigMap), given to the proxy's --trust-anchors. Required
	// to render the sidecar; annotating alone does not need them.
	TrustAnchorsPEM string
}

// DefaultProxyConfig returns the defaults for the given proxy version.
func DefaultProxyConfig(version string) ProxyConfig {
	return ProxyConfig{
		Image:                 DefaultProxyImage,
		Version:               version,
		CPURequest:            DefaultProxyCPURequest,
		MemoryRequest:         DefaultProxyMemoryRequest,
		MemoryLimit:           DefaultProxyMemoryLimit,
		LogLevel:              DefaultProxyLogLevel,
		UID:                   DefaultProxyUID,
		InboundPort:           DefaultInboundPort,
		OutboundPort:          DefaultOutboundPort,
		AdminPort:             DefaultAdminPort,
		NativeSidecar:         true,
		ControlPlaneNamespace: DefaultControlPlaneNS,
		TrustDomain:           DefaultTrustDomain,
		ClusterDomain:         DefaultClusterDomain,
	}
}

// NormalizeOverride checks one override value (name without the prefix) and
// returns it in canonical form (trimmed, port lists without spaces).
// Unknown names are an error.
func NormalizeOverride(name, value string) (string, error) {
	var c ProxyConfig
	if err := c.apply(name, value); err != nil {
		return "", err
	}
	switch name {
	case OverrideSkipInboundPorts:
		return c.SkipInboundPorts, nil
	case OverrideSkipOutboundPorts:
		return c.SkipOutboundPorts, nil
	case OverrideOpaquePorts:
		return c.OpaquePorts, nil
	case OverrideNativeSidecar:
		return strconv.FormatBool(c.NativeSidecar), nil
	}
	return strings.TrimSpace(value), nil
}

// WithOverrides returns c with the config.conduit.io/* entries of annotations
// applied; other keys are ignored. The first invalid value is an error that
// names the annotation.
func (c ProxyConfig) WithOverrides(annotations map[string]string) (ProxyConfig, error) {
	for _, name := range OverrideNames() {
		v, ok := annotations[ConfigPrefix+name]
		if !ok {
			continue
		}
		if err := c.apply(name, v); err != nil {
			return c, fmt.Errorf("annotation %s%s: %w", ConfigPrefix, name, err)
		}
	}
	return c, nil
}

func (c *ProxyConfig) apply(name, v string) error {
	v = strings.TrimSpace(v)
	var err error
	switch name {
	case OverrideProxyImage:
		if v == "" || strings.ContainsAny(v, " \t\n") {
			return fmt.Errorf("%q is not an image name", v)
		}
		c.Image = v
	case OverrideProxyVersion:
		if v == "" || strings.ContainsAny(v, " \t\n:/@") {
			return fmt.Errorf("%q is not an image tag", v)
		}
		c.Version = v
	case OverrideProxyImagePullPolicy:
		switch v {
		case "Always", "IfNotPresent", "Never":
			c.ImagePullPolicy = v
		default:
			return fmt.Errorf("%q is not Always, IfNotPresent or Never", v)
		}
	case OverrideProxyCPURequest:
		c.CPURequest, err = quantity(v)
	case OverrideProxyCPULimit:
		c.CPULimit, err = quantity(v)
	case OverrideProxyMemoryRequest:
		c.MemoryRequest, err = quantity(v)
	case OverrideProxyMemoryLimit:
		c.MemoryLimit, err = quantity(v)
	case OverrideProxyLogLevel:
		switch strings.ToLower(v) {
		case "debug", "info", "warn", "error":
			c.LogLevel = strings.ToLower(v)
		default:
			return fmt.Errorf("%q is not debug, info, warn or error", v)
		}
	case OverrideProxyUID:
		uid, perr := strconv.ParseInt(v, 10, 64)
		if perr != nil || uid < 1 {
			return fmt.Errorf("%q is not a non-root user ID", v)
		}
		c.UID = uid
	case OverrideProxyInboundPort:
		c.InboundPort, err = port(v)
	case OverrideProxyOutboundPort:
		c.OutboundPort, err = port(v)
	case OverrideProxyAdminPort:
		c.AdminPort, err = port(v)
	case OverrideSkipInboundPorts:
		c.SkipInboundPorts, err = portList(v)
	case OverrideSkipOutboundPorts:
		c.SkipOutboundPorts, err = portList(v)
	case OverrideOpaquePorts:
		c.OpaquePorts, err = portList(v)
	case OverrideDefaultInboundPolicy:
		if err := contract.CheckDefaultInboundPolicy(v); err != nil {
			return err
		}
		c.DefaultInboundPolicy = v
	case OverrideNativeSidecar:
		b, perr := strconv.ParseBool(v)
		if perr != nil {
			return fmt.Errorf("%q is not true or false", v)
		}
		c.NativeSidecar = b
	default:
		return fmt.Errorf("unknown setting %q", name)
	}
	return err
}

func quantity(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	q, err := resource.ParseQuantity(v)
	if err != nil {
		return "", fmt.Errorf("%q is not a Kubernetes quantity (e.g. 100m, 64Mi)", v)
	}
	if q.Sign() < 0 {
		return "", fmt.Errorf("%q is negative", v)
	}
	return v, nil
}

func port(v string) (int, error) {
	p, err := strconv.Atoi(v)
	if err != nil || p < 1 || p > 65535 {
		return 0, fmt.Errorf("%q is not a port (1-65535)", v)
	}
	return p, nil
}

// portList validates "80,443,8000-9000" and returns it normalized (no
// spaces).
func portList(v string) (string, error) {
	if v == "" {
		return "", nil
	}
	parts := strings.Split(v, ",")
	out := make([]string, 0, len(parts))
	for _, p := range parts {
		p = strings.TrimSpace(p)
		lo, hi, isRange := strings.Cut(p, "-")
		a, err := port(lo)
		if err != nil {
			return "", fmt.Errorf("%q is not a list of ports or ranges (e.g. 25,3306,8000-8100)", v)
		}
		if isRange {
			b, err := port(hi)
			if err != nil || b < a {
				return "", fmt.Errorf("%q is not a list of ports or ranges (e.g. 25,3306,8000-8100)", v)
			}
		}
		out = append(out, p)
	}
	return strings.Join(out, ","), nil
}
