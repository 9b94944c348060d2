package policy

import (
	"testing"

	"k8s.io/apimachinery/pkg/runtime/schema"
)

// The pod most tests ask about: port 8080 ("http") has HTTP probes, 9000
// ("admin") has none.
const (
	shopNS = `
apiVersion: v1
kind: Namespace
metadata:
  name: shop
`
	webPod = `
apiVersion: v1
kind: Pod
metadata:
  name: web-1
  namespace: shop
  labels: {app: web}
spec:
  serviceAccountName: web
  containers:
  - name: app
    image: web
    ports:
    - {name: http, containerPort: 8080}
    - {name: admin, containerPort: 9000}
    - {name: dns, containerPort: 5353, protocol: UDP}
    livenessProbe: {httpGet: {path: /live, port: 8080}}
    readinessProbe: {httpGet: {path: "/ready?full=1", port: http}}
    startupProbe: {httpGet: {path: /live, port: http}}
  - name: conduit-proxy
    image: proxy
    ports:
    - {name: admin, containerPort: 4191}
    readinessProbe: {httpGet: {path: /ready, port: 4191}}
`
	// The routes of port 8080 when nothing else gives it routes.
	probeRoutesText = `
http_routes: {
  ref: {kind: "probe" name: "probe"}
  matches: {path: {exact: "/live"} method: "GET"}
  matches: {path: {exact: "/ready"} method: "GET"}
  authorizations: {
    ref: {kind: "default" name: "probe"}
    networks: {cidr: "0.0.0.0/0"} networks: {cidr: "::/0"}
    unauthenticated: {}
  }
}
http_routes: {ref: {kind: "default" name: "default"}}
`
	anyNetworks = `networks: {cidr: "0.0.0.0/0"} networks: {cidr: "::/0"}`
)

// TestDefaultPolicies: each default policy's authorizations, and the
// precedence pod annotation > namespace annotation > cluster default.
func TestDefaultPolicies(t *testing.T) {
	clusterNets := `networks: {cidr: "10.0.0.0/8"} networks: {cidr: "100.64.0.0/10"} networks: {cidr: "172.16.0.0/12"} networks: {cidr: "192.168.0.0/16"} networks: {cidr: "fd00::/8"}`
	for _, tc := range []struct {
		name             string
		cluster          DefaultPolicy
		nsAnnot, podAnno string // "" for none
		want             string
	}{
		{"all-unauthenticated", AllUnauthenticated, "", "", `
			server: {kind: "default" name: "all-unauthenticated"}
			authorizations: {ref: {kind: "default" name: "all-unauthenticated"} ` + anyNetworks + ` unauthenticated: {}}`},
		{"all-authenticated", AllAuthenticated, "", "", `
			server: {kind: "default" name: "all-authenticated"}
			authorizations: {ref: {kind: "default" name: "all-authenticated"} ` + anyNetworks + ` mesh_tls: {prefixes: ""}}
			fail_closed: true`},
		{"cluster-authenticated", ClusterAuthenticated, "", "", `
			server: {kind: "default" name: "cluster-authenticated"}
			authorizations: {ref: {kind: "default" name: "cluster-authenticated"} ` + clusterNets + ` mesh_tls: {prefixes: ""}}
			fail_closed: true`},
		{"cluster-unauthenticated", ClusterUnauthenticated, "", "", `
			server: {kind: "default" name: "cluster-unauthenticated"}
			authorizations: {ref: {kind: "default" name: "cluster-unauthenticated"} ` + clusterNets + ` unauthenticated: {}}
			fail_closed: true`},
		{"deny", Deny, "", "", `server: {kind: "default" name: "deny"} fail_closed: true`},
		{"namespace over cluster", AllUnauthenticated, "deny", "", `server: {kind: "default" name: "deny"} fail_closed: true`},
		{"pod over namespace", Deny, "deny", "all-unauthenticated", `
			server: {kind: "default" name: "all-unauthenticated"}
			authorizations: {ref: {kind: "default" name: "all-unauthenticated"} ` + anyNetworks + ` unauthenticated: {}}`},
		{"pod over cluster", AllUnauthenticated, "", "deny", `server: {kind: "default" name: "deny"} fail_closed: true`},
		{"a bad pod annotation falls back to the namespace's", AllUnauthenticated, "deny", "allow-all", `server: {kind: "default" name: "deny"} fail_closed: true`},
		{"a bad namespace annotation falls back to the cluster's", Deny, "nope", "", `server: {kind: "default" name: "deny"} fail_closed: true`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, pod := shopNS, webPod
			if tc.nsAnnot != "" {
				ns += "  annotations: {config.conduit.io/default-inbound-policy: " + tc.nsAnnot + "}\n"
			}
			if tc.podAnno != "" {
				pod = annotate(pod, "config.conduit.io/default-inbound-policy: "+tc.podAnno)
			}
			c := testCluster()
			c.DefaultPolicy = tc.cluster
			f := startIndex(t, c, nil, ns, pod)
			f.checkInbound(t, "shop", "web-1", 9000, tc.want) // no probes on 9000: no routes
		})
	}
}

