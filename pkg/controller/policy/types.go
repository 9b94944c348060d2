package policy

import (
	"fmt"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// Group is the API group of the policy resources; Version their version.
const (
	Group   = "policy.conduit.io"
	Version = "v1beta1"

	GatewayGroup = "gateway.networking.k8s.io"
)

// The resources the index watches. The Gateway API routes are optional:
// without their CRDs there is no per-route policy.
var (
	ServersResource                = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "servers"}
	MeshTLSAuthenticationsResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "meshtlsauthentications"}
	NetworkAuthenticationsResource = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "networkauthentications"}
	AuthorizationPoliciesResource  = schema.GroupVersionResource{Group: Group, Version: Version, Resource: "authorizationpolicies"}
	HTTPRoutesResource             = schema.GroupVersionResource{Group: GatewayGroup, Version: "v1", Resource: "httproutes"}
	GRPCRoutesResource             = schema.GroupVersionResource{Group: GatewayGroup, Version: "v1", Resource: "grpcroutes"}
)

// Kinds, as references name them.
const (
	KindServer                = "Server"
	KindMeshTLSAuthentication = "MeshTLSAuthentication"
	KindNetworkAuthentication = "NetworkAuthentication"
	KindAuthorizationPolicy   = "AuthorizationPolicy"
	KindServiceAccount        = "ServiceAccount"
	KindNamespace             = "Namespace"
	KindHTTPRoute             = "HTTPRoute"
	KindGRPCRoute             = "GRPCRoute"
)

// Server names a port of the pods its selector picks.
type Server struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              ServerSpec `json:"spec"`
}

// ServerSpec is a Server's spec.
type ServerSpec struct {
	PodSelector metav1.LabelSelector `json:"podSelector"`
	// Port is a number or the name of a container port.
	Port intstr.IntOrString `json:"port"`
	// ProxyProtocol is unknown (detect), HTTP/1, HTTP/2, gRPC or opaque.
	ProxyProtocol string `json:"proxyProtocol,omitempty"`
}

// MeshTLSAuthentication is satisfied by the clients of its identities.
type MeshTLSAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              MeshTLSAuthenticationSpec `json:"spec"`
}

// MeshTLSAuthenticationSpec holds exactly one of its fields.
type MeshTLSAuthenticationSpec struct {
	Identities   []string      `json:"identities,omitempty"`
	IdentityRefs []IdentityRef `json:"identityRefs,omitempty"`
}

// IdentityRef is a ServiceAccount or a Namespace; Name "*" is all of them.
type IdentityRef struct {
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// NetworkAuthentication is satisfied by clients from its networks.
type NetworkAuthentication struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              NetworkAuthenticationSpec `json:"spec"`
}

// NetworkAuthenticationSpec is a NetworkAuthentication's spec.
type NetworkAuthenticationSpec struct {
	Networks []Network `json:"networks"`
}

// Network is a prefix without the prefixes in Except.
type Network struct {
	CIDR   string   `json:"cidr"`
	Except []string `json:"except,omitempty"`
}

// AuthorizationPolicy admits the clients that satisfy all its required
// authentications to its target.
type AuthorizationPolicy struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              AuthorizationPolicySpec `json:"spec"`
}

// AuthorizationPolicySpec is an AuthorizationPolicy's spec.
type AuthorizationPolicySpec struct {
	TargetRef                  LocalRef       `json:"targetRef"`
	RequiredAuthenticationRefs []NamespaceRef `json:"requiredAuthenticationRefs"`
}

// LocalRef names an object of the referrer's namespace.
type LocalRef struct {
	Group string `json:"group,omitempty"`
	Kind  string `json:"kind"`
	Name  string `json:"name"`
}

// NamespaceRef names an object, by default in the referrer's namespace.
type NamespaceRef struct {
	Group     string `json:"group,omitempty"`
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

// HTTPRoute is the part of a Gateway API HTTPRoute (v1) that inbound policy
// (parentRefs naming a Server, matches) and outbound routing (parentRefs
// naming a Service: matches, filters, backendRefs, timeouts) read.
type HTTPRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              HTTPRouteSpec `json:"spec"`
}

// HTTPRouteSpec holds the route's parents and its rules' matches.
type HTTPRouteSpec struct {
	ParentRefs []ParentRef      `json:"parentRefs,omitempty"`
	Rules      []HTTPRouteRules `json:"rules,omitempty"`
}

// ParentRef is a Gateway API parentRef; inbound policy reads the ones that
// name a Server, outbound routing the ones that name a Service.
type ParentRef struct {
	Group       *string `json:"group,omitempty"`
	Kind        *string `json:"kind,omitempty"`
	Namespace   *string `json:"namespace,omitempty"`
	Name        string  `json:"name"`
	SectionName *string `json:"sectionName,omitempty"`
	Port        *int32  `json:"port,omitempty"`
}

// IsService reports whether the parentRef names a Service (group "" or
// "core", kind Service): a GAMMA route's parent.
func (p ParentRef) IsService() bool {
	return p.Group != nil && isCoreGroup(*p.Group) && p.Kind != nil && *p.Kind == KindService
}

// ServiceNamespace is the namespace of the parent a route in routeNS names.
func (p ParentRef) ServiceNamespace(routeNS string) string {
	if p.Namespace != nil && *p.Namespace != "" {
		return *p.Namespace
	}
	return routeNS
}

func isCoreGroup(g string) bool { return g == "" || g == "core" }

// KindService is the kind of a Service parentRef or backendRef.
const KindService = "Service"

// HTTPRouteRules is one rule of an HTTPRoute.
type HTTPRouteRules struct {
	Matches     []HTTPRouteMatch   `json:"matches,omitempty"`
	Filters     []HTTPRouteFilter  `json:"filters,omitempty"`
	BackendRefs []BackendRef       `json:"backendRefs,omitempty"`
	Timeouts    *HTTPRouteTimeouts `json:"timeouts,omitempty"`
}

