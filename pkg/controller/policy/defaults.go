package policy

import (
	"fmt"
	"net/netip"
	"strings"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/contract"
)

// DefaultPolicy is the inbound policy of a port that no Server selects.
type DefaultPolicy string

// The default policies, as the chart value, the controller flag and the
// annotation spell them.
const (
	AllUnauthenticated     DefaultPolicy = contract.PolicyAllUnauthenticated
	AllAuthenticated       DefaultPolicy = contract.PolicyAllAuthenticated
	ClusterAuthenticated   DefaultPolicy = contract.PolicyClusterAuthenticated
	ClusterUnauthenticated DefaultPolicy = contract.PolicyClusterUnauthenticated
	Deny                   DefaultPolicy = contract.PolicyDeny
)

// DefaultPolicies lists every default policy.
var DefaultPolicies = []DefaultPolicy{AllUnauthenticated, AllAuthenticated, ClusterAuthenticated, ClusterUnauthenticated, Deny}

// ParseDefaultPolicy parses a default policy's name.
func ParseDefaultPolicy(s string) (DefaultPolicy, error) {
	if err := contract.CheckDefaultInboundPolicy(s); err != nil {
		return "", err
	}
	return DefaultPolicy(s), nil
}

// ParseNetworks parses CIDRs such as the cluster networks.
func ParseNetworks(cidrs []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(cidrs))
	for _, c := range cidrs {
		p, err := netip.ParsePrefix(strings.TrimSpace(c))
		if err != nil {
			return nil, fmt.Errorf("%q is not a CIDR such as 10.0.0.0/8 or fd00::/8", c)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// DefaultClusterNetworks are Linkerd's defaults: the private IPv4 ranges,
// the carrier-grade NAT range and IPv6 unique local addresses.
var DefaultClusterNetworks = []string{"10.0.0.0/8", "100.64.0.0/10", "172.16.0.0/12", "192.168.0.0/16", "fd00::/8"}

// anyNetwork is every address, IPv4 and IPv6.
func anyNetwork() []*policyv1.Network {
	return []*policyv1.Network{{Cidr: "0.0.0.0/0"}, {Cidr: "::/0"}}
}

func networks(prefixes []netip.Prefix) []*policyv1.Network {
	out := make([]*policyv1.Network, len(prefixes))
	for i, p := range prefixes {
		out[i] = &policyv1.Network{Cidr: p.String()}
	}
	return out
}

// authorizations are the policy's own: all-* admit any address, cluster-*
// the cluster networks; *-unauthenticated admit any client,
// *-authenticated any meshed one; deny admits no one.
func (p DefaultPolicy) authorizations(clusterNetworks []netip.Prefix) []*policyv1.Authorization {
	a := &policyv1.Authorization{Ref: &policyv1.Ref{Kind: "default", Name: string(p)}}
	switch p {
	case AllUnauthenticated, AllAuthenticated:
		a.Networks = anyNetwork()
	case ClusterUnauthenticated, ClusterAuthenticated:
		a.Networks = networks(clusterNetworks)
	default:
		return nil
	}
	if p == AllAuthenticated || p == ClusterAuthenticated {
		a.Authentication = &policyv1.Authorization_MeshTls{MeshTls: &policyv1.MeshTLS{Prefixes: []string{""}}}
	} else {
		a.Authentication = &policyv1.Authorization_Unauthenticated{Unauthenticated: &policyv1.Unauthenticated{}}
	}
	return []*policyv1.Authorization{a}
}
