package demo

import (
	"fmt"
	"time"

	"sigs.k8s.io/yaml"
)

// The demo's outbound routes (Gateway API GRPCRoutes whose parent is a
// Service, as a cluster would hold them; the controller serves them to the
// proxies as in a cluster):
//   - authors-split sends web's calls to authors 90/10 to the stable
//     authors-v1 and the canary authors-v2;
//   - books retries UNAVAILABLE (books's injected failures) twice and
//     times out a lookup after booksTimeout (books is slow on a share of
//     them, SlowDelay each).
const (
	splitRoute    = "authors-split"
	booksRoute    = "books"
	stableAuthors = "v1"
	canaryWeight  = 10
	booksTimeout  = 2 * time.Second
	booksRetries  = 2
)

// SlowDelay is how long books takes over a slow lookup: beyond its route's
// timeout, within web's own deadline (5 s), so that without the route
// (before a proxy has it) a slow lookup is only slow.
const SlowDelay = 3 * time.Second

// DefaultSlowRate is the share of books lookups `conduit demo` makes slow:
// each is a timeout web sees, so it bounds web's success rate for books
// (99.8 % with retries: the injected failures are retried away).
const DefaultSlowRate = 0.002

var routesYAML = fmt.Sprintf(`
- apiVersion: gateway.networking.k8s.io/v1
  kind: GRPCRoute
  metadata: {name: %[1]s, namespace: %[3]s}
  spec:
    parentRefs: [{group: "", kind: Service, name: authors, port: %[4]d}]
    rules:
    - backendRefs:
      - {name: authors-v1, port: %[4]d, weight: %[5]d}
      - {name: authors-v2, port: %[4]d, weight: %[6]d}
- apiVersion: gateway.networking.k8s.io/v1
  kind: GRPCRoute
  metadata:
    name: %[2]s
    namespace: %[3]s
    annotations:
      retry.conduit.io/grpc: unavailable
      retry.conduit.io/limit: "%[7]d"
      timeout.conduit.io/request: %[8]s
  spec:
    parentRefs: [{group: "", kind: Service, name: books, port: %[4]d}]
    rules:
    - matches: [{method: {service: demo.v1.Books}}]
      backendRefs: [{name: books, port: %[4]d}]
`, splitRoute, booksRoute, Namespace, servicePort, 100-canaryWeight, canaryWeight, booksRetries, booksTimeout)

// outboundRoutes are the registry's route objects.
func outboundRoutes() ([]map[string]any, error) {
	var out []map[string]any
	if err := yaml.Unmarshal([]byte(routesYAML), &out); err != nil {
		return nil, fmt.Errorf("the demo's routes: %w", err)
	}
	return out, nil
}

// routeLines say what the routes do.
func routeLines(failureRate, slowRate float64) []string {
	return []string{
		fmt.Sprintf("grpcroute/%s: web's calls to authors go %d%% to authors-v1, %d%% to the canary authors-v2.",
			splitRoute, 100-canaryWeight, canaryWeight),
		fmt.Sprintf("grpcroute/%s: books's UNAVAILABLE failures (%s of lookups) are retried up to %d times; a lookup times out after %s (books is slow on %s of them).",
			booksRoute, percent(failureRate), booksRetries, booksTimeout, percent(slowRate)),
	}
}

// percent formats a share as a percentage, with a decimal below 1 %.
func percent(share float64) string {
	if share > 0 && share < 0.01 {
		return fmt.Sprintf("%.1f%%", share*100)
	}
	return fmt.Sprintf("%.0f%%", share*100)
}