// HTTPRouteTimeouts are Gateway API durations ("10s", "500ms", "1h30m").
type HTTPRouteTimeouts struct {
	Request        *string `json:"request,omitempty"`
	BackendRequest *string `json:"backendRequest,omitempty"`
}

// HTTPRouteFilter is one filter of a rule or a backendRef (a GRPCRoute's
// filters have the same shape, without redirects). Type names which
// field is set.
type HTTPRouteFilter struct {
	Type                   string                     `json:"type"`
	RequestHeaderModifier  *HTTPHeaderFilter          `json:"requestHeaderModifier,omitempty"`
	ResponseHeaderModifier *HTTPHeaderFilter          `json:"responseHeaderModifier,omitempty"`
	RequestRedirect        *HTTPRequestRedirectFilter `json:"requestRedirect,omitempty"`
}

// HTTPHeaderFilter sets, adds and removes headers.
type HTTPHeaderFilter struct {
	Set    []HTTPHeader `json:"set,omitempty"`
	Add    []HTTPHeader `json:"add,omitempty"`
	Remove []string     `json:"remove,omitempty"`
}

// HTTPHeader is a header name and value.
type HTTPHeader struct {
	Name  string `json:"name"`
	Value string `json:"value"`
}

// HTTPRequestRedirectFilter answers with a redirect.
type HTTPRequestRedirectFilter struct {
	Scheme     *string           `json:"scheme,omitempty"`
	Hostname   *string           `json:"hostname,omitempty"`
	Path       *HTTPPathModifier `json:"path,omitempty"`
	Port       *int32            `json:"port,omitempty"`
	StatusCode *int32            `json:"statusCode,omitempty"`
}

// HTTPPathModifier is ReplaceFullPath or ReplacePrefixMatch.
type HTTPPathModifier struct {
	Type               string  `json:"type"`
	ReplaceFullPath    *string `json:"replaceFullPath,omitempty"`
	ReplacePrefixMatch *string `json:"replacePrefixMatch,omitempty"`
}

// BackendRef is a rule's backend: a Service port by default (group "",
// kind Service), with a weight (default 1) and its own filters.
type BackendRef struct {
	Group     *string           `json:"group,omitempty"`
	Kind      *string           `json:"kind,omitempty"`
	Name      string            `json:"name"`
	Namespace *string           `json:"namespace,omitempty"`
	Port      *int32            `json:"port,omitempty"`
	Weight    *int32            `json:"weight,omitempty"`
	Filters   []HTTPRouteFilter `json:"filters,omitempty"`
}

// IsService reports whether the backendRef names a Service.
func (b BackendRef) IsService() bool {
	return (b.Group == nil || isCoreGroup(*b.Group)) && (b.Kind == nil || *b.Kind == KindService)
}

// ServiceNamespace is the namespace of the backend a route in routeNS names.
func (b BackendRef) ServiceNamespace(routeNS string) string {
	if b.Namespace != nil && *b.Namespace != "" {
		return *b.Namespace
	}
	return routeNS
}

// HTTPRouteMatch is Gateway API's HTTPRouteMatch.
type HTTPRouteMatch struct {
	Path        *HTTPPathMatch   `json:"path,omitempty"`
	Headers     []HTTPValueMatch `json:"headers,omitempty"`
	QueryParams []HTTPValueMatch `json:"queryParams,omitempty"`
	Method      *string          `json:"method,omitempty"`
}

// HTTPPathMatch is Exact, PathPrefix (the default) or RegularExpression.
type HTTPPathMatch struct {
	Type  *string `json:"type,omitempty"`
	Value *string `json:"value,omitempty"`
}

// HTTPValueMatch is a header or query parameter match: Exact (the default)
// or RegularExpression.
type HTTPValueMatch struct {
	Type  *string `json:"type,omitempty"`
	Name  string  `json:"name"`
	Value string  `json:"value"`
}

// GRPCRoute is the part of a Gateway API GRPCRoute (v1) that inbound policy
// and outbound routing read.
type GRPCRoute struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`
	Spec              GRPCRouteSpec `json:"spec"`
}

// GRPCRouteSpec holds the route's parents and its rules' matches.
type GRPCRouteSpec struct {
	ParentRefs []ParentRef      `json:"parentRefs,omitempty"`
	Rules      []GRPCRouteRules `json:"rules,omitempty"`
}

// GRPCRouteRules is one rule of a GRPCRoute.
type GRPCRouteRules struct {
	Matches     []GRPCRouteMatch  `json:"matches,omitempty"`
	Filters     []HTTPRouteFilter `json:"filters,omitempty"`
	BackendRefs []BackendRef      `json:"backendRefs,omitempty"`
}

// GRPCRouteMatch is Gateway API's GRPCRouteMatch.
type GRPCRouteMatch struct {
	Method  *GRPCMethodMatch `json:"method,omitempty"`
	Headers []HTTPValueMatch `json:"headers,omitempty"`
}

// GRPCMethodMatch matches a service and method, Exact (the default) or
// RegularExpression; either may be omitted.
type GRPCMethodMatch struct {
	Type    *string `json:"type,omitempty"`
	Service *string `json:"service,omitempty"`
	Method  *string `json:"method,omitempty"`
}

// FromUnstructured converts an informer's object (an HTTPRoute, say) into T.
func FromUnstructured[T any](obj any) (*T, error) { return fromUnstructured[T](obj) }

// fromUnstructured converts an informer's object into T.
func fromUnstructured[T any](obj any) (*T, error) {
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("unexpected object type %T", obj)
	}
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		return nil, fmt.Errorf("%s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return out, nil
}
