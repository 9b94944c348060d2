package authz

import (
	"net/http"

	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
)

// Requests and their matching against a port's routes are httpmatch's,
// which outbound routing shares; these are their names here, for the
// proxy's request paths.

// Field is one header field as a fast path received it, the name as sent
// (httpmatch.Field; pkg/proxy's Field is an alias of it).
type Field = httpmatch.Field

// Request is what a decision needs of an HTTP request (httpmatch.Request).
// A decision keeps nothing of it, so its buffers may be reused once
// AllowRequest returns.
type Request = httpmatch.Request

// FieldsRequest wraps a request as a fast path parsed it: method, request
// target and end-to-end header fields (httpmatch.FieldsRequest).
func FieldsRequest(method, target []byte, fields []Field) Request {
	return httpmatch.FieldsRequest(method, target, fields)
}

// HTTPRequest wraps a request net/http parsed (httpmatch.HTTPRequest).
func HTTPRequest(r *http.Request) Request { return httpmatch.HTTPRequest(r) }
