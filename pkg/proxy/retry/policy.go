package retry

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// MaxReplayBody is the largest request body kept for replay: a request
// whose body is longer (or turns out longer while it is read) is never
// retried.
const MaxReplayBody = 64 << 10

// DefaultLimit is the retries a request may get when the policy does not
// say (Linkerd's default).
const DefaultLimit = 1

// MaxLimit bounds Policy.Limit: the budget caps retries anyway, and a
// larger value is more likely a typo than a wish.
const MaxLimit = 100

// StatusRange is a range of HTTP response statuses, both ends included.
type StatusRange struct {
	Min, Max int
}

// GRPCCodes is a set of gRPC status codes (0 to 16), one bit each.
type GRPCCodes uint32

// Has reports whether code is in the set.
func (c GRPCCodes) Has(code int) bool {
	return code >= 0 && code < 32 && c&(1<<code) != 0
}

// With returns the set with code added (0 to 16; others are ignored).
func (c GRPCCodes) With(code int) GRPCCodes {
	if code < 0 || code >= len(grpcNames) {
		return c
	}
	return c | 1<<code
}

// grpcNames are the gRPC status codes' names, indexed by code, as
// retry.conduit.io/grpc spells them (Linkerd's: the codes' names in lower
// case with dashes).
var grpcNames = [...]string{
	"ok", "cancelled", "unknown", "invalid-argument", "deadline-exceeded",
	"not-found", "already-exists", "permission-denied", "resource-exhausted",
	"failed-precondition", "aborted", "out-of-range", "unimplemented",
	"internal", "unavailable", "data-loss", "unauthenticated",
}

// Policy is what a route or Service allows to be retried. The zero value
// retries nothing.
type Policy struct {
	// HTTP are the response statuses of HTTP requests that are retried.
	HTTP []StatusRange
	// GRPC are the grpc-status codes of gRPC requests that are retried.
	GRPC GRPCCodes
	// Limit is how many times one request may be retried (attempts beyond
	// the first); 0 means never.
	Limit int
	// Timeout, when not zero, bounds each try: a try that takes longer is
	// cancelled and, like a retryable response, retried if the limit and
	// the budget allow (the caller's timer; Retryable does not see it).
	Timeout time.Duration
}

// Retryable reports whether a response may be retried: for a gRPC request
// (grpcStatus is its grpc-status, from the headers of a trailers-only
// response or the trailers), whether the policy lists the code; otherwise
// (grpcStatus empty) whether the policy lists the HTTP status. It does not
// allocate.
func (p *Policy) Retryable(status int, grpcStatus string) bool {
	if grpcStatus != "" {
		code, ok := parseGRPCStatus(grpcStatus)
		return ok && p.GRPC.Has(code)
	}
	for _, r := range p.HTTP {
		if status >= r.Min && status <= r.Max {
			return true
		}
	}
	return false
}

// parseGRPCStatus reads a grpc-status value: a decimal code of one or two
// digits.
func parseGRPCStatus(s string) (int, bool) {
	switch {
	case len(s) == 1 && s[0] >= '0' && s[0] <= '9':
		return int(s[0] - '0'), true
	case len(s) == 2 && s[0] >= '1' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9':
		return int(s[0]-'0')*10 + int(s[1]-'0'), true
	}
	return 0, false
}

// MayRetry reports whether a request may be retried at all, before it is
// sent: the policy allows retries (Limit > 0) of the request's kind — a
// gRPC request when the policy lists gRPC codes or a per-try timeout; an
// HTTP request when its method is idempotent (GET, HEAD, OPTIONS, TRACE,
// PUT, DELETE) and the policy lists statuses or a per-try timeout — and its
// body can be kept for replay: contentLength is the request's length, -1
// when unknown (chunked, or an HTTP/2 stream without content-length). A
// body of unknown length may be retried only while what has been read of
// it fits in MaxReplayBody; the caller gives up replaying it beyond that.
func (p *Policy) MayRetry(method string, grpc bool, contentLength int64) bool {
	if p.Limit <= 0 || contentLength > MaxReplayBody {
		return false
	}
	if grpc {
		return p.GRPC != 0 || p.Timeout > 0
	}
	return Idempotent(method) && (len(p.HTTP) > 0 || p.Timeout > 0)
}

// Idempotent reports whether an HTTP method is idempotent (RFC 9110
// section 9.2.2), so that sending the request again is safe.
func Idempotent(method string) bool {
	switch method {
	case "GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE":
		return true
	}
	return false
}

