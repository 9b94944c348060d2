package retry

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/contract"
)

func TestParseHTTPStatuses(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want []StatusRange
	}{
		{"5xx", []StatusRange{{500, 599}}},
		{"5XX", []StatusRange{{500, 599}}},
		{"504", []StatusRange{{504, 504}}},
		{"500-504", []StatusRange{{500, 504}}},
		{"gateway-error", []StatusRange{{502, 504}}},
		{"500-504,429", []StatusRange{{500, 504}, {429, 429}}},
		{" 5xx , 429 ", []StatusRange{{500, 599}, {429, 429}}},
		{"1xx,4xx", []StatusRange{{100, 199}, {400, 499}}},
	} {
		got, err := ParseHTTPStatuses(tc.in)
		if err != nil {
			t.Errorf("%q: %v", tc.in, err)
			continue
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, tc := range []struct{ in, msg string }{
		{"", `"" in "": empty element`},
		{"5xx,", `"" in "5xx,": empty element`},
		{"6xx", `"6xx" in "6xx": "6xx" is not a number`},
		{"abc", `"abc" in "abc": "abc" is not a number`},
		{"99", `"99" in "99": 99 is not an HTTP status`},
		{"600", `600 is not an HTTP status`},
		{"504-500", `"504-500" in "504-500": the range is empty (504 is above 500)`},
		{"500-", `"" is not a number`},
		{"500-5xx", `"5xx" is not a number`},
	} {
		_, err := ParseHTTPStatuses(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.msg)
		}
	}
}

func TestParseGRPCCodes(t *testing.T) {
	got, err := ParseGRPCCodes("cancelled,deadline-exceeded,internal,resource-exhausted,unavailable")
	if err != nil {
		t.Fatal(err)
	}
	for code := range 17 {
		want := code == 1 || code == 4 || code == 8 || code == 13 || code == 14
		if got.Has(code) != want {
			t.Errorf("code %d: Has = %v, want %v", code, got.Has(code), want)
		}
	}
	if got, err := ParseGRPCCodes(" UNAVAILABLE , Deadline_Exceeded"); err != nil || got != 1<<14|1<<4 {
		t.Errorf("upper case and underscores: %b, %v", got, err)
	}
	for _, tc := range []struct{ in, msg string }{
		{"unavailble", `"unavailble" in "unavailble" is not a gRPC status code: want one of cancelled, unknown,`},
		{"internal,", `"" in "internal," is not a gRPC status code`},
		{"ok", `"ok" in "ok": a successful response is never retried`},
		{"14", `"14" in "14" is not a gRPC status code`},
	} {
		_, err := ParseGRPCCodes(tc.in)
		if err == nil || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%q: error %v, want one containing %q", tc.in, err, tc.msg)
		}
	}
}

func TestParseLimitAndTimeout(t *testing.T) {
	if n, err := ParseLimit("3"); err != nil || n != 3 {
		t.Errorf("ParseLimit(3) = %d, %v", n, err)
	}
	if n, err := ParseLimit("0"); err != nil || n != 0 {
		t.Errorf("ParseLimit(0) = %d, %v", n, err)
	}
	for _, in := range []string{"", "-1", "101", "two", "1.5"} {
		if _, err := ParseLimit(in); err == nil || !strings.Contains(err.Error(), "is not a number of retries from 0 to 100") {
			t.Errorf("ParseLimit(%q): %v", in, err)
		}
	}
	if d, err := ParseTimeout("300ms"); err != nil || d != 300*time.Millisecond {
		t.Errorf("ParseTimeout(300ms) = %v, %v", d, err)
	}
	for _, in := range []string{"", "5", "0s", "-1s", "soon"} {
		if _, err := ParseTimeout(in); err == nil || !strings.Contains(err.Error(), "is not a positive duration with a unit") {
			t.Errorf("ParseTimeout(%q): %v", in, err)
		}
	}
}

