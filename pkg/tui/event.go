// Package tui holds Conduit's terminal views: the live tap table, the top
// table of busiest paths and the stat/edges tables. The interactive models
// are bubbletea programs; the table renderers are plain text for pipes.
//
// The views know nothing about gRPC: the CLI converts the controller's
// messages into the types declared here.
package tui

import (
	"time"
)

// EventKind says which point of a request's life a TapEvent reports.
type EventKind int

// The three tap events of one request, in order.
const (
	RequestInit EventKind = iota + 1
	ResponseInit
	ResponseEnd
)

func (k EventKind) String() string {
	switch k {
	case RequestInit:
		return "req"
	case ResponseInit:
		return "rsp"
	case ResponseEnd:
		return "end"
	}
	return "unknown"
}

// Header is one HTTP header as tapped (sensitive values already redacted by
// the proxy).
type Header struct {
	Name  string
	Value string
}

// TapEvent is one event of a tapped request. Request fields are set on the
// RequestInit event; the CLI's stream keeps them on later events of the same
// ID where it knows them.
type TapEvent struct {
	// ID identifies the request across its events (unique per tap session).
	ID   string
	Kind EventKind
	Time time.Time

	// Source and Destination name the peers, e.g. "deploy/web" or an address.
	Source      string
	Destination string
	// Direction is "inbound" or "outbound" as seen by the tapped proxy.
	Direction string
	TLS       bool

	Method    string
	Authority string
	Path      string
	Headers   []Header
	// Authz is the inbound policy's decision; nil when no policy applied.
	Authz *Authz
	// RouteKind and RouteName name the outbound route (httproute or
	// grpcroute) whose rule the request matched; "" when none did.
	RouteKind, RouteName string

	// ResponseInit.
	Status          int
	Latency         time.Duration
	ResponseHeaders []Header

	// ResponseEnd. GRPCStatus is -1 when the response carried none.
	GRPCStatus    int
	Duration      time.Duration
	ResponseBytes int64
}

// Authz is the inbound policy's decision on a request. Server, Route and
// Authorization name policy resources as "kind/name" ("server/web-http"),
// "" when absent.
type Authz struct {
	Allowed bool
	// Status is what a denial was answered with (403, 404); 0 when allowed.
	Status                       int
	Server, Route, Authorization string
	// Reason explains a denial; "" when allowed.
	Reason string
}

// Short is the decision in one word and the server: "allow:server/web-http",
// "deny:default/deny".
func (a *Authz) Short() string {
	if a == nil {
		return "-"
	}
	v := "deny"
	if a.Allowed {
		v = "allow"
	}
	return v + ":" + a.Server
}

// NoGRPCStatus marks a response without a grpc-status.
const NoGRPCStatus = -1

// Success classifies a finished request like the proxy's response_total
// does: a 5xx status or a non-OK grpc-status is a failure.
func Success(status, grpcStatus int) bool {
	if status >= 500 {
		return false
	}
	return grpcStatus <= 0
}

// TapEventMsg delivers a tap event to a running view.
type TapEventMsg TapEvent

// StreamEndMsg tells a view that its event stream ended; Err is nil when it
// ended normally.
type StreamEndMsg struct{ Err error }
