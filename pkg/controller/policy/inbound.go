package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/contract"
)

// Cluster is what every port's policy depends on besides the objects.
type Cluster struct {
	TrustDomain     string
	DefaultPolicy   DefaultPolicy
	ClusterNetworks []netip.Prefix
}

// view is what one pod's port policy is computed from: the pod, its
// namespace and the policy objects of that namespace (authentications may
// live elsewhere, so they are looked up).
type view struct {
	pod        *corev1.Pod
	namespace  *corev1.Namespace // nil when not (yet) known
	servers    []*Server
	policies   []*AuthorizationPolicy
	httpRoutes []*HTTPRoute
	grpcRoutes []*GRPCRoute
	meshTLS    func(ns, name string) *MeshTLSAuthentication
	network    func(ns, name string) *NetworkAuthentication
	// skipped receives what had to be ignored (an invalid object or
	// reference), for the log.
	skipped func(what string, err error)
}

// inbound computes the policy of port on v's pod.
func inbound(c *Cluster, v *view, port uint32) *policyv1.InboundServer {
	if srv := selectServer(v, port); srv != nil {
		return serverPolicy(c, v, srv, port)
	}
	return defaultPolicy(c, v, port)
}

// selectServer returns the Server that selects the pod's port: when
// several do, the oldest (then the first by name), as Linkerd does.
func selectServer(v *view, port uint32) *Server {
	servers := slices.Clone(v.servers)
	slices.SortFunc(servers, func(a, b *Server) int { return olderFirst(&a.ObjectMeta, &b.ObjectMeta) })
	for _, srv := range servers {
		sel, err := metav1.LabelSelectorAsSelector(&srv.Spec.PodSelector)
		if err != nil {
			v.skipped("server "+srv.Namespace+"/"+srv.Name, err)
			continue
		}
		if sel.Matches(labels.Set(v.pod.Labels)) && selectsPort(srv.Spec.Port, v.pod, port) {
			return srv
		}
	}
	return nil
}

func olderFirst(a, b *metav1.ObjectMeta) int {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		if a.CreationTimestamp.Before(&b.CreationTimestamp) {
			return -1
		}
		return 1
	}
	return strings.Compare(a.Name, b.Name)
}

// selectsPort: a number is the port itself, a name any TCP container port
// of the pod with that name.
func selectsPort(p intstr.IntOrString, pod *corev1.Pod, port uint32) bool {
	if p.Type == intstr.Int {
		return p.IntVal > 0 && uint32(p.IntVal) == port
	}
	for _, ctr := range containers(pod) {
		for _, cp := range ctr.Ports {
			if cp.Name == p.StrVal && uint32(cp.ContainerPort) == port && (cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP) {
				return true
			}
		}
	}
	return false
}

// containers are the pod's long-running containers: the regular ones and
// native sidecars.
func containers(pod *corev1.Pod) []*corev1.Container {
	var out []*corev1.Container
	for i := range pod.Spec.InitContainers {
		if c := &pod.Spec.InitContainers[i]; c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			out = append(out, c)
		}
	}
	for i := range pod.Spec.Containers {
		out = append(out, &pod.Spec.Containers[i])
	}
	return out
}

var protocols = map[string]policyv1.Protocol{
	"":        policyv1.Protocol_DETECT,
	"unknown": policyv1.Protocol_DETECT,
	"HTTP/1":  policyv1.Protocol_HTTP1,
	"HTTP/2":  policyv1.Protocol_HTTP2,
	"gRPC":    policyv1.Protocol_GRPC,
	"opaque":  policyv1.Protocol_OPAQUE,
}

// ServerProtocol is the protocol the proxies are told srv's port takes;
// false when srv's proxyProtocol is not one the CRD allows (the port then
// detects).
func ServerProtocol(srv *Server) (policyv1.Protocol, bool) {
	proto, ok := protocols[srv.Spec.ProxyProtocol]
	return proto, ok
}