func TestParsePolicy(t *testing.T) {
	p, present, err := ParsePolicy(map[string]string{"other": "x"})
	if err != nil || present || !reflect.DeepEqual(p, Policy{}) {
		t.Errorf("no annotations: %+v, %v, %v", p, present, err)
	}
	p, present, err = ParsePolicy(map[string]string{contract.AnnotationRetryHTTP: "5xx"})
	if err != nil || !present {
		t.Fatalf("5xx: %v, %v", present, err)
	}
	if want := (Policy{HTTP: []StatusRange{{500, 599}}, Limit: DefaultLimit}); !reflect.DeepEqual(p, want) {
		t.Errorf("5xx: %+v, want %+v", p, want)
	}
	p, _, err = ParsePolicy(map[string]string{
		contract.AnnotationRetryGRPC:    "unavailable",
		contract.AnnotationRetryLimit:   "3",
		contract.AnnotationRetryTimeout: "250ms",
	})
	if want := (Policy{GRPC: 1 << 14, Limit: 3, Timeout: 250 * time.Millisecond}); err != nil || !reflect.DeepEqual(p, want) {
		t.Errorf("grpc: %+v, %v, want %+v", p, err, want)
	}
	for key, val := range map[string]string{
		contract.AnnotationRetryHTTP:    "5yy",
		contract.AnnotationRetryGRPC:    "sometimes",
		contract.AnnotationRetryLimit:   "many",
		contract.AnnotationRetryTimeout: "10",
	} {
		_, present, err := ParsePolicy(map[string]string{key: val})
		if !present || err == nil || !strings.HasPrefix(err.Error(), "annotation "+key+": ") || !strings.Contains(err.Error(), `"`+val+`"`) {
			t.Errorf("%s: %q: present %v, error %v: want one naming the annotation and the value", key, val, present, err)
		}
	}
}

func TestRetryable(t *testing.T) {
	p := Policy{HTTP: []StatusRange{{500, 504}, {429, 429}}, GRPC: GRPCCodes(0).With(14).With(4), Limit: 1}
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
		if got := p.Retryable(tc.status, tc.grpc); got != tc.want {
			t.Errorf("Retryable(%d, %q) = %v, want %v", tc.status, tc.grpc, got, tc.want)
		}
	}
	if (&Policy{}).Retryable(503, "") || (&Policy{}).Retryable(200, "14") {
		t.Error("the zero policy retries")
	}
	if n := testing.AllocsPerRun(100, func() { p.Retryable(503, ""); p.Retryable(200, "14") }); n != 0 {
		t.Errorf("Retryable allocates %v times", n)
	}
}

func TestMayRetry(t *testing.T) {
	http := Policy{HTTP: []StatusRange{{500, 599}}, Limit: 1}
	grpc := Policy{GRPC: GRPCCodes(0).With(14), Limit: 2}
	timeoutOnly := Policy{Timeout: time.Second, Limit: 1}
	for _, tc := range []struct {
		name   string
		p      Policy
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
		{"no limit", Policy{HTTP: http.HTTP}, "GET", false, 0, false},
		{"gRPC with gRPC codes", grpc, "POST", true, 100, true},
		{"gRPC of unknown length", grpc, "POST", true, -1, true},
		{"gRPC too long", grpc, "POST", true, MaxReplayBody + 1, false},
		{"gRPC under an HTTP-only policy", http, "POST", true, 100, false},
		{"HTTP under a gRPC-only policy", grpc, "GET", false, 0, false},
		{"timeout only, GET", timeoutOnly, "GET", false, 0, true},
		{"timeout only, gRPC", timeoutOnly, "POST", true, 0, true},
		{"timeout only, POST", timeoutOnly, "POST", false, 0, false},
	} {
		if got := tc.p.MayRetry(tc.method, tc.grpc, tc.length); got != tc.want {
			t.Errorf("%s: MayRetry = %v, want %v", tc.name, got, tc.want)
		}
	}
}

func BenchmarkPolicyRetryable(b *testing.B) {
	p := Policy{HTTP: []StatusRange{{500, 504}, {429, 429}}, GRPC: GRPCCodes(0).With(14), Limit: 1}
	b.ReportAllocs()
	for b.Loop() {
		p.Retryable(503, "")
		p.Retryable(200, "14")
	}
}
