package route

// MaxReplayBody is the largest request body the proxy keeps for replay: a
// request whose body is longer (or turns out longer while it is read) is
// never retried.
const MaxReplayBody = 64 << 10

// Allows reports whether a request may be retried at all, before it is
// sent: the policy allows retries (Limit > 0) of the request's kind — a
// gRPC request when the policy lists gRPC codes or a per-try timeout; an
// HTTP request when its method is idempotent (GET, HEAD, OPTIONS, TRACE,
// PUT, DELETE) and the policy lists statuses or a per-try timeout — and its
// body can be kept for replay: contentLength is the request's length, -1
// when unknown (chunked, or an HTTP/2 stream without content-length). A
// body of unknown length may be retried only while what has been read of
// it fits in MaxReplayBody; the caller gives up replaying it beyond that.
func (r *Retry) Allows(method string, grpc bool, contentLength int64) bool {
	if r.Limit == 0 || contentLength > MaxReplayBody {
		return false
	}
	if grpc {
		return len(r.GRPCCodes) > 0 || r.Timeout > 0
	}
	return Idempotent(method) && (len(r.HTTPStatuses) > 0 || r.Timeout > 0)
}

// Retryable reports whether a response may be retried: for a gRPC request
// (grpcStatus is its grpc-status, from the headers of a trailers-only
// response), whether the policy lists the code; otherwise (grpcStatus
// empty) whether it lists the HTTP status. It does not allocate.
func (r *Retry) Retryable(status int, grpcStatus string) bool {
	if grpcStatus != "" {
		code, ok := grpcCode(grpcStatus)
		return ok && r.RetriesGRPC(code)
	}
	return r.RetriesStatus(status)
}

// grpcCode reads a grpc-status value: a decimal code of one or two digits.
func grpcCode(s string) (uint32, bool) {
	switch {
	case len(s) == 1 && s[0] >= '0' && s[0] <= '9':
		return uint32(s[0] - '0'), true
	case len(s) == 2 && s[0] >= '1' && s[0] <= '9' && s[1] >= '0' && s[1] <= '9':
		return uint32(s[0]-'0')*10 + uint32(s[1]-'0'), true
	}
	return 0, false
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
