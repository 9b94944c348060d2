package contract

// Registry is the local registry file (YAML or JSON) that `conduit demo`
// writes and the controller's local discovery backend, inbound policy and
// stats read. An example:
//
//	services:
//	- name: web
//	  namespace: demo
//	  port: 80
//	  authorities: ["localhost:8080"]
//	  endpoints:
//	  - address: 127.0.0.1:41001
//	    identity: spiffe://cluster.local/ns/demo/sa/web
//	    labels: {pod: web-0, deployment: web, serviceaccount: web}
//	proxies:
//	- namespace: demo
//	  pod: web-0
//	  adminAddress: 127.0.0.1:41191
//	  identity: spiffe://cluster.local/ns/demo/sa/web
//	  labels: {deployment: web}
//	  ports: [{name: http, port: 41000}]
//	namespaces:
//	- name: demo
//	  annotations: {config.conduit.io/default-inbound-policy: all-authenticated}
//	policies:
//	- apiVersion: policy.conduit.io/v1beta1
//	  kind: Server
//	  metadata: {name: web-http, namespace: demo}
//	  spec: {podSelector: {matchLabels: {deployment: web}}, port: http, proxyProtocol: HTTP/1}
//	- apiVersion: policy.conduit.io/v1beta1
//	  kind: AuthorizationPolicy
//	  metadata: {name: web-from-traffic, namespace: demo}
//	  spec:
//	    targetRef: {group: policy.conduit.io, kind: Server, name: web-http}
//	    requiredAuthenticationRefs: [{kind: ServiceAccount, name: traffic}]
//
// A service answers to name.namespace.svc.cluster.local:port, name.namespace.svc:port,
// name.namespace:port, name:port from a proxy in the same namespace, every
// extra authority listed, and each endpoint's own address. A service's
// endpoints are listed, not selected: a service of some of a workload's
// pods (authors-v2 of authors) lists theirs.
//
// The inbound policy of a proxy's ports (for proxies started with
// --pod-name) is computed as in a cluster: each proxy is a pod with its
// labels and ports, namespaces carry their annotations, and policies are the
// policy.conduit.io and Gateway API objects, written as in Kubernetes.
//
// Outbound routes are computed as in a cluster too: HTTPRoutes and
// GRPCRoutes whose parentRef is a service (GAMMA), with the annotations of
// the service (retry.conduit.io/*, timeout.conduit.io/request,
// balancer.conduit.io/*) and of the routes:
//
//	services:
//	- name: books
//	  namespace: demo
//	  port: 8080
//	  annotations: {timeout.conduit.io/request: 2s}
//	  endpoints: [...]
//	policies:
//	- apiVersion: gateway.networking.k8s.io/v1
//	  kind: GRPCRoute
//	  metadata: {name: books, namespace: demo, annotations: {retry.conduit.io/grpc: unavailable}}
//	  spec:
//	    parentRefs: [{group: "", kind: Service, name: books, port: 8080}]
//	    rules: [{backendRefs: [{name: books, port: 8080}]}]
type Registry struct {
	Services []Service `json:"services"`
	// Proxies list the meshed workloads' proxies, so the controller's tap
	// and stats can reach their admin ports (there are no pods to list),
	// and its inbound policy knows their pods.
	Proxies []Proxy `json:"proxies,omitempty"`
	// Namespaces hold the namespaces' labels and annotations (the
	// config.conduit.io/default-inbound-policy annotation); a namespace not
	// listed has none.
	Namespaces []Namespace `json:"namespaces,omitempty"`
	// Policies are Server, MeshTLSAuthentication, NetworkAuthentication
	// and AuthorizationPolicy objects (policy.conduit.io/v1beta1), and
	// HTTPRoute and GRPCRoute objects (gateway.networking.k8s.io/v1), each
	// with apiVersion, kind, metadata (name and namespace) and spec.
	Policies []map[string]any `json:"policies,omitempty"`
}

// Proxy is one meshed workload's proxy.
type Proxy struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// AdminAddress is the proxy's admin listener, ip:port.
	AdminAddress string `json:"adminAddress"`
	Identity     string `json:"identity,omitempty"`
	// Labels are the pod's: stats and tap group pods by them, and Servers
	// select pods by them.
	Labels map[string]string `json:"labels,omitempty"`
	// Ports are the pod's named ports, as its containers declare them: a
	// Server may name one instead of giving its number.
	Ports []Port `json:"ports,omitempty"`
}

// Port is a named port of a proxy's pod: the port its proxy's inbound
// listener forwards to (its --inbound-target).
type Port struct {
	Name string `json:"name"`
	Port uint16 `json:"port"`
}

// Namespace is a namespace's metadata.
type Namespace struct {
	Name        string            `json:"name"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Service is one port of a service.
type Service struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Port      uint16 `json:"port"`
	// Authorities are further host:port names for the service.
	Authorities []string `json:"authorities,omitempty"`
	// Labels are added to every endpoint's metrics, after namespace and service.
	Labels map[string]string `json:"labels,omitempty"`
	// Annotations are the service's, as a Kubernetes Service's: outbound
	// routing reads the retry.conduit.io/*, timeout.conduit.io/request and
	// balancer.conduit.io/* ones. A service listed once per port gives
	// them on any of its entries; entries that give the same annotation
	// must agree.
	Annotations map[string]string `json:"annotations,omitempty"`
	Endpoints   []Endpoint        `json:"endpoints"`
}

// Endpoint is one address serving the service.
type Endpoint struct {
	// Address is ip:port.
	Address string `json:"address"`
	// Identity is the SPIFFE ID of the proxy at Address; empty for an unmeshed endpoint.
	Identity string            `json:"identity,omitempty"`
	Weight   uint32            `json:"weight,omitempty"`
	Labels   map[string]string `json:"labels,omitempty"`
}
