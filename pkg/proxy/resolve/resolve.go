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

// Prompter is a Resolver whose first answer about an authority may take a
// while (destination.Resolver waits up to its InitialWait for the
// controller). Prompt reports whether Endpoints returns at once for
// authority: false while that first answer is awaited, or before the first
// call. A caller that serves other work on the same goroutine (an HTTP/2
// connection's reader) resolves an authority that is not prompt elsewhere.
type Prompter interface {
	Prompt(authority string) bool
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
