package route

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// fullMessage sets every field of OutboundRoutes.
func fullMessage() *msgRoutes {
	return &msgRoutes{
		Found: true,
		Routes: []*msgRoute{
			httpRoute("books", 1700000000000000000, &msgRule{
				Matches: []*msgMatch{{Path: prefix("/books"), Method: "GET",
					Headers:     []*policyv1.HeaderMatch{header("x-canary", "1")},
					QueryParams: []*policyv1.QueryParamMatch{query("v", "2")}}},
				Filters: []*msgFilter{
					requestHeaders(&destinationv1.HeaderModifier{Set: hdrs("X-Set", "1"), Add: hdrs("X-Add", "2"), Remove: []string{"X-Remove"}}),
					responseHeaders(&destinationv1.HeaderModifier{Add: hdrs("X-Route", "books")}),
				},
				Backends: []*msgBackend{
					{Authority: "books-v1.shop.svc.cluster.local:7002", Weight: 90},
					{Authority: "books-v2.shop.svc.cluster.local:7002", Weight: 10,
						Filters: []*msgFilter{requestHeaders(&destinationv1.HeaderModifier{Set: hdrs("X-Version", "v2")})}},
					{Authority: "gone.shop.svc.cluster.local:80", Weight: 0, Invalid: "no Service shop/gone"},
				},
				Policy: &msgPolicy{RequestTimeoutMs: 1500, BackendRequestTimeoutMs: 500, Retry: &destinationv1.Retry{
					Limit: 3, HttpStatuses: []*destinationv1.StatusRange{{Min: 502, Max: 504}}, GrpcCodes: []uint32{14}, TimeoutMs: 200}},
			}),
			grpcRoute("old-site", 1600000000000000000, &msgRule{
				Matches: []*msgMatch{{Path: exact("/old")}},
				Filters: []*msgFilter{redirect(&destinationv1.Redirect{Scheme: "https", Hostname: "new.example.com", Port: 8443,
					Path: &destinationv1.PathModifier{Kind: &destinationv1.PathModifier_Full{Full: "/new"}}, StatusCode: 301})},
			}),
		},
		ServicePolicy:  &msgPolicy{RequestTimeoutMs: 10000, Retry: &destinationv1.Retry{Limit: 1, GrpcCodes: []uint32{13}}},
		FailureAccrual: &destinationv1.FailureAccrual{ConsecutiveMaxFailures: 7, MinPenaltyMs: 1000, MaxPenaltyMs: 60000, JitterRatio: 0.5},
	}
}

// TestDecodeEveryField checks each field of a message built with the
// generated types.
func TestDecodeEveryField(t *testing.T) {
	tb := mustDecode(t, fullMessage())
	if !tb.Found() || tb.Authority() != authority || tb.String() != authority+": 2 routes, 2 rules" {
		t.Fatalf("table %v", tb)
	}
	if a, ok := tb.FailureAccrual(); !ok || a != (FailureAccrual{7, time.Second, time.Minute, 0.5}) {
		t.Errorf("failure accrual %+v, %v", a, ok)
	}
	if p := tb.ServicePolicy(); p.RequestTimeout != 10*time.Second || p.Retry.Limit != 1 || !slices.Equal(p.Retry.GRPCCodes, []uint32{13}) {
		t.Errorf("service policy %+v", p)
	}
	// The rules are ordered oldest route first.
	if r := tb.rules[0]; r.Route != (Ref{Kind: "grpcroute", Name: "old-site", Namespace: "shop"}) || r.Index != 0 || r.Redirect() == nil ||
		*r.Redirect() != (Redirect{Scheme: "https", Hostname: "new.example.com", Port: 8443, pathKind: fullPath, path: "/new", Status: 301}) {
		t.Errorf("rule 0: %+v, redirect %+v", r, r.Redirect())
	}
	r := &tb.rules[1]
	if r.Route != (Ref{Kind: "httproute", Name: "books", Namespace: "shop"}) || r.Redirect() != nil {
		t.Errorf("rule 1: %+v", r)
	}
	want := Policy{RequestTimeout: 1500 * time.Millisecond, BackendRequestTimeout: 500 * time.Millisecond, Retry: Retry{
		Limit: 3, HTTPStatuses: []StatusRange{{502, 504}}, GRPCCodes: []uint32{14}, Timeout: 200 * time.Millisecond}}
	if !equalPolicy(r.Policy, want) {
		t.Errorf("rule 1 policy %+v", r.Policy)
	}
	if r.request[0].set[0].Name != "x-set" || r.request[0].set[0].Canonical != "X-Set" || string(r.request[0].add[0].ValueBytes()) != "2" ||
		r.request[0].remove[0].Canonical != "X-Remove" || r.response[0].add[0].Value != "books" {
		t.Errorf("rule 1 filters %+v", r.headers)
	}
	bs := r.Backends()
	if len(bs) != 3 || bs[0].Authority != "books-v1.shop.svc.cluster.local:7002" || bs[0].Weight != 90 || bs[0].ModifiesRequest() ||
		!bs[1].ModifiesRequest() || bs[1].request[0].set[0].Value != "v2" || bs[2].Invalid != "no Service shop/gone" || bs[2].Weight != 0 {
		t.Errorf("backends %+v", bs)
	}
	if got := routed(t, tb, get("/books/1?v=2", "X-Canary", "1")); got != "httproute books/0" {
		t.Errorf("match: %q", got)
	}
	if got := routed(t, tb, request{"POST", "/books/1?v=2", []string{"X-Canary", "1"}}); got != "" {
		t.Errorf("method: %q", got)
	}
}

