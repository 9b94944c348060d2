// Package tap is the proxy side of `conduit tap`: the Server is the proxy's
// Observer (pkg/proxy's one seam, which both HTTP paths feed), and streams matching
// requests' events to subscribers over a gRPC Observe stream served on the
// admin port (conduit.tap.v1.Tap).
//
// Tapping never slows traffic: with no subscriber, the proxy asks Active
// (one atomic load) and describes nothing; with subscribers, events go into a bounded buffer per subscriber
// and are dropped (and counted in tap_events_dropped_total) when it is full.
//
// Like the rest of the proxy, it speaks protobuf with protowire rather than
// the generated code of pkg/api, which would cost megabytes of resident
// memory; the tests check the encoding against pkg/api. Its gRPC framing is
// pkg/proxy/grpcwire's server half.
package tap