// annotate adds an annotations line to a pod's metadata.
func annotate(pod, annotation string) string {
	const at = "  labels: {app: web}\n"
	return replaceOnce(pod, at, at+"  annotations: {"+annotation+"}\n")
}

func replaceOnce(s, old, repl string) string {
	for i := 0; i+len(old) <= len(s); i++ {
		if s[i:i+len(old)] == old {
			return s[:i] + repl + s[i+len(old):]
		}
	}
	panic("replaceOnce: " + old + " not found")
}

// TestProbeRoutes: under any default policy, and on a Server without
// routes, the kubelet's probes of the port are admitted from anywhere
// while every other request keeps the port's authorizations.
func TestProbeRoutes(t *testing.T) {
	f := startIndex(t, testCluster(), nil, shopNS, webPod, `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: admin, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  port: admin
`)
	// Default policy on 8080: the probe paths (the query dropped, each
	// once; the proxy container's own probe is on another port).
	f.checkInbound(t, "shop", "web-1", 8080, `server: {kind: "default" name: "deny"} fail_closed: true`+probeRoutesText)
	// A Server without probes: no routes at all.
	f.checkInbound(t, "shop", "web-1", 9000, `server: {kind: "server" name: "admin" namespace: "shop"} fail_closed: true`)
	// A Server on 8080 without routes: the probe routes too.
	f.apply(t, `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: http, namespace: shop}
spec:
  podSelector: {}
  port: 8080
  proxyProtocol: HTTP/1
`)
	f.inboundEventually(t, "shop", "web-1", 8080, `server: {kind: "server" name: "http" namespace: "shop"} protocol: HTTP1 fail_closed: true`+probeRoutesText)
}

const (
	serverHTTP = `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-http, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
  proxyProtocol: gRPC
`
	serverAdmin = `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-admin, namespace: shop}
spec:
  podSelector:
    matchExpressions: [{key: app, operator: In, values: [web, api]}]
  port: 9000
  proxyProtocol: opaque
`
)

// TestServerSelection: numbers and names, selectors, and the oldest of
// two Servers for the same port.
func TestServerSelection(t *testing.T) {
	f := startIndex(t, testCluster(), nil, shopNS, webPod, serverHTTP, serverAdmin, `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: other-app, namespace: shop}
spec:
  podSelector: {matchLabels: {app: api}}
  port: 7000
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: no-such-port-name, namespace: shop}
spec:
  podSelector: {}
  port: grpc
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: udp-port-name, namespace: shop}
spec:
  podSelector: {}
  port: dns
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: elsewhere, namespace: other}
spec:
  podSelector: {}
  port: 7000
`)
	f.checkInbound(t, "shop", "web-1", 8080, `server: {kind: "server" name: "web-http" namespace: "shop"} protocol: GRPC fail_closed: true`+probeRoutesText)
	f.checkInbound(t, "shop", "web-1", 9000, `server: {kind: "server" name: "web-admin" namespace: "shop"} protocol: OPAQUE fail_closed: true`)
	for _, port := range []uint32{7000, 5353, 1} {
		f.checkInbound(t, "shop", "web-1", port, `server: {kind: "default" name: "deny"} fail_closed: true`)
	}

	// A second Server for 8080, newer but first by name: the older keeps it.
	f.apply(t, `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: a-newer, namespace: shop, creationTimestamp: "2026-06-01T00:00:00Z"}
spec:
  podSelector: {}
  port: 8080
`)
	f.seen(t, ServersResource, "shop", "a-newer")
	f.checkInbound(t, "shop", "web-1", 8080, `server: {kind: "server" name: "web-http" namespace: "shop"} protocol: GRPC fail_closed: true`+probeRoutesText)
	// ...and an older one takes the port.
	f.apply(t, `
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: z-older, namespace: shop, creationTimestamp: "2025-06-01T00:00:00Z"}
spec:
  podSelector: {}
  port: 8080
`)
	f.inboundEventually(t, "shop", "web-1", 8080, `server: {kind: "server" name: "z-older" namespace: "shop"} fail_closed: true`+probeRoutesText)

	// The pod's labels change: web-admin no longer selects it.
	f.apply(t, replaceOnce(webPod, "app: web", "app: db"))
	f.inboundEventually(t, "shop", "web-1", 9000, `server: {kind: "default" name: "deny"} fail_closed: true`)

	if _, err := f.index.Inbound("shop", "web-2", 8080); err != ErrPodNotFound {
		t.Errorf("unknown pod: err = %v, want ErrPodNotFound", err)
	}
}

