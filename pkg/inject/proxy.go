package inject

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/pki"
)

// sidecar holds the nodes injected into a pod for one ProxyConfig. Built once
// per configuration and copied into each pod.
type sidecar struct {
	init, proxy *yaml.Node
	tokenVol    *yaml.Node
}

// newSidecar renders c's containers and volumes as YAML nodes, through the
// typed Kubernetes structs so that the field names and shapes are right.
func newSidecar(c ProxyConfig) (*sidecar, error) {
	s := &sidecar{}
	var err error
	if s.init, err = toNode(initContainer(c)); err != nil {
		return nil, err
	}
	if err := c.validate(); err != nil {
		return nil, err
	}
	if s.proxy, err = toNode(proxyContainer(c)); err != nil {
		return nil, err
	}
	if s.tokenVol, err = toNode(tokenVolume()); err != nil {
		return nil, err
	}
	return s, nil
}

func toNode(v any) (*yaml.Node, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("rendering the sidecar: %w", err)
	}
	return jsonToNode(b)
}

func (c ProxyConfig) imageRef() string {
	if c.Version == "" {
		return c.Image
	}
	return c.Image + ":" + c.Version
}

func (c ProxyConfig) controllerAddr() string {
	return fmt.Sprintf("conduit-controller.%s.svc.%s:%d", c.ControlPlaneNamespace, c.ClusterDomain, DefaultControllerGRPCPort)
}

func (c ProxyConfig) controllerIdentity() string {
	return fmt.Sprintf("spiffe://%s/ns/%s/sa/conduit-controller", c.TrustDomain, c.ControlPlaneNamespace)
}

func fieldEnv(name, path string) corev1.EnvVar {
	return corev1.EnvVar{Name: name, ValueFrom: &corev1.EnvVarSource{
		FieldRef: &corev1.ObjectFieldSelector{FieldPath: path},
	}}
}

// flagEnv sets a conduit-proxy flag through its environment variable.
func flagEnv(flag, value string) corev1.EnvVar {
	return corev1.EnvVar{Name: contract.Env(flag), Value: value}
}