// serverPolicy is the policy of a port srv selects: the policies that
// target srv or the namespace, and srv's routes (or, without any, the
// probe and catch-all routes).
func serverPolicy(c *Cluster, v *view, srv *Server, port uint32) *policyv1.InboundServer {
	proto, ok := ServerProtocol(srv)
	if !ok {
		v.skipped("server "+srv.Namespace+"/"+srv.Name, fmt.Errorf("unknown proxyProtocol %q, detecting instead", srv.Spec.ProxyProtocol))
	}
	out := &policyv1.InboundServer{
		Server:     &policyv1.Ref{Kind: "server", Name: srv.Name, Namespace: srv.Namespace},
		Protocol:   proto,
		FailClosed: true,
	}
	out.Authorizations = policyAuthorizations(c, v, func(t LocalRef) bool {
		switch {
		case isKind(t.Group, t.Kind, Group, KindServer):
			return t.Name == srv.Name
		case isKind(t.Group, t.Kind, "", KindNamespace):
			return t.Name == srv.Namespace
		}
		return false
	})
	out.HttpRoutes = serverRoutes(c, v, srv)
	if len(out.HttpRoutes) == 0 {
		out.HttpRoutes = probeRoutes(v.pod, port)
	}
	return out
}

// defaultPolicy is the policy of a port no Server selects: the pod's
// annotation, else its namespace's, else the cluster's default.
func defaultPolicy(c *Cluster, v *view, port uint32) *policyv1.InboundServer {
	p := c.DefaultPolicy
	if v.namespace != nil {
		p = annotatedPolicy(v, "namespace "+v.namespace.Name, v.namespace.Annotations, p)
	}
	p = annotatedPolicy(v, "pod "+v.pod.Namespace+"/"+v.pod.Name, v.pod.Annotations, p)
	return &policyv1.InboundServer{
		Server:         &policyv1.Ref{Kind: "default", Name: string(p)},
		Protocol:       policyv1.Protocol_DETECT,
		Authorizations: p.authorizations(c.ClusterNetworks),
		HttpRoutes:     probeRoutes(v.pod, port),
		FailClosed:     p != AllUnauthenticated,
	}
}

func annotatedPolicy(v *view, what string, annotations map[string]string, fallback DefaultPolicy) DefaultPolicy {
	s, ok := annotations[contract.AnnotationDefaultInboundPolicy]
	if !ok {
		return fallback
	}
	p, err := ParseDefaultPolicy(s)
	if err != nil {
		v.skipped(what+" annotation "+contract.AnnotationDefaultInboundPolicy, err)
		return fallback
	}
	return p
}

// isKind reports whether a reference's group and kind name kind of group;
// an empty group is taken to mean the kind's own.
func isKind(refGroup, refKind, group, kind string) bool {
	return refKind == kind && (refGroup == "" || refGroup == group)
}

// policyAuthorizations turns the namespace's policies whose target matches
// into authorizations, one per policy, by name. A policy that cannot be
// satisfied as written (a missing authentication, two of a kind) is left
// out: it admits no one.
func policyAuthorizations(c *Cluster, v *view, targets func(LocalRef) bool) []*policyv1.Authorization {
	policies := slices.Clone(v.policies)
	slices.SortFunc(policies, func(a, b *AuthorizationPolicy) int { return strings.Compare(a.Name, b.Name) })
	var out []*policyv1.Authorization
	for _, ap := range policies {
		if !targets(ap.Spec.TargetRef) {
			continue
		}
		a, err := authorization(c, v, ap)
		if err != nil {
			v.skipped("authorizationpolicy "+ap.Namespace+"/"+ap.Name, err)
			continue
		}
		out = append(out, a)
	}
	return out
}

var (
	errTwoIdentities = errors.New("it requires more than one MeshTLSAuthentication or ServiceAccount")
	errTwoNetworks   = errors.New("it requires more than one NetworkAuthentication")
)

