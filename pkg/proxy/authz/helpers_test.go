package authz

import (
	"net/netip"
	"testing"

	"google.golang.org/protobuf/proto"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch/httpmatchtest"
)

// Builders of policyv1 messages: tests marshal with the generated types and
// decode with Decode, so every test also checks the hand decoder.

const td = "spiffe://cluster.local"

func id(ns, sa string) string { return td + "/ns/" + ns + "/sa/" + sa }

func pref(kind, name string) *policyv1.Ref { return &policyv1.Ref{Kind: kind, Name: name} }

func nets(cidrs ...string) []*policyv1.Network {
	var ns []*policyv1.Network
	for _, c := range cidrs {
		ns = append(ns, &policyv1.Network{Cidr: c})
	}
	return ns
}

func unauthenticated(name string, networks ...*policyv1.Network) *policyv1.Authorization {
	return &policyv1.Authorization{Ref: pref("authorizationpolicy", name), Networks: networks,
		Authentication: &policyv1.Authorization_Unauthenticated{Unauthenticated: &policyv1.Unauthenticated{}}}
}

func meshTLS(name string, identities, prefixes []string, networks ...*policyv1.Network) *policyv1.Authorization {
	return &policyv1.Authorization{Ref: pref("authorizationpolicy", name), Networks: networks,
		Authentication: &policyv1.Authorization_MeshTls{MeshTls: &policyv1.MeshTLS{Identities: identities, Prefixes: prefixes}}}
}

// Match builders.
var (
	exact, prefix, regex   = httpmatchtest.Exact, httpmatchtest.Prefix, httpmatchtest.Regex
	header, headerRegex    = httpmatchtest.Header, httpmatchtest.HeaderRegex
	queryParam, queryRegex = httpmatchtest.Query, httpmatchtest.QueryRegex
)

func httpRoute(name string, matches []*policyv1.HttpMatch, authz ...*policyv1.Authorization) *policyv1.HttpRoute {
	return &policyv1.HttpRoute{Ref: pref("httproute", name), Matches: matches, Authorizations: authz}
}

// The default policies, as the controller sends them for a port no Server
// selects. Cluster networks are 10.0.0.0/8 and fd00::/8 here.
var clusterNets = []string{"10.0.0.0/8", "fd00::/8"}

func defaultPolicy(name string) *policyv1.InboundServer {
	ref := pref("default", name)
	m := &policyv1.InboundServer{Server: ref, FailClosed: name != "all-unauthenticated"}
	add := func(a *policyv1.Authorization) {
		a.Ref = ref
		m.Authorizations = append(m.Authorizations, a)
	}
	switch name {
	case "all-unauthenticated":
		add(unauthenticated("", nets("0.0.0.0/0", "::/0")...))
	case "cluster-unauthenticated":
		add(unauthenticated("", nets(clusterNets...)...))
	case "all-authenticated":
		add(meshTLS("", nil, []string{""}, nets("0.0.0.0/0", "::/0")...))
	case "cluster-authenticated":
		add(meshTLS("", nil, []string{""}, nets(clusterNets...)...))
	case "deny":
		// Kubelet probes still pass: the probe route admits anyone; every
		// other request takes the catch-all route, which admits nobody.
		probe := &policyv1.HttpRoute{Ref: pref("probe", "probe"),
			Matches: []*policyv1.HttpMatch{
				{Path: exact("/ready"), Method: "GET"},
				{Path: exact("/live"), Method: "GET"},
			},
			Authorizations: []*policyv1.Authorization{{Ref: pref("default", "probe"),
				Authentication: &policyv1.Authorization_Unauthenticated{Unauthenticated: &policyv1.Unauthenticated{}}}}}
		m.HttpRoutes = []*policyv1.HttpRoute{probe, {Ref: pref("default", "default")}}
	}
	return m
}

func marshal(t testing.TB, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustDecode(t testing.TB, m *policyv1.InboundServer) *Server {
	t.Helper()
	s, err := Decode(marshal(t, m))
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	return s
}

// Clients.
func plain(addr string) Conn { return Conn{Client: netip.MustParseAddr(addr)} }

func meshed(addr, identity string) Conn {
	return Conn{Client: netip.MustParseAddr(addr), TLS: true, Identity: identity}
}

// get is a GET of target on the fast path, with header fields name, value, …
func get(target string, hdr ...string) Request { return req("GET", target, hdr...) }

func req(method, target string, hdr ...string) Request {
	var fs []Field
	for i := 0; i+1 < len(hdr); i += 2 {
		fs = append(fs, Field{Name: []byte(hdr[i]), Value: []byte(hdr[i+1])})
	}
	return FieldsRequest([]byte(method), []byte(target), fs)
}
