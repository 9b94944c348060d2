package routes

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/contract"
)

// An annotation with a value the controller cannot use is ignored, as if
// it were absent, and reported: in the Accepted condition's message of a
// route it is on, in the controller's log for a Service.

// Defaults of the retry and failure accrual annotations (Linkerd's).
const (
	defaultRetryLimit  = 1
	defaultMaxFailures = 7
	defaultMinPenalty  = time.Second
	defaultMaxPenalty  = time.Minute
	defaultJitterRatio = 0.5
)

// grpcCodes are the gRPC status codes by the names retry.conduit.io/grpc
// takes: Linkerd's spelling, lower case with dashes.
var grpcCodes = map[string]uint32{
	"ok": 0, "cancelled": 1, "unknown": 2, "invalid-argument": 3, "deadline-exceeded": 4,
	"not-found": 5, "already-exists": 6, "permission-denied": 7, "resource-exhausted": 8,
	"failed-precondition": 9, "aborted": 10, "out-of-range": 11, "unimplemented": 12,
	"internal": 13, "unavailable": 14, "data-loss": 15, "unauthenticated": 16,
}

// defaultGRPCCodes are retried when retries are on and
// retry.conduit.io/grpc is not given: cancelled, deadline-exceeded,
// resource-exhausted, unavailable.
var defaultGRPCCodes = []uint32{1, 4, 8, 14}

// default5xx is retried when retries are on and retry.conduit.io/http is
// not given.
var default5xx = []*destinationv1.StatusRange{{Min: 500, Max: 599}}

// annotationError names an annotation, its value and what is wrong.
func annotationError(name, value, want string) string {
	return fmt.Sprintf("%s=%q: %s", name, value, want)
}

// conditions says which retry conditions an object may carry.
type conditions struct{ http, grpc bool }

var (
	onHTTPRoute = conditions{http: true}
	onGRPCRoute = conditions{grpc: true}
	onService   = conditions{http: true, grpc: true}
)

// parseRetry reads the retry.conduit.io annotations: nil when none is set
// (or none is usable), with a line for each ignored annotation.
func parseRetry(ann map[string]string, on conditions) (*destinationv1.Retry, []string) {
	var problems []string
	r := &destinationv1.Retry{Limit: defaultRetryLimit}
	set := false
	httpGiven, grpcGiven := false, false
	if v, ok := ann[contract.AnnotationRetryHTTP]; ok {
		httpGiven = true
		switch ranges, err := parseStatusRanges(v); {
		case !on.http:
			problems = append(problems, annotationError(contract.AnnotationRetryHTTP, v, "a GRPCRoute is retried by gRPC status: use "+contract.AnnotationRetryGRPC))
		case err != nil:
			problems = append(problems, annotationError(contract.AnnotationRetryHTTP, v, err.Error()))
		default:
			r.HttpStatuses, set = ranges, true
		}
	}
	if v, ok := ann[contract.AnnotationRetryGRPC]; ok {
		grpcGiven = true
		switch codes, err := parseGRPCCodes(v); {
		case !on.grpc:
			problems = append(problems, annotationError(contract.AnnotationRetryGRPC, v, "an HTTPRoute is retried by HTTP status: use "+contract.AnnotationRetryHTTP))
		case err != nil:
			problems = append(problems, annotationError(contract.AnnotationRetryGRPC, v, err.Error()))
		default:
			r.GrpcCodes, set = codes, true
		}
	}
	if v, ok := ann[contract.AnnotationRetryLimit]; ok {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil {
			problems = append(problems, annotationError(contract.AnnotationRetryLimit, v, "want a number of retries such as 3"))
		} else {
			r.Limit, set = uint32(n), true
		}
	}
	if v, ok := ann[contract.AnnotationRetryTimeout]; ok {
		ms, err := parseDurationMS(v)
		if err != nil {
			problems = append(problems, annotationError(contract.AnnotationRetryTimeout, v, err.Error()))
		} else {
			r.TimeoutMs, set = ms, true
		}
	}
	if !set {
		return nil, problems
	}
	// Conditions not given default to Linkerd's; one given but unusable
	// does not.
	if on.http && !httpGiven && !grpcGiven {
		r.HttpStatuses = default5xx
	}
	if on.grpc && !grpcGiven && !httpGiven {
		r.GrpcCodes = defaultGRPCCodes
	}
	if len(r.HttpStatuses) == 0 && len(r.GrpcCodes) == 0 {
		return nil, problems
	}
	return r, problems
}

// parseStatusRanges reads "5xx", "gateway-error", "503" and "500-504",
// comma separated.
func parseStatusRanges(v string) ([]*destinationv1.StatusRange, error) {
	var out []*destinationv1.StatusRange
	for _, item := range strings.Split(v, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		var lo, hi uint64
		var err error
		switch {
		case item == "gateway-error":
			lo, hi = 502, 504
		case len(item) == 3 && strings.HasSuffix(item, "xx") && item[0] >= '1' && item[0] <= '5':
			lo = uint64(item[0]-'0') * 100
			hi = lo + 99
		case strings.Contains(item, "-"):
			a, b, _ := strings.Cut(item, "-")
			if lo, err = strconv.ParseUint(a, 10, 16); err == nil {
				hi, err = strconv.ParseUint(b, 10, 16)
			}
		default:
			lo, err = strconv.ParseUint(item, 10, 16)
			hi = lo
		}
		if err != nil || lo < 100 || hi > 599 || lo > hi {
			return nil, fmt.Errorf("%q is not a status (503), a range (500-504), 5xx or gateway-error", item)
		}
		out = append(out, &destinationv1.StatusRange{Min: uint32(lo), Max: uint32(hi)})
	}
	return out, nil
}

