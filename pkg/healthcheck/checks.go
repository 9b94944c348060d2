package healthcheck

import (
	"context"
	"crypto/x509"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// Names of the objects of an install (see the chart in manifests/).
const (
	DefaultControlPlaneNamespace = "conduit"
	ConfigMapName                = "conduit-config"
	TrustRootsConfigMapName      = "conduit-identity-trust-roots"
	TrustRootsKey                = "ca-bundle.crt"
	IssuerSecretName             = "conduit-identity-issuer"
	WebhookSecretName            = "conduit-proxy-injector-tls"
	WebhookConfigName            = "conduit-proxy-injector"
	WebhookName                  = "proxy-injector.conduit.io"
	ControllerName               = "conduit-controller"

	PartOfLabel                = "app.kubernetes.io/part-of"
	ControlPlaneNSLabel        = "conduit.io/control-plane-ns"
	ControlPlaneComponentLabel = "conduit.io/control-plane-component"
	VersionLabel               = "conduit.io/version"
	ProxyVersionLabel          = contract.LabelProxyVersion
	ProxyContainerName         = contract.ProxyContainerName
	InitContainerName          = contract.InitContainerName
)

// MinKubernetesVersion is the oldest Kubernetes the control plane supports
// (native sidecars are GA-enough from 1.29).
const MinKubernetesVersion = "1.29.0"

// ExpiryWarning is how long before a certificate expires the checks warn.
const ExpiryWarning = 60 * 24 * time.Hour

// Resource is a kind of object the install creates, for the --pre
// permission checks.
type Resource struct {
	Group    string // "" for the core group
	Resource string // plural, lowercase: "deployments"
	Kind     string // for the output: "Deployment"
	// Namespaced resources are checked in the control plane namespace.
	Namespaced bool
}

// DefaultInstallResources are the kinds the chart creates.
func DefaultInstallResources() []Resource {
	return []Resource{
		{Resource: "namespaces", Kind: "Namespace"},
		{Group: "rbac.authorization.k8s.io", Resource: "clusterroles", Kind: "ClusterRole"},
		{Group: "rbac.authorization.k8s.io", Resource: "clusterrolebindings", Kind: "ClusterRoleBinding"},
		{Group: "admissionregistration.k8s.io", Resource: "mutatingwebhookconfigurations", Kind: "MutatingWebhookConfiguration"},
		{Resource: "serviceaccounts", Kind: "ServiceAccount", Namespaced: true},
		{Group: "rbac.authorization.k8s.io", Resource: "roles", Kind: "Role", Namespaced: true},
		{Group: "rbac.authorization.k8s.io", Resource: "rolebindings", Kind: "RoleBinding", Namespaced: true},
		{Resource: "configmaps", Kind: "ConfigMap", Namespaced: true},
		{Resource: "secrets", Kind: "Secret", Namespaced: true},
		{Resource: "services", Kind: "Service", Namespaced: true},
		{Group: "apps", Resource: "deployments", Kind: "Deployment", Namespaced: true},
	}
}

// Options select and configure the checks.
type Options struct {
	// NewClient connects to the cluster; it is called by the first check.
	NewClient func() (kubernetes.Interface, error)
	// NewDynamicClient connects to the cluster for the policy resources;
	// nil leaves the policy checks of --proxy out.
	NewDynamicClient func() (dynamic.Interface, error)
	// ControlPlaneNamespace is where Conduit is (or will be) installed.
	ControlPlaneNamespace string
	// DataPlaneNamespace limits --proxy checks to one namespace; "" is all.
	DataPlaneNamespace string
	// CLIVersion is the running CLI's version.
	CLIVersion string
	// ProgName is how the user runs the CLI ("conduit" or "kubectl conduit"),
	// for the commands in hints.
	ProgName string
	// Pre checks that the cluster is ready for an install instead of
	// checking an install.
	Pre bool
	// Proxy adds the data plane checks.
	Proxy bool
	// Wait is how long checks of states that settle by themselves (pods
	// becoming ready) are retried.
	Wait time.Duration
	// InstallResources are the kinds --pre checks permission to create;
	// default DefaultInstallResources().
	InstallResources []Resource
	// Now is the clock for certificate validity; default time.Now.
	Now func() time.Time
	// ControllerHealth, when set, asks the running controller whether it
	// serves (its gRPC health service); nil leaves that check out.
	ControllerHealth func(ctx context.Context) error
	// ControllerAddr names where ControllerHealth connects, for messages.
	ControllerAddr string
}

// state is what the checks learn and share as they run, in order.
type state struct {
	opts   Options
	client kubernetes.Interface
	dyn    dynamic.Interface // set by the policy checks

	config       *corev1.ConfigMap   // conduit-config
	anchors      []*x509.Certificate // trust anchors
	issuer       *x509.Certificate
	webhookCert  *x509.Certificate
	webhookCAPEM []byte

	logMu    sync.Mutex // guards logCache
	logCache map[logKey]cachedLine
}

func (s *state) now() time.Time {
	if s.opts.Now != nil {
		return s.opts.Now()
	}
	return time.Now()
}

// cmd is how the user runs a CLI subcommand against this control plane:
// "conduit upgrade", or "conduit upgrade -L NS" outside the default namespace
// (-L names the control plane on every command).
func (s *state) cmd(sub string) string {
	if ns := s.opts.ControlPlaneNamespace; ns != DefaultControlPlaneNamespace {
		return s.opts.ProgName + " " + sub + " -L " + ns
	}
	return s.opts.ProgName + " " + sub
}

func (s *state) installedVersion() string {
	if s.config == nil {
		return ""
	}
	return s.config.Data["version"]
}

// Categories builds the checks opts asks for, in run order.
func Categories(opts Options) []Category {
	if opts.ControlPlaneNamespace == "" {
		opts.ControlPlaneNamespace = DefaultControlPlaneNamespace
	}
	if opts.ProgName == "" {
		opts.ProgName = "conduit"
	}
	if opts.InstallResources == nil {
		opts.InstallResources = DefaultInstallResources()
	}
	s := &state{opts: opts}
	var deadline time.Time
	if opts.Wait > 0 {
		deadline = s.now().Add(opts.Wait)
	}
	cats := []Category{s.kubernetesAPI(deadline), s.kubernetesVersion()}
	if opts.Pre {
		return append(cats, s.preKubernetesSetup())
	}
	cats = append(cats,
		s.conduitConfig(),
		s.controlPlane(deadline),
		s.identity(),
		s.webhook(deadline),
		s.version(),
		s.gatewayAPI(),
	)
	if opts.Proxy {
		cats = append(cats, s.dataPlane(deadline))
		if opts.NewDynamicClient != nil {
			cats = append(cats, s.policyChecks())
		}
	}
	return cats
}
