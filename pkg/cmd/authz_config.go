package cmd

import (
	"context"
	"errors"
	"fmt"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
	"github.com/conduitmesh/conduit/pkg/healthcheck"
	"github.com/conduitmesh/conduit/pkg/inject"
)

// meshConfig is what the installed controller computes policies with: the
// trust domain, the cluster's default policy and its networks.
type meshConfig struct {
	trustDomain     string
	defaultPolicy   string
	clusterNetworks []string
	// source says where they were read, for the note when they are the
	// defaults.
	source string
}

// errNoMesh means no control plane was found to read the config from.
var errNoMesh = errors.New("no Conduit control plane")

// installedMeshConfig reads the policy settings of the control plane in ns:
// the controller Deployment's flags (what the controller runs with), else
// the values recorded in conduit-config (what the chart gives it). A
// setting absent from both is the controller's default. errNoMesh (wrapped
// with the reason) when there is neither.
func installedMeshConfig(ctx context.Context, kube kubernetes.Interface, ns string) (meshConfig, error) {
	c := meshConfig{trustDomain: inject.DefaultTrustDomain, defaultPolicy: contract.PolicyAllUnauthenticated}
	d, err := kube.AppsV1().Deployments(ns).Get(ctx, healthcheck.ControllerName, metav1.GetOptions{})
	if err == nil {
		for _, ctr := range d.Spec.Template.Spec.Containers {
			if ctr.Name == "controller" {
				c.fromFlags(append(ctr.Command[min(len(ctr.Command), 1):], ctr.Args...))
				c.source = fmt.Sprintf("the flags of Deployment %s/%s", ns, healthcheck.ControllerName)
				return c, nil
			}
		}
	} else if !apierrors.IsNotFound(err) {
		return c, fmt.Errorf("%w readable in namespace %s: reading Deployment %s: %v", errNoMesh, ns, healthcheck.ControllerName, err)
	}
	cm, err := kube.CoreV1().ConfigMaps(ns).Get(ctx, healthcheck.ConfigMapName, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return c, fmt.Errorf("%w in namespace %s (no Deployment %s nor ConfigMap %s)", errNoMesh, ns, healthcheck.ControllerName, healthcheck.ConfigMapName)
	}
	if err != nil {
		return c, fmt.Errorf("%w readable in namespace %s: reading ConfigMap %s: %v", errNoMesh, ns, healthcheck.ConfigMapName, err)
	}
	var vals struct {
		IdentityTrustDomain string `json:"identityTrustDomain"`
		Policy              struct {
			DefaultInboundPolicy string   `json:"defaultInboundPolicy"`
			ClusterNetworks      []string `json:"clusterNetworks"`
		} `json:"policy"`
	}
	if err := yaml.Unmarshal([]byte(cm.Data["values"]), &vals); err != nil {
		return c, fmt.Errorf("%w readable in namespace %s: ConfigMap %s has unreadable values: %v", errNoMesh, ns, healthcheck.ConfigMapName, err)
	}
	if vals.IdentityTrustDomain != "" {
		c.trustDomain = vals.IdentityTrustDomain
	}
	if p := vals.Policy.DefaultInboundPolicy; p != "" {
		c.defaultPolicy = p
	}
	c.clusterNetworks = vals.Policy.ClusterNetworks
	c.source = fmt.Sprintf("the values in ConfigMap %s/%s", ns, healthcheck.ConfigMapName)
	return c, nil
}

// fromFlags takes the controller's policy flags (--name=value or --name
// value) from its arguments.
func (c *meshConfig) fromFlags(args []string) {
	for i := 0; i < len(args); i++ {
		if !strings.HasPrefix(args[i], "-") {
			continue
		}
		name, value, ok := strings.Cut(strings.TrimLeft(args[i], "-"), "=")
		switch name {
		case "trust-domain", contract.FlagDefaultInboundPolicy, "cluster-networks":
			if !ok && i+1 < len(args) {
				i++
				value = args[i]
			}
		}
		switch name {
		case "trust-domain":
			c.trustDomain = value
		case contract.FlagDefaultInboundPolicy:
			c.defaultPolicy = value
		case "cluster-networks":
			c.clusterNetworks = nil
			for n := range strings.SplitSeq(value, ",") {
				if n = strings.TrimSpace(n); n != "" {
					c.clusterNetworks = append(c.clusterNetworks, n)
				}
			}
		}
	}
}

// cluster is the config as the policy index takes it.
func (c meshConfig) cluster() (policy.Cluster, error) {
	p, err := policy.ParseDefaultPolicy(c.defaultPolicy)
	if err != nil {
		return policy.Cluster{}, fmt.Errorf("the controller's default inbound policy (from %s): %w", c.source, err)
	}
	cidrs := c.clusterNetworks
	if len(cidrs) == 0 {
		cidrs = policy.DefaultClusterNetworks
	}
	nets, err := policy.ParseNetworks(cidrs)
	if err != nil {
		return policy.Cluster{}, fmt.Errorf("the controller's cluster networks (from %s): %w", c.source, err)
	}
	return policy.Cluster{TrustDomain: c.trustDomain, DefaultPolicy: p, ClusterNetworks: nets}, nil
}