// parseGRPCCodes reads gRPC status code names, comma separated.
func parseGRPCCodes(v string) ([]uint32, error) {
	var out []uint32
	for _, item := range strings.Split(v, ",") {
		item = strings.ToLower(strings.TrimSpace(item))
		code, ok := grpcCodes[item]
		if !ok {
			return nil, fmt.Errorf("%q is not a gRPC status code name: want names such as cancelled, deadline-exceeded, internal, resource-exhausted, unavailable", item)
		}
		out = append(out, code)
	}
	return out, nil
}

// parseDurationMS reads a duration annotation ("10s", "500ms", "1m30s")
// in milliseconds; 0 means none. A positive duration under a millisecond
// is one millisecond.
func parseDurationMS(v string) (uint64, error) {
	d, err := time.ParseDuration(strings.TrimSpace(v))
	if err != nil || d < 0 {
		return 0, fmt.Errorf("want a duration such as 10s or 500ms")
	}
	return durationMS(d), nil
}

func durationMS(d time.Duration) uint64 {
	ms := uint64(d.Milliseconds())
	if ms == 0 && d > 0 {
		ms = 1
	}
	return ms
}

// gatewayDuration is the Gateway API's Duration (GEP-2257): one to four
// numbers of up to five digits, each with a unit h, m, s or ms.
var gatewayDuration = regexp.MustCompile(`^([0-9]{1,5}(h|m|s|ms)){1,4}$`)

// parseGatewayDuration reads an HTTPRoute timeout in milliseconds; "0s"
// (0) disables the timeout.
func parseGatewayDuration(v string) (uint64, error) {
	if !gatewayDuration.MatchString(v) {
		return 0, fmt.Errorf("%q is not a Gateway API duration such as 10s, 500ms or 1h30m", v)
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, fmt.Errorf("%q: %w", v, err)
	}
	return durationMS(d), nil
}

// requestTimeout reads timeout.conduit.io/request (0 when unset).
func requestTimeout(ann map[string]string) (uint64, []string) {
	v, ok := ann[contract.AnnotationTimeoutRequest]
	if !ok {
		return 0, nil
	}
	ms, err := parseDurationMS(v)
	if err != nil {
		return 0, []string{annotationError(contract.AnnotationTimeoutRequest, v, err.Error())}
	}
	return ms, nil
}

// servicePolicy is a Service's own policy: timeout.conduit.io/request and
// the retry annotations (nil when it has none).
func servicePolicy(ann map[string]string) (*destinationv1.RoutePolicy, []string) {
	timeout, problems := requestTimeout(ann)
	retry, more := parseRetry(ann, onService)
	problems = append(problems, more...)
	if timeout == 0 && retry == nil {
		return nil, problems
	}
	return &destinationv1.RoutePolicy{RequestTimeoutMs: timeout, Retry: retry}, problems
}

// failureAccrual reads balancer.conduit.io/failure-accrual and its
// parameters (nil when off).
func failureAccrual(ann map[string]string) (*destinationv1.FailureAccrual, []string) {
	mode, ok := ann[contract.AnnotationFailureAccrual]
	if !ok {
		return nil, nil
	}
	if strings.TrimSpace(mode) != contract.FailureAccrualConsecutive {
		return nil, []string{annotationError(contract.AnnotationFailureAccrual, mode, "the only mode is "+contract.FailureAccrualConsecutive)}
	}
	var problems []string
	fa := &destinationv1.FailureAccrual{
		ConsecutiveMaxFailures: defaultMaxFailures,
		MinPenaltyMs:           uint64(defaultMinPenalty.Milliseconds()),
		MaxPenaltyMs:           uint64(defaultMaxPenalty.Milliseconds()),
		JitterRatio:            defaultJitterRatio,
	}
	if v, ok := ann[contract.AnnotationFailureAccrualMaxFailures]; ok {
		n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 32)
		if err != nil || n == 0 {
			problems = append(problems, annotationError(contract.AnnotationFailureAccrualMaxFailures, v, "want a number of failures of at least 1"))
		} else {
			fa.ConsecutiveMaxFailures = uint32(n)
		}
	}
	penalty := func(name string, into *uint64) {
		if v, ok := ann[name]; ok {
			ms, err := parseDurationMS(v)
			switch {
			case err != nil:
				problems = append(problems, annotationError(name, v, err.Error()))
			case ms == 0:
				problems = append(problems, annotationError(name, v, "want a positive duration"))
			default:
				*into = ms
			}
		}
	}
	minMS, maxMS := fa.MinPenaltyMs, fa.MaxPenaltyMs
	penalty(contract.AnnotationFailureAccrualMinPenalty, &minMS)
	penalty(contract.AnnotationFailureAccrualMaxPenalty, &maxMS)
	if minMS > maxMS {
		problems = append(problems, fmt.Sprintf("%s and %s: the minimum penalty (%dms) exceeds the maximum (%dms)",
			contract.AnnotationFailureAccrualMinPenalty, contract.AnnotationFailureAccrualMaxPenalty, minMS, maxMS))
	} else {
		fa.MinPenaltyMs, fa.MaxPenaltyMs = minMS, maxMS
	}
	if v, ok := ann[contract.AnnotationFailureAccrualJitterRatio]; ok {
		f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		if err != nil || f < 0 || f > 1 {
			problems = append(problems, annotationError(contract.AnnotationFailureAccrualJitterRatio, v, "want a ratio from 0 to 1, such as 0.5"))
		} else {
			fa.JitterRatio = f
		}
	}
	return fa, problems
}