// TestAuthorizations: policies targeting the Server or the namespace,
// each required authentication turned into networks and identities.
func TestAuthorizations(t *testing.T) {
	c := testCluster()
	c.TrustDomain = "mesh.example"
	f := startIndex(t, c, nil, shopNS, webPod, serverAdmin, `
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: a-anyone, namespace: shop}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-admin}
  requiredAuthenticationRefs: []
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: b-namespace, namespace: shop}
spec:
  targetRef: {kind: Namespace, name: shop}
  requiredAuthenticationRefs:
  - {kind: ServiceAccount, name: traffic}
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: c-other-namespace-sa, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs:
  - {kind: ServiceAccount, name: prometheus, namespace: monitoring}
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: d-mtls-and-network, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs:
  - {group: policy.conduit.io, kind: NetworkAuthentication, name: nodes}
  - {group: policy.conduit.io, kind: MeshTLSAuthentication, name: refs}
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: e-wildcard-elsewhere, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs:
  - {kind: MeshTLSAuthentication, name: everyone, namespace: ops}
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: f-identities, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs:
  - {kind: MeshTLSAuthentication, name: ids}
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: x-other-server, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-http}
  requiredAuthenticationRefs: []
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: x-other-namespace-name, namespace: shop}
spec:
  targetRef: {kind: Namespace, name: default}
  requiredAuthenticationRefs: []
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: x-missing-authentication, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs:
  - {kind: MeshTLSAuthentication, name: gone}
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: x-two-networks, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs:
  - {kind: NetworkAuthentication, name: nodes}
  - {kind: NetworkAuthentication, name: nodes}
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: x-two-identities, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs:
  - {kind: ServiceAccount, name: a}
  - {kind: MeshTLSAuthentication, name: ids}
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: x-in-other-namespace, namespace: ops}
spec:
  targetRef: {kind: Server, name: web-admin}
  requiredAuthenticationRefs: []
---
apiVersion: policy.conduit.io/v1beta1
kind: NetworkAuthentication
metadata: {name: nodes, namespace: shop}
spec:
  networks:
  - {cidr: 10.1.2.3/16, except: [10.1.9.0/24]}
  - {cidr: "fd00::/8"}
---
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: refs, namespace: shop}
spec:
  identityRefs:
  - {kind: ServiceAccount, name: web}
  - {kind: ServiceAccount, name: "*", namespace: batch}
  - {kind: Namespace, name: ops}
---
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: everyone, namespace: ops}
spec:
  identityRefs:
  - {kind: Namespace, name: "*"}
  - {kind: ServiceAccount, name: x}
---
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: ids, namespace: shop}
spec:
  identities: ["spiffe://mesh.example/ns/b/sa/b", "spiffe://mesh.example/ns/a/sa/a", "spiffe://mesh.example/ns/a/sa/a"]
`)
	f.checkInbound(t, "shop", "web-1", 9000, `
server: {kind: "server" name: "web-admin" namespace: "shop"}
protocol: OPAQUE
authorizations: {ref: {kind: "authorizationpolicy" name: "a-anyone" namespace: "shop"} `+anyNetworks+` unauthenticated: {}}
authorizations: {ref: {kind: "authorizationpolicy" name: "b-namespace" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {identities: "spiffe://mesh.example/ns/shop/sa/traffic"}}
authorizations: {ref: {kind: "authorizationpolicy" name: "c-other-namespace-sa" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {identities: "spiffe://mesh.example/ns/monitoring/sa/prometheus"}}
authorizations: {ref: {kind: "authorizationpolicy" name: "d-mtls-and-network" namespace: "shop"}
  networks: {cidr: "10.1.0.0/16" except: "10.1.9.0/24"} networks: {cidr: "fd00::/8"}
  mesh_tls: {identities: "spiffe://mesh.example/ns/shop/sa/web" prefixes: "spiffe://mesh.example/ns/batch/sa/" prefixes: "spiffe://mesh.example/ns/ops/sa/"}}
authorizations: {ref: {kind: "authorizationpolicy" name: "e-wildcard-elsewhere" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {prefixes: ""}}
authorizations: {ref: {kind: "authorizationpolicy" name: "f-identities" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {identities: "spiffe://mesh.example/ns/a/sa/a" identities: "spiffe://mesh.example/ns/b/sa/b"}}
fail_closed: true`)

	// identities: ["*"] admits every authenticated client; the change
	// reaches the policies that require it.
	f.apply(t, `
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: ids, namespace: shop}
spec:
  identities: ["*"]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: a-anyone, namespace: shop}
spec:
  targetRef: {kind: Server, name: nobody}
  requiredAuthenticationRefs: []
`)
	f.inboundEventually(t, "shop", "web-1", 9000, `
server: {kind: "server" name: "web-admin" namespace: "shop"}
protocol: OPAQUE
authorizations: {ref: {kind: "authorizationpolicy" name: "b-namespace" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {identities: "spiffe://mesh.example/ns/shop/sa/traffic"}}
authorizations: {ref: {kind: "authorizationpolicy" name: "c-other-namespace-sa" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {identities: "spiffe://mesh.example/ns/monitoring/sa/prometheus"}}
authorizations: {ref: {kind: "authorizationpolicy" name: "d-mtls-and-network" namespace: "shop"}
  networks: {cidr: "10.1.0.0/16" except: "10.1.9.0/24"} networks: {cidr: "fd00::/8"}
  mesh_tls: {identities: "spiffe://mesh.example/ns/shop/sa/web" prefixes: "spiffe://mesh.example/ns/batch/sa/" prefixes: "spiffe://mesh.example/ns/ops/sa/"}}
authorizations: {ref: {kind: "authorizationpolicy" name: "e-wildcard-elsewhere" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {prefixes: ""}}
authorizations: {ref: {kind: "authorizationpolicy" name: "f-identities" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {prefixes: ""}}
fail_closed: true`)

	// Policies never apply to default-policy ports.
	f.checkInbound(t, "shop", "web-1", 7000, `server: {kind: "default" name: "deny"} fail_closed: true`)
}

