package route

import (
	"fmt"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
)

// probeRequests are the fixed requests every decoded table is asked about.
var probeRequests = []request{
	get("/"),
	get("/books/1?v=2", "X-Canary", "1"),
	{"POST", "/api/v1/users?id=42&q=a+b", []string{"X-Canary", "true", "x-version", "v2"}},
	{"POST", "/shop.Books/Get", []string{"content-type", "application/grpc"}},
	get("/old"),
	get("/extra"),
}

// describe writes out everything a table decides, in a form that
// compares: its fields, every rule, and the rule (and match prefix) each
// probe request takes. It panics if the two request paths disagree.
func describe(t *Table) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s found=%v service=%s", t.Authority(), t.Found(), policyString(t.ServicePolicy()))
	if a, ok := t.FailureAccrual(); ok {
		fmt.Fprintf(&b, " accrual=%+v", a)
	}
	b.WriteString("\n")
	for i := range t.rules {
		r := &t.rules[i]
		fmt.Fprintf(&b, "rule %s/%d %s policy=%s headers=%s", r.Route, r.Index, r.Route.Namespace, policyString(r.Policy), headersString(&r.headers))
		if rd := r.Redirect(); rd != nil {
			fmt.Fprintf(&b, " redirect=%+v", *rd)
		}
		for _, be := range r.Backends() {
			fmt.Fprintf(&b, " backend=%q/%d/%q/%s", be.Authority, be.Weight, be.Invalid, headersString(&be.headers))
		}
		if r.only != nil {
			fmt.Fprintf(&b, " only=%q/%q", r.only.Authority, r.only.Invalid)
		}
		fmt.Fprintf(&b, " cumulative=%v\n", r.cumulative)
	}
	for _, pr := range probeRequests {
		var got [2]string
		for i, req := range pr.both() {
			rule, m := t.Route(&req)
			if rule != nil {
				p, ok := m.PathPrefix()
				got[i] = fmt.Sprintf("%s/%d prefix=%q,%v", rule.Route, rule.Index, p, ok)
			}
		}
		if got[0] != got[1] {
			panic(fmt.Sprintf("%+v: the fast path takes %s, net/http's %s", pr, got[0], got[1]))
		}
		fmt.Fprintf(&b, "%s %s -> %s\n", pr.method, pr.target, got[0])
	}
	return b.String()
}

func policyString(p Policy) string { return fmt.Sprintf("%+v", p) }

func headersString(h *headers) string {
	var b strings.Builder
	for _, list := range [][]HeaderModifier{h.request, h.response} {
		b.WriteString("[")
		for _, m := range list {
			for _, hs := range [][]Header{m.set, m.add, m.remove} {
				for _, x := range hs {
					fmt.Fprintf(&b, "%s=%q,", x.Name, x.Value)
				}
				b.WriteString(";")
			}
		}
		b.WriteString("]")
	}
	return b.String()
}

// seedTables are the fuzz target's seeds (besides testdata/fuzz).
func seedTables() []*msgRoutes {
	return []*msgRoutes{
		{}, {Found: true}, fullMessage(),
		routes(
			httpRoute("api", 2, rule(&msgMatch{Path: regex(`/api/v[0-9]+/users`), QueryParams: []*policyv1.QueryParamMatch{query("q", "a b")}}),
				&msgRule{Backends: []*msgBackend{backend("a:80", 1), backend("b:80", 3)}}),
			grpcRoute("books", 1, rule(&msgMatch{Path: exact("/shop.Books/Get")}, &msgMatch{Path: prefix("/shop.Books/"),
				Headers: []*policyv1.HeaderMatch{header("content-type", "application/grpc")}})),
			httpRoute("redirect", 1, &msgRule{Matches: []*msgMatch{{Path: prefix("/old")}}, Filters: []*msgFilter{redirect(&destinationv1.Redirect{
				Path: &destinationv1.PathModifier{Kind: &destinationv1.PathModifier_Prefix{Prefix: "/new"}}})}}),
		),
	}
}

// FuzzDecodeOutboundRoutes: Decode never panics; an error is an error with
// no table; and whatever the generated code makes of the input, marshalled
// again (canonical field order, merged fields, the last oneof case),
// decodes to a table that decides every fixed question the same way.
func FuzzDecodeOutboundRoutes(f *testing.F) {
	for _, m := range seedTables() {
		b, err := proto.Marshal(m)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
		f.Add(append(b, b...)) // a merge
	}
	f.Add([]byte{0x12, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		tb, err := Decode(authority, b)
		if (err == nil) == (tb == nil) {
			t.Fatalf("Decode = %v, %v", tb, err)
		}
		var got string
		if tb != nil {
			got = describe(tb)
		}
		var m msgRoutes
		if proto.Unmarshal(b, &m) != nil {
			return
		}
		b2, err2 := proto.MarshalOptions{Deterministic: true}.Marshal(&m)
		if err2 != nil {
			t.Fatal(err2)
		}
		tb2, err2 := Decode(authority, b2)
		if (err == nil) != (err2 == nil) {
			t.Fatalf("Decode of the input: %v; of the generated code's re-marshalling: %v", err, err2)
		}
		if tb2 == nil {
			return
		}
		if want := describe(tb2); got != want {
			t.Fatalf("the input decodes to\n%s\nthe generated code's re-marshalling to\n%s", got, want)
		}
	})
}
