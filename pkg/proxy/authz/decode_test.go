package authz

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
)

func TestDecodeErrors(t *testing.T) {
	withAuthz := func(a *policyv1.Authorization) []byte {
		return marshal(t, &policyv1.InboundServer{Authorizations: []*policyv1.Authorization{a}})
	}
	withMatch := func(m *policyv1.HttpMatch) []byte {
		return marshal(t, &policyv1.InboundServer{HttpRoutes: []*policyv1.HttpRoute{httpRoute("r", []*policyv1.HttpMatch{m})}})
	}
	valid := marshal(t, defaultPolicy("deny"))
	tests := []struct {
		name string
		msg  []byte
		want string
	}{
		{"CIDR out of range", withAuthz(unauthenticated("a", nets("10.0.0.0/33")...)), `authorization 0: network 0: invalid CIDR "10.0.0.0/33"`},
		{"not a CIDR", withAuthz(unauthenticated("a", nets("ten")...)), `invalid CIDR "ten"`},
		{"no CIDR", withAuthz(unauthenticated("a", &policyv1.Network{Except: []string{"10.0.0.0/8"}})), `invalid CIDR ""`},
		{"a zone", withAuthz(unauthenticated("a", nets("fe80::1%eth0")...)), `invalid CIDR`},
		{"bad except", withAuthz(unauthenticated("a", &policyv1.Network{Cidr: "10.0.0.0/8", Except: []string{"10.1/16"}})), `except: invalid CIDR "10.1/16"`},
		{"bad path regex", withMatch(&policyv1.HttpMatch{Path: regex("(")}), "route 0: match 0: path: invalid regular expression"},
		{"regex that anchoring would change", withMatch(&policyv1.HttpMatch{Path: regex("a)|(b")}), "invalid regular expression"},
		{"long regex", withMatch(&policyv1.HttpMatch{Path: regex(strings.Repeat("a", httpmatch.MaxRegex+1))}), "longer than 4096"},
		{"bad header regex", withMatch(&policyv1.HttpMatch{Headers: []*policyv1.HeaderMatch{headerRegex("x", "[")}}), "header: x: invalid regular expression"},
		{"bad query regex", withMatch(&policyv1.HttpMatch{QueryParams: []*policyv1.QueryParamMatch{queryRegex("q", "*")}}), "query parameter: q: invalid"},
		{"header without a name", withMatch(&policyv1.HttpMatch{Headers: []*policyv1.HeaderMatch{{Value: &policyv1.HeaderMatch_Exact{Exact: "x"}}}}), "header: match without a name"},
		{"query parameter without a name", withMatch(&policyv1.HttpMatch{QueryParams: []*policyv1.QueryParamMatch{{}}}), "query parameter: match without a name"},
		{"truncated", valid[:len(valid)-3], "malformed protobuf"},
		{"a group", protowire.AppendTag(slices.Clone(valid), 9, protowire.StartGroupType), "unsupported protobuf wire type"},
		{"malformed unauthenticated", withRaw(3, protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), []byte{0xff})), "malformed protobuf"},
		{"route authorization", marshal(t, &policyv1.InboundServer{HttpRoutes: []*policyv1.HttpRoute{
			httpRoute("r", nil, unauthenticated("a", nets("x")...))}}), "route 0: authorization 0: network 0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := Decode(tt.msg)
			if err == nil || s != nil {
				t.Fatalf("Decode = %v, %v; want an error", s, err)
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q, want ErrMalformed and %q", err, tt.want)
			}
		})
	}
	long := strings.Repeat("x", 500)
	_, err := Decode(withAuthz(unauthenticated("a", nets(long)...)))
	if err == nil || len(err.Error()) > 200 {
		t.Errorf("error for a long CIDR: %v", err)
	}
}

// withRaw is an InboundServer whose field num holds raw bytes.
func withRaw(num protowire.Number, raw []byte) []byte {
	return protowire.AppendBytes(protowire.AppendTag(nil, num, protowire.BytesType), raw)
}

// TestDecodeTolerates: what a newer controller may send decodes.
func TestDecodeTolerates(t *testing.T) {
	base := marshal(t, &policyv1.InboundServer{Server: pref("server", "web"), Protocol: policyv1.Protocol_HTTP1,
		Authorizations: []*policyv1.Authorization{meshTLS("a", []string{id("a", "b")}, nil)}})
	unknown := slices.Clone(base)
	unknown = protowire.AppendVarint(protowire.AppendTag(unknown, 99, protowire.VarintType), 7)
	unknown = protowire.AppendString(protowire.AppendTag(unknown, 100, protowire.BytesType), "future")
	unknown = protowire.AppendFixed32(protowire.AppendTag(unknown, 101, protowire.Fixed32Type), 1)
	unknown = protowire.AppendFixed64(protowire.AppendTag(unknown, 102, protowire.Fixed64Type), 1)
	unknown = protowire.AppendVarint(protowire.AppendTag(unknown, 1, protowire.VarintType), 1) // server with a wrong type
	s, err := Decode(unknown)
	if err != nil {
		t.Fatal(err)
	}
	if s.Ref().Name != "web" || s.Protocol() != ProtocolHTTP1 || !s.AllowConn(meshed("10.1.1.1", id("a", "b"))).Allowed {
		t.Errorf("unknown fields changed the policy: %v", s)
	}
	// Enums are int32 on the wire: protobuf truncates a wider varint.
	trunc := protowire.AppendVarint(protowire.AppendTag(slices.Clone(base), 2, protowire.VarintType), 1<<32|4)
	if s, err := Decode(trunc); err != nil || s.Protocol() != ProtocolOpaque {
		t.Errorf("protocol 1<<32|4: %v, %v", s, err)
	}
	var m policyv1.InboundServer
	if err := proto.Unmarshal(trunc, &m); err != nil || m.Protocol != policyv1.Protocol_OPAQUE {
		t.Errorf("the generated code decodes protocol 1<<32|4 as %v (%v)", m.Protocol, err)
	}
}