// TestDecodeNotFound: found=false is a table without routes, whatever else
// the message holds.
func TestDecodeNotFound(t *testing.T) {
	m := fullMessage()
	m.Found = false
	tb := mustDecode(t, m)
	if tb.Found() || len(tb.rules) != 0 || routed(t, tb, get("/old")) != "" || tb.String() != authority+": not a known Service" {
		t.Errorf("not found: %v", tb)
	}
	if _, ok := tb.FailureAccrual(); ok || tb.ServicePolicy().RequestTimeout != 0 {
		t.Error("not found, yet a policy")
	}
}

func TestDecodeErrors(t *testing.T) {
	withMatch := func(m *msgMatch) []byte {
		return marshal(t, routes(httpRoute("r", 1, rule(m))))
	}
	valid := marshal(t, fullMessage())
	packed := protowire.AppendTag(nil, 3, protowire.BytesType)
	packed = protowire.AppendBytes(packed, []byte{0xff})
	badPacked := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), // service_policy
		protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), packed)) // retry{grpc_codes: malformed}
	for _, tt := range []struct {
		name string
		msg  []byte
		want string
	}{
		{"bad path regex", withMatch(&msgMatch{Path: regex("(")}), "route 0: rule 0: match 0: path: invalid regular expression"},
		{"header without a name", withMatch(&msgMatch{Headers: []*policyv1.HeaderMatch{{}}}), "header: match without a name"},
		{"truncated", valid[:len(valid)-3], "malformed protobuf"},
		{"a group", protowire.AppendTag(slices.Clone(valid), 9, protowire.StartGroupType), "unsupported protobuf wire type"},
		{"malformed packed codes", badPacked, "grpc_codes"},
	} {
		tb, err := Decode(authority, tt.msg)
		if err == nil || tb != nil {
			t.Errorf("%s: Decode = %v, %v; want an error", tt.name, tb, err)
			continue
		}
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: error %q, want ErrMalformed and %q", tt.name, err, tt.want)
		}
	}
}

// TestDecodeTolerates: unknown fields, fields of the wrong wire type and
// unpacked repeated scalars decode as protobuf decodes them.
func TestDecodeTolerates(t *testing.T) {
	b := marshal(t, fullMessage())
	b = protowire.AppendVarint(protowire.AppendTag(b, 99, protowire.VarintType), 7)
	b = protowire.AppendString(protowire.AppendTag(b, 100, protowire.BytesType), "future")
	b = protowire.AppendVarint(protowire.AppendTag(b, 2, protowire.VarintType), 1) // routes with a wrong type
	// Unpacked grpc_codes in the service policy, merged into the first.
	codes := protowire.AppendVarint(protowire.AppendTag(nil, 3, protowire.VarintType), 4)
	retry := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), codes)
	b = protowire.AppendBytes(protowire.AppendTag(b, 3, protowire.BytesType), retry)
	tb, err := Decode(authority, b)
	if err != nil {
		t.Fatal(err)
	}
	if len(tb.rules) != 2 || !slices.Equal(tb.ServicePolicy().Retry.GRPCCodes, []uint32{13, 4}) {
		t.Errorf("table %v, service policy %+v", tb, tb.ServicePolicy())
	}
	var m msgRoutes
	if err := proto.Unmarshal(b, &m); err != nil || !slices.Equal(m.ServicePolicy.Retry.GrpcCodes, []uint32{13, 4}) {
		t.Errorf("the generated code decodes %v (%v)", m.ServicePolicy, err)
	}
}

// TestDecodeMerges: a message field that occurs twice merges and a oneof
// takes its last case, as protobuf specifies (a concatenation of two
// messages is their merge). The fuzz target checks the same on any input.
func TestDecodeMerges(t *testing.T) {
	a := fullMessage()
	b := &msgRoutes{
		Routes:        []*msgRoute{httpRoute("extra", 5, rule(&msgMatch{Path: exact("/extra")}))},
		ServicePolicy: &msgPolicy{BackendRequestTimeoutMs: 700},
	}
	concat := append(marshal(t, a), marshal(t, b)...)
	merged := proto.Clone(a).(*msgRoutes)
	proto.Merge(merged, b)
	got, err := Decode(authority, concat)
	if err != nil {
		t.Fatal(err)
	}
	if want := describe(mustDecode(t, merged)); describe(got) != want {
		t.Errorf("concatenation\n%s\nmerge\n%s", describe(got), want)
	}
	// Filter's oneof: the last case wins, and one repeated merges.
	f := marshal(t, requestHeaders(&destinationv1.HeaderModifier{Set: hdrs("X-A", "1")}))
	f = append(f, marshal(t, redirect(&destinationv1.Redirect{Hostname: "a.example"}))...)
	f = append(f, marshal(t, redirect(&destinationv1.Redirect{Port: 8080}))...)
	rb := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), f)
	routeB := protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), rb)
	msg := append(marshal(t, &msgRoutes{Found: true}), protowire.AppendBytes(protowire.AppendTag(nil, 2, protowire.BytesType), routeB)...)
	tb, err := Decode(authority, msg)
	if err != nil {
		t.Fatal(err)
	}
	if r := ruleOf(t, tb, "/"); r.ModifiesRequest() || r.Redirect() == nil || r.Redirect().Hostname != "a.example" || r.Redirect().Port != 8080 {
		t.Errorf("rule %+v, redirect %+v", r, r.Redirect())
	}
}
