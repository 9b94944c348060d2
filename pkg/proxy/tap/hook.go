// Package tap is the proxy side of `conduit tap`: the proxy's request paths
// report each request to an Observer, and the Server streams matching
// requests' events to subscribers over a gRPC Observe stream served on the
// admin port (conduit.tap.v1.Tap).
//
// Tapping never slows traffic: with no subscriber, Request costs one atomic
// load; with subscribers, events go into a bounded buffer per subscriber
// and are dropped (and counted in tap_events_dropped_total) when it is full.
//
// Like the rest of the proxy, it speaks protobuf with protowire rather than
// the generated code of pkg/api, which would cost megabytes of resident
// memory; the tests check the encoding against pkg/api.
package tap

import (
	"net/http"
	"net/netip"

	"github.com/conduitmesh/conduit/pkg/proxy"
)

// RequestInfo describes a request whose headers the proxy has read.
type RequestInfo struct {
	Direction string // "inbound" or "outbound"
	Method    string
	Scheme    string
	Authority string
	Path      string
	// Header is read during the call only; tap copies what it keeps.
	Header http.Header
	// Fields, when set, replace Header: the fields as the proxy's HTTP/1.1
	// fast path received them (valid during the call only).
	Fields      []proxy.Field
	Source      netip.AddrPort
	Destination netip.AddrPort
	TLS         bool
	// ClientID and ServerID are the peers' SPIFFE IDs when TLS is true.
	ClientID, ServerID string
	// DstLabels are the destination endpoint's labels (outbound).
	DstLabels map[string]string
}

// Observer is the proxy's tap hook. Request is called for every request;
// it returns nil when no subscriber wants the request.
type Observer interface {
	Request(info *RequestInfo) RequestObserver
}

// RequestObserver receives the rest of one tapped request's life. Its
// methods never block and may be called from any goroutine, once each, in
// order: Response (unless the request failed first), then End.
type RequestObserver interface {
	// Response is called when the response headers arrive.
	Response(status int, header http.Header)
	// End is called when the response is over: grpcStatus is -1 when the
	// response had no grpc-status, resetCode the HTTP/2 RST_STREAM code (0
	// if none), responseBytes the body bytes sent.
	End(grpcStatus int, responseBytes int64, resetCode uint32)
}