// TestRoutes: HTTPRoutes and GRPCRoutes whose parentRef is the Server
// become the port's routes, with the policies that target each, and the
// probe routes are gone (the routes say what is served).
func TestRoutes(t *testing.T) {
	f := startIndex(t, testCluster(), nil, shopNS, webPod, serverHTTP, `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop, creationTimestamp: "2026-01-01T00:00:00Z"}
spec:
  parentRefs:
  - {group: policy.conduit.io, kind: Server, name: web-http}
  rules:
  - matches:
    - path: {type: Exact, value: /api/v1/books}
      method: POST
      headers: [{name: X-Tenant, value: shop}, {type: RegularExpression, name: X-Trace, value: "^[0-9a-f]+$"}]
    - path: {type: RegularExpression, value: "/api/v[0-9]+/.*"}
      queryParams: [{name: q, value: x}, {type: RegularExpression, name: page, value: "[0-9]+"}]
  - matches:
    - path: {value: /api}
    - headers: [{name: X-Only, value: "1"}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: everything, namespace: shop, creationTimestamp: "2026-02-01T00:00:00Z"}
spec:
  parentRefs:
  - {group: policy.conduit.io, kind: Server, name: web-http, namespace: shop}
  rules:
  - {}
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: books, namespace: shop, creationTimestamp: "2026-03-01T00:00:00Z"}
spec:
  parentRefs:
  - {group: policy.conduit.io, kind: Server, name: web-http}
  rules:
  - matches:
    - method: {service: shop.Books, method: Get}
    - method: {service: shop.Admin}
    - method: {method: Health}
    - method: {type: RegularExpression, service: "shop\\..*", method: "List|Watch"}
      headers: [{name: x-user, value: alice}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: bad-regex, namespace: shop}
spec:
  parentRefs: [{group: policy.conduit.io, kind: Server, name: web-http}]
  rules: [{matches: [{path: {type: RegularExpression, value: "(unclosed"}}]}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: of-a-service, namespace: shop}
spec:
  parentRefs: [{kind: Service, name: web}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: of-another-server, namespace: shop}
spec:
  parentRefs: [{group: policy.conduit.io, kind: Server, name: web-admin}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: across-namespaces, namespace: shop}
spec:
  parentRefs: [{group: policy.conduit.io, kind: Server, name: web-http, namespace: other}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: api-readers, namespace: shop}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: api}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: reader}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: books-clients, namespace: shop}
spec:
  targetRef: {kind: GRPCRoute, name: books}
  requiredAuthenticationRefs: []
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: server-wide, namespace: shop}
spec:
  targetRef: {kind: Server, name: web-http}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: admin}]
`)
	f.checkInbound(t, "shop", "web-1", 8080, `
server: {kind: "server" name: "web-http" namespace: "shop"}
protocol: GRPC
authorizations: {ref: {kind: "authorizationpolicy" name: "server-wide" namespace: "shop"} `+anyNetworks+`
  mesh_tls: {identities: "spiffe://cluster.local/ns/shop/sa/admin"}}
http_routes: {
  ref: {kind: "httproute" name: "api" namespace: "shop"}
  matches: {path: {exact: "/api/v1/books"} method: "POST"
    headers: {name: "X-Tenant" exact: "shop"} headers: {name: "X-Trace" regex: "^[0-9a-f]+$"}}
  matches: {path: {regex: "/api/v[0-9]+/.*"}
    query_params: {name: "q" exact: "x"} query_params: {name: "page" regex: "[0-9]+"}}
  matches: {path: {prefix: "/api"}}
  matches: {path: {prefix: "/"} headers: {name: "X-Only" exact: "1"}}
  authorizations: {ref: {kind: "authorizationpolicy" name: "api-readers" namespace: "shop"} `+anyNetworks+`
    mesh_tls: {identities: "spiffe://cluster.local/ns/shop/sa/reader"}}
}
http_routes: {ref: {kind: "httproute" name: "everything" namespace: "shop"}}
http_routes: {
  ref: {kind: "grpcroute" name: "books" namespace: "shop"}
  matches: {path: {exact: "/shop.Books/Get"}}
  matches: {path: {prefix: "/shop.Admin/"}}
  matches: {path: {regex: "/[^/]+/Health"}}
  matches: {path: {regex: "/(?:shop\\..*)/(?:List|Watch)"} headers: {name: "x-user" exact: "alice"}}
  authorizations: {ref: {kind: "authorizationpolicy" name: "books-clients" namespace: "shop"} `+anyNetworks+` unauthenticated: {}}
}
fail_closed: true`)
}