// authorization is one policy's: the networks of its NetworkAuthentication
// (else any address) and the identities of its MeshTLSAuthentication or
// ServiceAccount (else unauthenticated).
func authorization(c *Cluster, v *view, ap *AuthorizationPolicy) (*policyv1.Authorization, error) {
	a := &policyv1.Authorization{Ref: &policyv1.Ref{Kind: "authorizationpolicy", Name: ap.Name, Namespace: ap.Namespace}}
	var mtls *policyv1.MeshTLS
	for _, ref := range ap.Spec.RequiredAuthenticationRefs {
		ns := ref.Namespace
		if ns == "" {
			ns = ap.Namespace
		}
		switch {
		case isKind(ref.Group, ref.Kind, Group, KindMeshTLSAuthentication):
			if mtls != nil {
				return nil, errTwoIdentities
			}
			authn := v.meshTLS(ns, ref.Name)
			if authn == nil {
				return nil, fmt.Errorf("MeshTLSAuthentication %s/%s does not exist", ns, ref.Name)
			}
			mtls = meshTLS(c, authn)
		case isKind(ref.Group, ref.Kind, "", KindServiceAccount):
			if mtls != nil {
				return nil, errTwoIdentities
			}
			mtls = &policyv1.MeshTLS{Identities: []string{spiffeID(c, ns, ref.Name)}}
		case isKind(ref.Group, ref.Kind, Group, KindNetworkAuthentication):
			if a.Networks != nil {
				return nil, errTwoNetworks
			}
			authn := v.network(ns, ref.Name)
			if authn == nil {
				return nil, fmt.Errorf("NetworkAuthentication %s/%s does not exist", ns, ref.Name)
			}
			nets, err := networkMatches(authn.Spec.Networks)
			if err != nil {
				return nil, fmt.Errorf("NetworkAuthentication %s/%s: %w", ns, ref.Name, err)
			}
			a.Networks = nets
		default:
			return nil, fmt.Errorf("it requires a %s %s, which is not an authentication", ref.Group, ref.Kind)
		}
	}
	if a.Networks == nil {
		a.Networks = anyNetwork()
	}
	if mtls != nil {
		a.Authentication = &policyv1.Authorization_MeshTls{MeshTls: mtls}
	} else {
		a.Authentication = &policyv1.Authorization_Unauthenticated{Unauthenticated: &policyv1.Unauthenticated{}}
	}
	return a, nil
}

func spiffeID(c *Cluster, ns, sa string) string { return nsPrefix(c, ns) + sa }

// nsPrefix matches every ServiceAccount of namespace ns (see
// policyv1.MeshTLS's prefixes).
func nsPrefix(c *Cluster, ns string) string {
	return "spiffe://" + c.TrustDomain + "/ns/" + ns + "/sa/"
}

// meshTLS turns a MeshTLSAuthentication into identities and prefixes: "*"
// (an identity, or a Namespace reference named "*") admits every
// authenticated client; a ServiceAccount named "*" or a Namespace every
// ServiceAccount of that namespace.
func meshTLS(c *Cluster, authn *MeshTLSAuthentication) *policyv1.MeshTLS {
	var ids, prefixes []string
	for _, id := range authn.Spec.Identities {
		if id == "*" {
			prefixes = append(prefixes, "")
		} else {
			ids = append(ids, id)
		}
	}
	for _, ref := range authn.Spec.IdentityRefs {
		switch {
		case ref.Kind == KindServiceAccount:
			ns := ref.Namespace
			if ns == "" {
				ns = authn.Namespace
			}
			if ref.Name == "*" {
				prefixes = append(prefixes, nsPrefix(c, ns))
			} else {
				ids = append(ids, spiffeID(c, ns, ref.Name))
			}
		case ref.Kind == KindNamespace && ref.Name == "*":
			prefixes = append(prefixes, "")
		case ref.Kind == KindNamespace:
			prefixes = append(prefixes, nsPrefix(c, ref.Name))
		}
	}
	slices.Sort(ids)
	slices.Sort(prefixes)
	prefixes = slices.Compact(prefixes)
	if len(prefixes) > 0 && prefixes[0] == "" { // every identity: nothing else matters
		return &policyv1.MeshTLS{Prefixes: []string{""}}
	}
	return &policyv1.MeshTLS{Identities: slices.Compact(ids), Prefixes: prefixes}
}

