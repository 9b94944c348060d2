package route

import (
	"testing"
	"time"
)

func TestRetryable(t *testing.T) {
	r := Retry{HTTPStatuses: []StatusRange{{500, 504}, {429, 429}}, GRPCCodes: []uint32{14, 4}, Limit: 1}
	for _, tc := range []struct {
		status int
		grpc   string
		want   bool
	}{
		{500, "", true},
		{504, "", true},
		{505, "", false},
		{429, "", true},
		{200, "", false},
		{404, "", false},
		{200, "14", true},
		{200, "4", true},
		{200, "13", false},
		{200, "0", false},
		{503, "0", false}, // a gRPC response is judged by its grpc-status
		{200, "014", false},
		{200, "x", false},
		{200, "99", false},
	} {
		if got := r.Retryable(tc.status, tc.grpc); got != tc.want {
			t.Errorf("Retryable(%d, %q) = %v, want %v", tc.status, tc.grpc, got, tc.want)
		}
	}
	if (&Retry{}).Retryable(503, "") || (&Retry{}).Retryable(200, "14") {
		t.Error("the zero policy retries")
	}
	if n := testing.AllocsPerRun(100, func() { r.Retryable(503, ""); r.Retryable(200, "14") }); n != 0 {
		t.Errorf("Retryable allocates %v times", n)
	}
}

func TestAllows(t *testing.T) {
	http := Retry{HTTPStatuses: []StatusRange{{500, 599}}, Limit: 1}
	grpc := Retry{GRPCCodes: []uint32{14}, Limit: 2}
	timeoutOnly := Retry{Timeout: time.Second, Limit: 1}
	for _, tc := range []struct {
		name   string
		r      Retry
		method string
		grpc   bool
		length int64
		want   bool
	}{
		{"GET", http, "GET", false, 0, true},
		{"HEAD", http, "HEAD", false, 0, true},
		{"OPTIONS", http, "OPTIONS", false, 0, true},
		{"TRACE", http, "TRACE", false, 0, true},
		{"PUT with a body", http, "PUT", false, 1000, true},
		{"DELETE", http, "DELETE", false, 0, true},
		{"POST", http, "POST", false, 0, false},
		{"PATCH", http, "PATCH", false, 10, false},
		{"lower-case get (not the method GET)", http, "get", false, 0, false},
		{"PUT of 64 KiB", http, "PUT", false, MaxReplayBody, true},
		{"PUT of 64 KiB + 1", http, "PUT", false, MaxReplayBody + 1, false},
		{"PUT of unknown length", http, "PUT", false, -1, true},
		{"no limit", Retry{HTTPStatuses: http.HTTPStatuses}, "GET", false, 0, false},
		{"gRPC with gRPC codes", grpc, "POST", true, 100, true},
		{"gRPC of unknown length", grpc, "POST", true, -1, true},
		{"gRPC too long", grpc, "POST", true, MaxReplayBody + 1, false},
		{"gRPC under an HTTP-only policy", http, "POST", true, 100, false},
		{"HTTP under a gRPC-only policy", grpc, "GET", false, 0, false},
		{"timeout only, GET", timeoutOnly, "GET", false, 0, true},
		{"timeout only, gRPC", timeoutOnly, "POST", true, 0, true},
		{"timeout only, POST", timeoutOnly, "POST", false, 0, false},
	} {
		if got := tc.r.Allows(tc.method, tc.grpc, tc.length); got != tc.want {
			t.Errorf("%s: Allows = %v, want %v", tc.name, got, tc.want)
		}
	}
}
