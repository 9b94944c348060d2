// Package authz is the proxy's side of inbound authorization: it decodes the
// per-port policies the controller streams (conduit.policy.v1
// InboundPolicies.WatchPort, pkg/api/policy/v1/policy.proto) into immutable,
// compiled Servers, keeps the current one of every port in a Store, and
// decides whether a connection or a request may pass.
//
// # Model
//
// A port's policy is a Server: the resource that selects the port (a Server
// object, or the default policy when none does), the protocol to expect, the
// port's authorizations and its HTTP routes. An authorization admits a client
// when its networks contain the client's address (no networks: any address)
// and its authentication matches: unauthenticated admits every client;
// mesh TLS admits a client whose verified mesh identity equals one of its
// identities or starts with one of its prefixes (the empty prefix: any
// authenticated client). A connection to an opaque port passes when one of
// the port's authorizations admits it (AllowConn). An HTTP request first
// picks its route: with no routes every request takes the port's default
// route; otherwise the most specific matching route by Gateway API
// precedence, and a request that matches none is denied with 404. The
// request then passes when one of the port's authorizations or one of the
// route's admits the client (AllowRequest); otherwise it is denied with 403
// and a short reason for the response header. Every Decision names the
// server, authorization and route it came from, for the
// *_authz_allow_total/*_authz_deny_total metrics and tap.
//
// Before the controller's first policy for a port arrives, the Store answers
// with a pending policy built from the cluster's default (Pending): the
// all-unauthenticated default admits, any other fails closed. Once a port
// has a policy it keeps it while the controller is unreachable.
//
// # Hot path
//
// Decisions run on every inbound request, so everything that can be is done
// once, when a policy is decoded: networks are parsed into netip.Prefix,
// regular expressions are compiled (anchored to the whole value), header
// names are lowered and canonicalized, a port's exact identities are indexed
// when there are many, and every route match is sorted by precedence so that
// the first match found is the one that wins. A decision then allocates
// nothing unless it denies (the reason is formatted then), and a Request
// wraps either the HTTP/1.1 fast path's byte slices (FieldsRequest) or a
// *http.Request (HTTPRequest) without copying either. Store.Lookup is one
// atomic load and one map read.
//
// Route matching (the HttpMatch decoder, Gateway API precedence and the
// Request view) is pkg/proxy/httpmatch's, shared with outbound routing
// (pkg/proxy/route); Field, Request, FieldsRequest and HTTPRequest here
// are its.
//
// The package links nothing but the standard library, protowire, grpcwire
// and httpmatch: the proxy decodes protobuf by hand and never links grpc-go
// or generated code (cmd/conduit-proxy/deps_test.go; imports_test.go checks
// this package on its own).
package authz
