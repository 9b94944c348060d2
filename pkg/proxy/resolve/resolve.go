// Package resolve is the seam between the proxy's outbound side and service
// discovery: a static table from flags today, the controller's Destination
// stream (pkg/proxy/destination) when a controller is configured.
package resolve

import (
	"context"
	"errors"
)

// ErrNotFound means the resolver knows nothing about an authority. The
// outbound proxy then falls back to the original destination (transparent
// mode) or answers 502 with a conduit-proxy-error header (explicit mode).
var ErrNotFound = errors.New("authority not found")

// Endpoint is one address that serves an authority.
type Endpoint struct {
	// Addr is host:port to dial.
	Addr string
	// Identity is the peer's expected SPIFFE ID. Empty means the peer is not
	// meshed and is reached in plaintext.
	Identity string
	// Weight is the relative weight for balancing; 0 means 1.
	Weight uint32
	// Labels are copied onto outbound metrics as dst_<key> (namespace,
	// deployment, pod, service, ...).
	Labels map[string]string
}

// Resolver returns the current endpoints of an authority ("host:port").
//
// Implementations keep their own caches and watches: Endpoints is called on
// every new outbound connection or request and must be cheap after the first
// call for an authority. When discovery becomes unreachable, implementations
// keep returning the last known endpoints.
type Resolver interface {
	Endpoints(ctx context.Context, authority string) ([]Endpoint, error)
}

// ErrPending means a resolver's first answer about an authority is not in
// yet: Endpoints would wait for it.
var ErrPending = errors.New("first answer pending")

// NowResolver is a Resolver whose first answer about an authority may take
// a while (destination.Resolver waits up to its InitialWait for the
// controller). EndpointsNow is Endpoints without that wait: ErrPending
// while the first answer is awaited, else what Endpoints returns. A caller
// that serves other work on the same goroutine (an HTTP/2 connection's
// reader) resolves with it, and resolves a pending authority elsewhere.
type NowResolver interface {
	EndpointsNow(authority string) ([]Endpoint, error)
}

// Awaiter is a Resolver whose endpoint sets change (service discovery): an
// authority it knows without a ready endpoint may gain one, as when a
// Deployment rolls out behind a new Service. The proxy waits for it a
// little (its fail-fast timeout) rather than failing at once.
type Awaiter interface {
	// AwaitEndpoints returns authority's endpoints as soon as it has at
	// least one; when ctx ends first, the set as it is then (empty) and no
	// error. Errors are Endpoints'.
	AwaitEndpoints(ctx context.Context, authority string) ([]Endpoint, error)
}
