package demo

import (
	"fmt"

	"sigs.k8s.io/yaml"
)

// The demo's inbound policy, written into its registry as a cluster would
// hold it: books's gRPC port is a Server that admits only web's identity
// (its ServiceAccount, through a MeshTLSAuthentication), so the traffic
// generator's calls straight to books are refused; its health service is
// a route of its own, open to the demo's kubelet-style probes, which come
// from outside the mesh. Every other port keeps the default policy
// (all-unauthenticated).
const (
	booksServer = "books-grpc"
	booksPolicy = "books-from-web"

	policiesYAML = `
- apiVersion: policy.conduit.io/v1beta1
  kind: Server
  metadata: {name: ` + booksServer + `, namespace: ` + Namespace + `}
  spec:
    podSelector: {matchLabels: {deployment: books}}
    port: grpc
    proxyProtocol: gRPC
- apiVersion: policy.conduit.io/v1beta1
  kind: MeshTLSAuthentication
  metadata: {name: web, namespace: ` + Namespace + `}
  spec:
    identityRefs: [{kind: ServiceAccount, name: web}]
- apiVersion: policy.conduit.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: ` + booksPolicy + `, namespace: ` + Namespace + `}
  spec:
    targetRef: {group: policy.conduit.io, kind: Server, name: ` + booksServer + `}
    requiredAuthenticationRefs: [{group: policy.conduit.io, kind: MeshTLSAuthentication, name: web}]
- apiVersion: gateway.networking.k8s.io/v1
  kind: GRPCRoute
  metadata: {name: books-api, namespace: ` + Namespace + `}
  spec:
    parentRefs: [{group: policy.conduit.io, kind: Server, name: ` + booksServer + `}]
    rules: [{matches: [{method: {service: demo.v1.Books}}]}]
- apiVersion: gateway.networking.k8s.io/v1
  kind: GRPCRoute
  metadata: {name: books-health, namespace: ` + Namespace + `}
  spec:
    parentRefs: [{group: policy.conduit.io, kind: Server, name: ` + booksServer + `}]
    rules: [{matches: [{method: {service: grpc.health.v1.Health}}]}]
- apiVersion: policy.conduit.io/v1beta1
  kind: AuthorizationPolicy
  metadata: {name: books-health-probes, namespace: ` + Namespace + `}
  spec:
    targetRef: {group: gateway.networking.k8s.io, kind: GRPCRoute, name: books-health}
    requiredAuthenticationRefs: []
`
)

// DirectShare is the share of the traffic generator's requests that `conduit
// demo` sends straight to books, bypassing web: the edge its policy denies.
const DirectShare = 0.1

// policies are the registry's policy objects.
func policies() ([]map[string]any, error) {
	var out []map[string]any
	if err := yaml.Unmarshal([]byte(policiesYAML), &out); err != nil {
		return nil, fmt.Errorf("the demo's policies: %w", err)
	}
	return out, nil
}

// appPort names each role's port, as its pod would declare it.
func appPort(role string) string {
	switch role {
	case RoleBooks, RoleAuthors:
		return "grpc"
	}
	return "http"
}

// deniedLine says which of the demo's calls the policy refuses, and why.
func deniedLine(share float64) string {
	return fmt.Sprintf("policy: books admits only web's identity (server/%s), so traffic's direct calls to books (%.0f%% of its requests) get 403.",
		booksServer, share*100)
}