// TestWithoutGatewayAPI: without the Gateway API's CRDs there are no
// routes (and no crash); without the policy CRDs, every port gets the
// default policy; CRDs installed later are picked up.
func TestWithoutGatewayAPI(t *testing.T) {
	route := `
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: api, namespace: shop}
spec:
  parentRefs: [{group: policy.conduit.io, kind: Server, name: web-http}]
`
	policyOnly := allResources[:4]
	f := startIndex(t, testCluster(), policyOnly, shopNS, webPod, serverHTTP, route)
	f.checkInbound(t, "shop", "web-1", 8080, `server: {kind: "server" name: "web-http" namespace: "shop"} protocol: GRPC fail_closed: true`+probeRoutesText)

	f = startIndex(t, testCluster(), []schema.GroupVersionResource{}, shopNS, webPod, serverHTTP, route)
	f.checkInbound(t, "shop", "web-1", 8080, `server: {kind: "default" name: "deny"} fail_closed: true`+probeRoutesText)

	// The CRDs are installed: the next discovery watches them.
	f.served.set(allResources...)
	f.inboundEventually(t, "shop", "web-1", 8080, `server: {kind: "server" name: "web-http" namespace: "shop"} protocol: GRPC fail_closed: true
http_routes: {ref: {kind: "httproute" name: "api" namespace: "shop"}}`)
}

// TestGRPCProbeRoutes: the kubelet's gRPC probes (a health check POST over
// h2c) get the probe route too, so a strict default does not fail them.
func TestGRPCProbeRoutes(t *testing.T) {
	f := startIndex(t, testCluster(), nil, shopNS, `
apiVersion: v1
kind: Pod
metadata: {name: books-1, namespace: shop, labels: {app: books}}
spec:
  containers:
  - name: app
    image: books
    ports: [{name: grpc, containerPort: 9090}]
    livenessProbe: {grpc: {port: 9090}}
    readinessProbe: {grpc: {port: 9090, service: books}}
    startupProbe: {httpGet: {path: /started, port: grpc}}
`)
	f.checkInbound(t, "shop", "books-1", 9090, `server: {kind: "default" name: "deny"} fail_closed: true
http_routes: {
  ref: {kind: "probe" name: "probe"}
  matches: {path: {exact: "/grpc.health.v1.Health/Check"} method: "POST"}
  matches: {path: {exact: "/started"} method: "GET"}
  authorizations: {
    ref: {kind: "default" name: "probe"}
    networks: {cidr: "0.0.0.0/0"} networks: {cidr: "::/0"}
    unauthenticated: {}
  }
}
http_routes: {ref: {kind: "default" name: "default"}}`)
}
