package proxy

import (
	"net/http"
	"net/netip"
	"time"
)

// Observer sees the HTTP requests the proxy carries; it is the seam for tap.
// A nil Config.Observer costs nothing. Implementations must be fast and must
// not block or modify the request: copy what they need and drop events
// rather than slow traffic.
type Observer interface {
	// RequestStarted is called when a request's headers have arrived,
	// before it is forwarded. It returns the request's observation, or nil
	// to ignore the request.
	RequestStarted(r *http.Request, info RequestInfo) Observation
}

// ActiveObserver is an Observer that can tell when nobody is watching
// (tap with no subscriber): the proxy then keeps serving HTTP/1.1 on its
// fast path, which does not call the Observer, and moves a connection to
// the observed path at its next request once Active reports true.
type ActiveObserver interface {
	Observer
	Active() bool
}

// Observation follows one request; each method is called at most once, in
// order, from the request's goroutine.
type Observation interface {
	// ResponseStarted is called when the response's headers are sent
	// (status is the final status; 101 for upgrades).
	ResponseStarted(status int, header http.Header)
	// Ended is called when the exchange is over, successfully or not.
	Ended(end EndInfo)
}

// RequestInfo describes where a request came from and is going.
type RequestInfo struct {
	Direction string // Inbound or Outbound
	Authority string
	Source    netip.AddrPort
	// Target is the address the request is sent to.
	Target   string
	TLS      bool
	ClientID string
	ServerID string
	// DstLabels are the endpoint's labels (outbound, from discovery).
	DstLabels map[string]string
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
}
