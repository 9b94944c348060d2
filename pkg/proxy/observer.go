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
// (tap with no subscriber): while Active reports false the proxy does not
// build the *http.Request that RequestStarted takes on its HTTP/1.1 fast
// path, so an idle tap costs one atomic load per request.
type ActiveObserver interface {
	Observer
	Active() bool
}

// Field is one header field as the HTTP/1.1 fast path received it (name
// as sent); the slices are valid during the call only.
type Field struct{ Name, Value []byte }

// FieldObserver is an Observer that also takes HTTP/1.1 requests as the
// fast path parsed them, so that observing one builds no *http.Request and
// no http.Header: tap uses it to keep a tapped proxy's allocations (and so
// its garbage collections) low. path is the request target up to any query;
// header holds the end-to-end fields in the order received.
type FieldObserver interface {
	Observer
	RequestStartedFields(method, path []byte, header []Field, info RequestInfo) FieldObservation
}

// FieldObservation is the Observation of a FieldObserver's request: the
// response's head comes as fields too.
type FieldObservation interface {
	Observation
	ResponseStartedFields(status int, header []Field)
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