func proxyContainer(c ProxyConfig) corev1.Container {
	env := []corev1.EnvVar{
		fieldEnv(contract.EnvPodNamespace, "metadata.namespace"),
		fieldEnv(contract.EnvPodServiceAccount, "spec.serviceAccountName"),
		fieldEnv(contract.Env(contract.FlagPodName), "metadata.name"),
		flagEnv(contract.FlagLogLevel, c.LogLevel),
		flagEnv(contract.FlagInboundListen, "0.0.0.0:"+strconv.Itoa(c.InboundPort)),
		flagEnv(contract.FlagOutboundListen, "127.0.0.1:"+strconv.Itoa(c.OutboundPort)),
		flagEnv(contract.FlagAdminListen, "0.0.0.0:"+strconv.Itoa(c.AdminPort)),
		flagEnv(contract.FlagControllerAddr, c.controllerAddr()),
		flagEnv(contract.FlagControllerIdentity, c.controllerIdentity()),
		flagEnv(contract.FlagIdentityName, fmt.Sprintf("spiffe://%s/ns/$(%s)/sa/$(%s)", c.TrustDomain, contract.EnvPodNamespace, contract.EnvPodServiceAccount)),
		flagEnv(contract.FlagIdentityTokenFile, tokenMountPath+"/token"),
		flagEnv(contract.FlagTrustAnchors, c.TrustAnchorsPEM),
	}
	if c.OpaquePorts != "" {
		env = append(env, flagEnv(contract.FlagOpaquePorts, c.OpaquePorts))
	}
	if c.DefaultInboundPolicy != "" {
		env = append(env, flagEnv(contract.FlagDefaultInboundPolicy, c.DefaultInboundPolicy))
	}
	admin := intstr.FromInt32(int32(c.AdminPort))
	probe := func(path string, delay int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler:        corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: admin}},
			InitialDelaySeconds: delay,
		}
	}
	ctr := corev1.Container{
		Name:            ProxyContainerName,
		Image:           c.imageRef(),
		ImagePullPolicy: corev1.PullPolicy(c.ImagePullPolicy),
		Args:            []string{"run"},
		Ports: []corev1.ContainerPort{
			{Name: "conduit-proxy", ContainerPort: int32(c.InboundPort)},
			{Name: "conduit-admin", ContainerPort: int32(c.AdminPort)},
		},
		Env:            env,
		Resources:      resources(c.CPURequest, c.CPULimit, c.MemoryRequest, c.MemoryLimit),
		ReadinessProbe: probe("/ready", 2),
		LivenessProbe:  probe("/live", 10),
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                &c.UID,
			RunAsNonRoot:             ptr(true),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
			SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		VolumeMounts: []corev1.VolumeMount{
			{Name: TokenVolumeName, MountPath: tokenMountPath, ReadOnly: true},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
	if c.NativeSidecar {
		// The kubelet starts the app containers only once the proxy is ready,
		// and stops the proxy after them, so Jobs complete.
		ctr.RestartPolicy = ptr(corev1.ContainerRestartPolicyAlways)
		ctr.StartupProbe = &corev1.Probe{
			ProbeHandler:     corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/ready", Port: admin}},
			PeriodSeconds:    1,
			FailureThreshold: 120,
		}
	}
	return ctr
}

func initContainer(c ProxyConfig) corev1.Container {
	skipIn := strconv.Itoa(c.AdminPort)
	if c.SkipInboundPorts != "" {
		skipIn += "," + c.SkipInboundPorts
	}
	args := []string{
		"init",
		"--inbound-port=" + strconv.Itoa(c.InboundPort),
		"--outbound-port=" + strconv.Itoa(c.OutboundPort),
		"--proxy-uid=" + strconv.FormatInt(c.UID, 10),
		"--skip-inbound-ports=" + skipIn,
	}
	if c.SkipOutboundPorts != "" {
		args = append(args, "--skip-outbound-ports="+c.SkipOutboundPorts)
	}
	return corev1.Container{
		Name:            InitContainerName,
		Image:           c.imageRef(),
		ImagePullPolicy: corev1.PullPolicy(c.ImagePullPolicy),
		Args:            args,
		Resources:       resources("10m", "100m", "10Mi", "50Mi"),
		// init installs the redirect with nftables over netlink, which needs
		// CAP_NET_ADMIN in the pod's network namespace; NET_RAW is for the
		// iptables-legacy fallback (an image that carries iptables, on a
		// kernel without nf_tables). It runs as root because Kubernetes gives
		// added capabilities to root only: a non-root process gets them only
		// as ambient or file capabilities, which Kubernetes does not set and
		// the release image (distroless, the binary alone) does not carry.
		SecurityContext: &corev1.SecurityContext{
			RunAsUser:                ptr(int64(0)),
			RunAsNonRoot:             ptr(false),
			Privileged:               ptr(false),
			ReadOnlyRootFilesystem:   ptr(true),
			AllowPrivilegeEscalation: ptr(false),
			Capabilities: &corev1.Capabilities{
				Add:  []corev1.Capability{"NET_ADMIN", "NET_RAW"},
				Drop: []corev1.Capability{"ALL"},
			},
			SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
		},
		TerminationMessagePolicy: corev1.TerminationMessageFallbackToLogsOnError,
	}
}

func tokenVolume() corev1.Volume {
	return corev1.Volume{Name: TokenVolumeName, VolumeSource: corev1.VolumeSource{
		Projected: &corev1.ProjectedVolumeSource{Sources: []corev1.VolumeProjection{{
			ServiceAccountToken: &corev1.ServiceAccountTokenProjection{
				Audience:          TokenAudience,
				ExpirationSeconds: ptr(int64(DefaultTokenExpiration)),
				Path:              "token",
			},
		}}},
	}}
}

// validate checks the settings that would otherwise make rendering fail, for
// configurations built in code rather than through overrides.
func (c ProxyConfig) validate() error {
	checks := []struct{ name, v string }{
		{OverrideProxyCPURequest, c.CPURequest}, {OverrideProxyCPULimit, c.CPULimit},
		{OverrideProxyMemoryRequest, c.MemoryRequest}, {OverrideProxyMemoryLimit, c.MemoryLimit},
	}
	for _, q := range checks {
		if _, err := quantity(q.v); err != nil {
			return fmt.Errorf("proxy setting %s: %w", q.name, err)
		}
	}
	for _, p := range []int{c.InboundPort, c.OutboundPort, c.AdminPort} {
		if p < 1 || p > 65535 {
			return fmt.Errorf("proxy port %d is not in 1-65535", p)
		}
	}
	if c.Image == "" {
		return fmt.Errorf("no proxy image configured")
	}
	return CheckTrustAnchors(c.TrustAnchorsPEM)
}

// CheckTrustAnchors checks that pem holds at least one certificate and that
// every CERTIFICATE block in it parses.
func CheckTrustAnchors(text string) error {
	if strings.TrimSpace(text) == "" {
		return errors.New("no identity trust anchors configured: the proxy needs the PEM trust anchors of the mesh (the " + TrustRootsConfigMap + " ConfigMap of the control plane)")
	}
	if _, err := pki.Parse([]byte(text)); err != nil {
		return fmt.Errorf("identity trust anchors: %w", err)
	}
	return nil
}

// resources builds requirements from quantities checked by validate
// ("" = unset).
func resources(cpuReq, cpuLim, memReq, memLim string) corev1.ResourceRequirements {
	var r corev1.ResourceRequirements
	add := func(l *corev1.ResourceList, name corev1.ResourceName, v string) {
		if v == "" {
			return
		}
		if *l == nil {
			*l = corev1.ResourceList{}
		}
		(*l)[name] = resource.MustParse(v)
	}
	add(&r.Requests, corev1.ResourceCPU, cpuReq)
	add(&r.Requests, corev1.ResourceMemory, memReq)
	add(&r.Limits, corev1.ResourceCPU, cpuLim)
	add(&r.Limits, corev1.ResourceMemory, memLim)
	return r
}

func ptr[T any](v T) *T { return &v }
