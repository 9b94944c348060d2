package grpcwire

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
)

// Code is a gRPC status code.
type Code uint32

// The gRPC status codes this package produces or callers test for.
const (
	OK                Code = 0
	Canceled          Code = 1
	Unknown           Code = 2
	InvalidArgument   Code = 3
	DeadlineExceeded  Code = 4
	NotFound          Code = 5
	PermissionDenied  Code = 7
	ResourceExhausted Code = 8
	Unimplemented     Code = 12
	Internal          Code = 13
	Unavailable       Code = 14
	Unauthenticated   Code = 16
)

// Status is a non-OK gRPC status.
type Status struct {
	Code    Code
	Message string
}

func (s *Status) Error() string {
	return fmt.Sprintf("grpc status %d: %s", s.Code, s.Message)
}

// CodeOf returns err's gRPC code: OK for nil, Unknown for errors that are not
// a *Status.
func CodeOf(err error) Code {
	if err == nil {
		return OK
	}
	var st *Status
	if errors.As(err, &st) {
		return st.Code
	}
	return Unknown
}

// statusFrom reads grpc-status and grpc-message; nil means OK (or absent).
func statusFrom(h http.Header) error {
	v := h.Get("Grpc-Status")
	if v == "" {
		return nil
	}
	code, err := strconv.ParseUint(v, 10, 32)
	if err != nil {
		return &Status{Code: Unknown, Message: fmt.Sprintf("malformed grpc-status %q", v)}
	}
	if code == 0 {
		return nil
	}
	msg := h.Get("Grpc-Message")
	if m, err := url.PathUnescape(msg); err == nil {
		msg = m
	}
	return &Status{Code: Code(code), Message: msg}
}

func contextStatus(err error) *Status {
	if errors.Is(err, context.DeadlineExceeded) {
		return &Status{Code: DeadlineExceeded, Message: err.Error()}
	}
	return &Status{Code: Canceled, Message: err.Error()}
}

// httpStatusCode maps a non-200 HTTP status to a gRPC code as the gRPC
// HTTP/2 protocol document specifies.
func httpStatusCode(status int) Code {
	switch status {
	case http.StatusBadRequest:
		return Internal
	case http.StatusUnauthorized:
		return Unauthenticated
	case http.StatusForbidden:
		return PermissionDenied
	case http.StatusNotFound:
		return Unimplemented
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return Unavailable
	default:
		return Unknown
	}
}