// ParsePolicy reads the retry.conduit.io annotations of a Service or
// route. present is false when none of them is set (the object has no
// retry policy of its own: a route's falls back to its Service's);
// otherwise the policy has the limit DefaultLimit unless
// retry.conduit.io/limit says otherwise. The error names the annotation
// and its value.
func ParsePolicy(annotations map[string]string) (p Policy, present bool, err error) {
	for _, key := range [...]string{contract.AnnotationRetryHTTP, contract.AnnotationRetryGRPC,
		contract.AnnotationRetryLimit, contract.AnnotationRetryTimeout} {
		if _, ok := annotations[key]; ok {
			present = true
		}
	}
	if !present {
		return Policy{}, false, nil
	}
	p.Limit = DefaultLimit
	if v, ok := annotations[contract.AnnotationRetryHTTP]; ok {
		if p.HTTP, err = ParseHTTPStatuses(v); err != nil {
			return Policy{}, true, annotationError(contract.AnnotationRetryHTTP, err)
		}
	}
	if v, ok := annotations[contract.AnnotationRetryGRPC]; ok {
		if p.GRPC, err = ParseGRPCCodes(v); err != nil {
			return Policy{}, true, annotationError(contract.AnnotationRetryGRPC, err)
		}
	}
	if v, ok := annotations[contract.AnnotationRetryLimit]; ok {
		if p.Limit, err = ParseLimit(v); err != nil {
			return Policy{}, true, annotationError(contract.AnnotationRetryLimit, err)
		}
	}
	if v, ok := annotations[contract.AnnotationRetryTimeout]; ok {
		if p.Timeout, err = ParseTimeout(v); err != nil {
			return Policy{}, true, annotationError(contract.AnnotationRetryTimeout, err)
		}
	}
	return p, true, nil
}

func annotationError(key string, err error) error {
	return fmt.Errorf("annotation %s: %w", key, err)
}

// ParseHTTPStatuses parses a retry.conduit.io/http value: comma-separated
// single statuses ("504"), ranges ("500-504"), classes ("5xx", from 1xx to
// 5xx) and "gateway-error" (502-504). Statuses are 100 to 599.
func ParseHTTPStatuses(s string) ([]StatusRange, error) {
	var out []StatusRange
	for _, el := range strings.Split(s, ",") {
		el = strings.TrimSpace(el)
		r, err := parseStatusRange(el)
		if err != nil {
			return nil, fmt.Errorf("%q in %q: %v", el, s, err)
		}
		out = append(out, r)
	}
	return out, nil
}

const statusWant = `want a status ("504"), a range ("500-504"), a class ("5xx") or "gateway-error"`

func parseStatusRange(el string) (StatusRange, error) {
	lower := strings.ToLower(el)
	switch {
	case el == "":
		return StatusRange{}, fmt.Errorf("empty element: %s", statusWant)
	case lower == "gateway-error":
		return StatusRange{Min: 502, Max: 504}, nil
	case len(lower) == 3 && lower[1:] == "xx" && lower[0] >= '1' && lower[0] <= '5':
		c := int(lower[0]-'0') * 100
		return StatusRange{Min: c, Max: c + 99}, nil
	}
	from, to, isRange := strings.Cut(el, "-")
	lo, err := parseStatus(from)
	if err != nil {
		return StatusRange{}, err
	}
	if !isRange {
		return StatusRange{Min: lo, Max: lo}, nil
	}
	hi, err := parseStatus(to)
	if err != nil {
		return StatusRange{}, err
	}
	if lo > hi {
		return StatusRange{}, fmt.Errorf("the range is empty (%d is above %d)", lo, hi)
	}
	return StatusRange{Min: lo, Max: hi}, nil
}

func parseStatus(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a number: %s", s, statusWant)
	}
	if n < 100 || n > 599 {
		return 0, fmt.Errorf("%d is not an HTTP status (100 to 599)", n)
	}
	return n, nil
}

// ParseGRPCCodes parses a retry.conduit.io/grpc value: comma-separated
// gRPC status code names, such as
// "cancelled,deadline-exceeded,internal,resource-exhausted,unavailable"
// (case and dashes or underscores do not matter: "DEADLINE_EXCEEDED" is
// deadline-exceeded). "ok" is not retryable.
func ParseGRPCCodes(s string) (GRPCCodes, error) {
	var codes GRPCCodes
	for _, el := range strings.Split(s, ",") {
		el = strings.TrimSpace(el)
		name := strings.ReplaceAll(strings.ToLower(el), "_", "-")
		code := -1
		for i, n := range grpcNames {
			if n == name {
				code = i
			}
		}
		switch code {
		case -1:
			return 0, fmt.Errorf("%q in %q is not a gRPC status code: want one of %s", el, s, strings.Join(grpcNames[1:], ", "))
		case 0:
			return 0, fmt.Errorf("%q in %q: a successful response is never retried", el, s)
		}
		codes = codes.With(code)
	}
	return codes, nil
}

// ParseLimit parses a retry.conduit.io/limit value: the retries a request
// may get, 0 to MaxLimit.
func ParseLimit(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil || n < 0 || n > MaxLimit {
		return 0, fmt.Errorf("%q is not a number of retries from 0 to %d", s, MaxLimit)
	}
	return n, nil
}

// ParseTimeout parses a retry.conduit.io/timeout value: a positive
// duration with its unit ("300ms", "2s", "1m").
func ParseTimeout(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q is not a positive duration with a unit, such as 300ms or 2s", s)
	}
	return d, nil
}