// networkMatches normalizes a NetworkAuthentication's networks (host bits
// cleared, so the proxy compares prefixes as written).
func networkMatches(nets []Network) ([]*policyv1.Network, error) {
	if len(nets) == 0 {
		return nil, errors.New("it lists no network")
	}
	out := make([]*policyv1.Network, 0, len(nets))
	for _, n := range nets {
		p, err := ParseNetworks([]string{n.CIDR})
		if err != nil {
			return nil, err
		}
		except, err := ParseNetworks(n.Except)
		if err != nil {
			return nil, err
		}
		m := &policyv1.Network{Cidr: p[0].String()}
		for _, e := range except {
			m.Except = append(m.Except, e.String())
		}
		out = append(out, m)
	}
	return out, nil
}

// probeRoutes are the routes of a port without routes of its own: the
// kubelet's probes of that port (GET on the paths of HTTP probes, the gRPC
// health check's POST for gRPC probes; from any address, unauthenticated),
// and a catch-all route so that every other request is still admitted by
// the port's authorizations. Without probes, none: no routes already means
// one catch-all route.
func probeRoutes(pod *corev1.Pod, port uint32) []*policyv1.HttpRoute {
	requests := probeRequests(pod, port)
	if len(requests) == 0 {
		return nil
	}
	probe := &policyv1.HttpRoute{
		Ref: &policyv1.Ref{Kind: "probe", Name: "probe"},
		Authorizations: []*policyv1.Authorization{{
			Ref:            &policyv1.Ref{Kind: "default", Name: "probe"},
			Networks:       anyNetwork(),
			Authentication: &policyv1.Authorization_Unauthenticated{Unauthenticated: &policyv1.Unauthenticated{}},
		}},
	}
	for _, r := range requests {
		probe.Matches = append(probe.Matches, &policyv1.HttpMatch{
			Path:   &policyv1.PathMatch{Kind: &policyv1.PathMatch_Exact{Exact: r.path}},
			Method: r.method,
		})
	}
	return []*policyv1.HttpRoute{probe, {Ref: &policyv1.Ref{Kind: "default", Name: "default"}}}
}

// probeRequest is a request the kubelet makes to probe a container.
type probeRequest struct{ path, method string }

// grpcHealthCheck is the method the kubelet calls for a gRPC probe.
const grpcHealthCheck = "/grpc.health.v1.Health/Check"

// probeRequests are the requests of the pod's liveness, readiness and
// startup probes on port (HTTP GETs, gRPC health checks), sorted and
// without duplicates.
func probeRequests(pod *corev1.Pod, port uint32) []probeRequest {
	var out []probeRequest
	for _, ctr := range containers(pod) {
		for _, probe := range []*corev1.Probe{ctr.LivenessProbe, ctr.ReadinessProbe, ctr.StartupProbe} {
			switch {
			case probe == nil:
			case probe.HTTPGet != nil && probePort(probe.HTTPGet.Port, ctr, port):
				path, _, _ := strings.Cut(probe.HTTPGet.Path, "?") // the kubelet sends the query too; routes match the path
				if path == "" {
					path = "/"
				} else if !strings.HasPrefix(path, "/") {
					path = "/" + path
				}
				out = append(out, probeRequest{path: path, method: "GET"})
			case probe.GRPC != nil && probe.GRPC.Port > 0 && uint32(probe.GRPC.Port) == port:
				out = append(out, probeRequest{path: grpcHealthCheck, method: "POST"})
			}
		}
	}
	slices.SortFunc(out, func(a, b probeRequest) int { return strings.Compare(a.path+" "+a.method, b.path+" "+b.method) })
	return slices.Compact(out)
}

// probePort: a probe's port is a number or the name of a port of its own
// container.
func probePort(p intstr.IntOrString, ctr *corev1.Container, port uint32) bool {
	if p.Type == intstr.Int {
		return p.IntVal > 0 && uint32(p.IntVal) == port
	}
	for _, cp := range ctr.Ports {
		if cp.Name == p.StrVal {
			return uint32(cp.ContainerPort) == port
		}
	}
	return false
}