// TestDecodeMerges: a message field that occurs twice merges, and a oneof
// takes the last case, as protobuf specifies (a concatenation of two
// messages is their merge). The fuzz target checks the same on any input.
func TestDecodeMerges(t *testing.T) {
	a := &policyv1.InboundServer{
		Server:         &policyv1.Ref{Kind: "server", Name: "web"},
		Authorizations: []*policyv1.Authorization{meshTLS("a", []string{id("a", "b")}, nil)},
		HttpRoutes:     []*policyv1.HttpRoute{httpRoute("r1", []*policyv1.HttpMatch{{Path: exact("/a")}})},
	}
	b := &policyv1.InboundServer{
		Server:         &policyv1.Ref{Namespace: "shop"},
		Protocol:       policyv1.Protocol_GRPC,
		Authorizations: []*policyv1.Authorization{unauthenticated("b", nets("10.0.0.0/8")...)},
		HttpRoutes:     []*policyv1.HttpRoute{httpRoute("r2", []*policyv1.HttpMatch{{Path: prefix("/b")}}, unauthenticated("r2"))},
		FailClosed:     true,
	}
	concat := append(marshal(t, a), marshal(t, b)...)
	merged := proto.Clone(a).(*policyv1.InboundServer)
	proto.Merge(merged, b)
	got, err := Decode(concat)
	if err != nil {
		t.Fatal(err)
	}
	want := mustDecode(t, merged)
	if d1, d2 := probe(got), probe(want); !d1.equal(d2) {
		t.Errorf("concatenation decided %v\nmerge decided %v", d1, d2)
	}
	if got.Ref() != (Ref{Kind: "server", Name: "web", Namespace: "shop"}) {
		t.Errorf("merged ref %+v", got.Ref())
	}

	// An authorization's authentication: mesh_tls twice merges; the last case wins.
	auth := func(parts ...[]byte) *Server {
		var body []byte
		for _, p := range parts {
			body = append(body, p...)
		}
		s, err := Decode(withRaw(3, body))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	mesh := func(identity string) []byte {
		inner := protowire.AppendString(protowire.AppendTag(nil, 1, protowire.BytesType), identity)
		return protowire.AppendBytes(protowire.AppendTag(nil, 4, protowire.BytesType), inner)
	}
	open := protowire.AppendBytes(protowire.AppendTag(nil, 3, protowire.BytesType), nil)
	s := auth(mesh(id("a", "1")), mesh(id("a", "2")))
	if !s.AllowConn(meshed("10.1.1.1", id("a", "1"))).Allowed || !s.AllowConn(meshed("10.1.1.1", id("a", "2"))).Allowed {
		t.Error("mesh_tls twice does not merge")
	}
	if s := auth(mesh(id("a", "1")), open); !s.AllowConn(plain("10.1.1.1")).Allowed {
		t.Error("unauthenticated after mesh_tls does not win")
	}
	s = auth(mesh(id("a", "1")), open, mesh(id("a", "2")))
	if s.AllowConn(plain("10.1.1.1")).Allowed || s.AllowConn(meshed("10.1.1.1", id("a", "1"))).Allowed ||
		!s.AllowConn(meshed("10.1.1.1", id("a", "2"))).Allowed {
		t.Error("mesh_tls after unauthenticated does not start over")
	}
}

// TestDecodeUnknownConditions: a match holding a field the proxy does not
// know — a condition of a newer controller — never matches, rather than
// matching more requests than it should; a route with no other match is
// then unreachable.
func TestDecodeUnknownConditions(t *testing.T) {
	unknownField := protowire.AppendString(protowire.AppendTag(nil, 15, protowire.BytesType), "future")
	routes := func(match []byte) *Server {
		t.Helper()
		r := append(marshal(t, &policyv1.HttpRoute{Ref: pref("httproute", "future"), Authorizations: []*policyv1.Authorization{unauthenticated("a")}}),
			withRaw(2, match)...)
		b := append(withRaw(4, r), withRaw(4, marshal(t, httpRoute("known", []*policyv1.HttpMatch{{Path: prefix("/known")}})))...)
		s, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for name, match := range map[string][]byte{
		"in the match":                    append(marshal(t, &policyv1.HttpMatch{Path: prefix("/")}), unknownField...),
		"in the path":                     withRaw(1, append(marshal(t, prefix("/")), unknownField...)),
		"in a header":                     withRaw(2, append(marshal(t, header("x", "y")), unknownField...)),
		"in a query":                      withRaw(3, append(marshal(t, queryParam("x", "y")), unknownField...)),
		"a known field of the wrong type": protowire.AppendVarint(protowire.AppendTag(marshal(t, &policyv1.HttpMatch{Path: prefix("/")}), 4, protowire.VarintType), 1),
	} {
		s := routes(match)
		if d := s.AllowRequest(plain("10.1.1.1"), get("/x", "x", "y")); d.Status != 404 {
			t.Errorf("unknown field %s: %+v, want 404", name, d)
		}
		if d := s.AllowRequest(plain("10.1.1.1"), get("/known")); d.Route.Name != "known" {
			t.Errorf("unknown field %s: the other route: %+v", name, d)
		}
	}
	// Without the unknown field the same match is an ordinary one.
	s := routes(marshal(t, &policyv1.HttpMatch{Path: prefix("/")}))
	if d := s.AllowRequest(plain("10.1.1.1"), get("/x")); !d.Allowed || d.Route.Name != "future" {
		t.Errorf("the known match: %+v", d)
	}
}
