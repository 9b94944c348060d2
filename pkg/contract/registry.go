package contract

// Registry is the local registry file (YAML or JSON) that `conduit demo`
// writes and the controller's local discovery backend and stats read. An
// example:
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
//
// A service answers to name.namespace.svc.cluster.local:port, name.namespace.svc:port,
// name.namespace:port, name:port from a proxy in the same namespace, every
// extra authority listed, and each endpoint's own address.
type Registry struct {
	Services []Service `json:"services"`
	// Proxies list the meshed workloads' proxies, so the controller's tap
	// and stats can reach their admin ports (there are no pods to list).
	Proxies []Proxy `json:"proxies,omitempty"`
}

// Proxy is one meshed workload's proxy.
type Proxy struct {
	Namespace string `json:"namespace"`
	Pod       string `json:"pod"`
	// AdminAddress is the proxy's admin listener, ip:port.
	AdminAddress string            `json:"adminAddress"`
	Identity     string            `json:"identity,omitempty"`
	Labels       map[string]string `json:"labels,omitempty"`
}

// Service is one port of a service.
type Service struct {
	Name      string `json:"name"`
	Namespace string `json:"namespace"`
	Port      uint16 `json:"port"`
	// Authorities are further host:port names for the service.
	Authorities []string `json:"authorities,omitempty"`
	// Labels are added to every endpoint's metrics, after namespace and service.
	Labels    map[string]string `json:"labels,omitempty"`
	Endpoints []Endpoint        `json:"endpoints"`
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
