// Package route is the proxy's outbound route table: the Gateway API
// HTTPRoutes and GRPCRoutes attached to a Service (GAMMA), as the
// controller translates them (conduit.destination.v1.OutboundRoutes, from
// Destination.GetRoutes; the comments in
// pkg/api/destination/v1/destination.proto are the spec). It decodes a
// Service's routes into an immutable Table (Decode), keeps the current
// table of every authority in a Store, picks a request's rule with the
// Gateway API's precedence, applies the rule's filters to either header
// representation, and draws its backend by weight.
//
// # How a request path uses it
//
// For an outbound HTTP request to authority (its Host or :authority), on
// any of the proxy's three paths:
//
//  1. Route. table := store.Lookup(ctx, authority); req is the request's
//     httpmatch.Request (httpmatch.FieldsRequest on the fast paths,
//     httpmatch.HTTPRequest on net/http's); rule, match :=
//     table.Route(&req). A nil rule (also for a nil table: no routes, or
//     none yet) means the request goes to authority as it does without
//     routes, under table.ServicePolicy(), without route labels.
//     Otherwise rule.Route's Kind and Name label its metrics (route_kind,
//     route_name).
//  2. Filters. If rule.Redirect() is not nil, answer it — status
//     Redirect.Status, Location Redirect.Location(&req, match, scheme,
//     authority), rule.ModifyResponse on that response — and stop.
//     Otherwise, when rule.ModifiesRequest(), rule.ModifyRequest the
//     request's header through its adapter: HTTPHeader(r.Header) on
//     net/http's path; on the HTTP/1.1 fast path a Fields of the
//     head's end-to-end fields (what fieldsOf lists), which are then
//     written instead of the h1Headers; on the HTTP/2 fast path an
//     HPACKFields of the decoded header list, re-encoded for the
//     upstream. Match before modifying: req views the header being
//     edited.
//  3. PickBackend. b := rule.PickBackend(nil). If b.Invalid is not "",
//     answer 500 with b.Invalid as the proxy's error reason. Otherwise
//     b.ModifyRequest the header too (a backend's filters follow the
//     rule's).
//  4. Resolve b.Authority (the authority itself for a rule without
//     backends) with the destination resolver and balance over its
//     endpoints, as an authority without routes is.
//  5. Policy. rule.Policy (already merged with the Service's): the
//     RequestTimeout bounds the whole exchange, retries included (504, or
//     gRPC DEADLINE_EXCEEDED); BackendRequestTimeout (or Retry.Timeout)
//     each attempt; Retry says which statuses and gRPC codes are retried,
//     how many times. On the response, rule.ModifyResponse then
//     b.ModifyResponse.
//
// Table.Route allocates nothing; Store.Lookup is two atomic loads and a
// map read once the authority is watched. The package links nothing but
// the standard library, protowire, grpcwire, httpmatch and x/net's hpack
// (imports_test.go).
package route
