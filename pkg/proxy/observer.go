package proxy

import (
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"net/http"
	"net/netip"
	"strings"
	"time"
)

// Observer sees the HTTP requests the proxy carries; it is the seam for tap,
// and both HTTP paths (net/http's and the HTTP/1.1 fast path) feed it the
// same way. A nil Config.Observer costs nothing. Implementations must be
// fast and must not block or modify what they are given: copy what they
// need and drop events rather than slow traffic.
type Observer interface {
	// Active reports whether anybody is watching (tap with a subscriber).
	// While it is false the proxy describes no request: an idle tap costs
	// the proxy one call per request.
	Active() bool
	// RequestStarted is called when a request's head has arrived, before
	// it is forwarded. It returns the request's Observation, or nil to
	// ignore the request. req and what it refers to are valid during the
	// call only.
	RequestStarted(req *Request) Observation
}

// Observation follows one request; each method is called at most once, in
// order, from the request's goroutine.
type Observation interface {
	// ResponseStarted is called when the response's head is sent (Status
	// is the final status; 101 for upgrades). rsp is valid during the call
	// only.
	ResponseStarted(rsp *Response)
	// Ended is called when the exchange is over, successfully or not.
	Ended(end EndInfo)
}

// Field is one header field as the HTTP/1.1 fast path received it (name
// as sent). It is authz's: the fast path hands the same fields to the
// Observer and to the inbound policy.
type Field = authz.Field

// Request describes a request whose head the proxy has read. Its header is
// in Header when net/http parsed the request, in Fields when the HTTP/1.1
// fast path did (end-to-end fields in the order received, never nil then):
// describing a fast-path request builds no http.Header.
type Request struct {
	Direction string // Inbound or Outbound
	Method    string
	Scheme    string // "http" or "https", as the client sent it
	Authority string
	// Path is the request target's path; Query its query, without the '?'.
	Path, Query string
	// ContentLength is the body's declared length, -1 when it is chunked
	// or unknown.
	ContentLength int64
	Header        http.Header
	Fields        []Field
	Source        netip.AddrPort
	// Destination is the address the request is sent to (invalid when the
	// proxy could not route it).
	Destination netip.AddrPort
	TLS         bool
	// ClientID and ServerID are the peers' SPIFFE IDs when TLS is true.
	ClientID, ServerID string
	// DstLabels are the endpoint's labels (outbound, from discovery).
	DstLabels map[string]string
	// Authz is the inbound policy's decision on the request: zero when no
	// policy applies (outbound, or no Config.Policy); a denied request is
	// answered by the proxy (EndInfo.ProxyError "unauthorized" or
	// "no_route").
	Authz authz.Decision
	// RouteKind and RouteName name the outbound route whose rule the
	// request matched ("httproute" or "grpcroute"); empty without one.
	RouteKind, RouteName string
}

// HeaderValue returns the first value of the header field name (case
// insensitive), from Header or Fields.
func (r *Request) HeaderValue(name string) string { return headerValue(r.Header, r.Fields, name) }

// Response is the head of a response: its header as Header or, from the
// HTTP/1.1 fast path, as Fields (as in Request).
type Response struct {
	Status int
	Header http.Header
	Fields []Field
}

// EndInfo describes how a request ended.
type EndInfo struct {
	Status     int    // 0 if no response was sent
	GRPCStatus string // "" when not gRPC
	// Latency is the time to the response's headers; Duration to its end.
	Latency, Duration time.Duration
	// ResponseBytes is the number of response body bytes written to the
	// client (DATA frames over HTTP/2, gRPC messages with their 5-byte
	// prefixes; the decoded body of a chunked HTTP/1.1 response, without
	// framing or trailers). Bytes relayed after an Upgrade or a CONNECT
	// are not counted.
	ResponseBytes int64
	// Err is set when the stream failed (reset, upstream error).
	Err error
	// ProxyError is the conduit-proxy-error reason when the proxy itself
	// answered.
	ProxyError string
	// Retries is how many times the proxy sent the request again (its
	// route's retries) before the response the client got.
	Retries int
}

// HeaderValue returns the first value of the header field name (case
// insensitive), from Header or Fields.
func (r *Response) HeaderValue(name string) string { return headerValue(r.Header, r.Fields, name) }

func headerValue(h http.Header, fields []Field, name string) string {
	if fields == nil {
		return h.Get(name)
	}
	for _, f := range fields {
		if len(f.Name) == len(name) && strings.EqualFold(string(f.Name), name) {
			return string(f.Value)
		}
	}
	return ""
}
