package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/contract"
	ctldestination "github.com/conduitmesh/conduit/pkg/controller/destination"
	"github.com/conduitmesh/conduit/pkg/controller/discovery/local"
	"github.com/conduitmesh/conduit/pkg/controller/identity/identitytest"
	"github.com/conduitmesh/conduit/pkg/proxy/sidecar"
)

func parseControlPlane(t *testing.T, args ...string) *sidecar.ControlPlane {
	t.Helper()
	return parseControlPlaneEnv(t, nil, args...)
}

func parseControlPlaneEnv(t *testing.T, env map[string]string, args ...string) *sidecar.ControlPlane {
	t.Helper()
	o, err := parseRunOptions(args, func(k string) string { return env[k] }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	return &o.ControlPlane
}

func TestConnectRejectsIncompleteFlags(t *testing.T) {
	dir := t.TempDir()
	anchors := filepath.Join(dir, "ca.crt")
	os.WriteFile(anchors, []byte("garbage"), 0o600)
	const id = "spiffe://cluster.local/ns/demo/sa/web"
	const badPEM = "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n"
	tests := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{"--identity-name", id}, nil, "--identity-name needs --controller-addr"},
		{nil, map[string]string{"CONDUIT_PROXY_TRUST_ANCHORS": badPEM}, "--trust-anchors needs --controller-addr"},
		{[]string{"--controller-addr", "127.0.0.1:1", "--identity-name", id, "--identity-token-file", "t", "--trust-anchors-file", anchors},
			map[string]string{"CONDUIT_PROXY_TRUST_ANCHORS": badPEM}, "--trust-anchors and --trust-anchors-file are both set"},
		{[]string{"--controller-addr", "127.0.0.1:1", "--identity-name", id, "--identity-token-file", "t"},
			map[string]string{"CONDUIT_PROXY_TRUST_ANCHORS": badPEM}, "--trust-anchors (CONDUIT_PROXY_TRUST_ANCHORS): certificate 1:"},
		{[]string{"--controller-addr", "127.0.0.1:1", "--controller-identity", "spiffe://cluster.local/ns/conduit/sa/conduit-controller", "--trust-anchors", "garbage"},
			nil, "--trust-anchors (CONDUIT_PROXY_TRUST_ANCHORS): no PEM certificate"},
		{[]string{"--controller-addr", "nope"}, nil, "--controller-addr \"nope\": want HOST:PORT"},
		{[]string{"--controller-addr", "127.0.0.1:1", "--identity-name", id, "--identity-token-file", "t"}, nil, "--trust-anchors-file (or --trust-anchors) is required"},
		{[]string{"--controller-addr", "127.0.0.1:1", "--identity-name", id, "--trust-anchors-file", anchors}, nil, "--identity-token-file is required"},
		{[]string{"--controller-addr", "127.0.0.1:1", "--identity-token-file", "t"}, nil, "needs --identity-name"},
		{[]string{"--controller-addr", "127.0.0.1:1", "--identity-name", "web", "--identity-token-file", "t", "--trust-anchors-file", anchors}, nil, "--identity-name: \"web\" is not a SPIFFE ID"},
		{[]string{"--controller-addr", "127.0.0.1:1", "--identity-name", id, "--identity-token-file", "t", "--trust-anchors-file", anchors}, nil, "--trust-anchors-file: trust anchors file"},
		{[]string{"--controller-addr", "127.0.0.1:1", "--controller-identity", "x", "--trust-anchors-file", anchors}, nil, "--controller-identity: \"x\" is not a SPIFFE ID"},
		{[]string{"--default-inbound-policy", "allow"}, nil, "--default-inbound-policy: \"allow\" is not a default inbound policy: want all-unauthenticated,"},
	}
	for _, tt := range tests {
		o := parseControlPlaneEnv(t, tt.env, tt.args...)
		_, err := o.Connect(context.Background(), slog.New(slog.DiscardHandler))
		if err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%v: err = %v, want %q", tt.args, err, tt.want)
		}
	}
	pl, err := parseControlPlane(t).Connect(context.Background(), slog.New(slog.DiscardHandler))
	if err != nil || pl.Resolver != nil || pl.TLS != nil || pl.Policy != nil {
		t.Errorf("no flags: %+v, %v; want an empty plane", pl, err)
	} else {
		pl.Close()
	}
}

// TestConnectToController wires connect to the real controller services
// (local discovery, local tokens) on a loopback port: the resolver answers
// for a pod's short name and the identity provider gets its certificate.
func TestConnectToController(t *testing.T) {
	const webID = "spiffe://cluster.local/ns/demo/sa/web"
	regPath := filepath.Join(t.TempDir(), "registry.yaml")
	if err := local.WriteFile(regPath, local.Registry{Services: []local.Service{{
		Name: "books", Namespace: "demo", Port: 8080,
		Endpoints: []local.Endpoint{{Address: "127.0.0.1:4143", Identity: "spiffe://cluster.local/ns/demo/sa/books"}},
	}}}); err != nil {
		t.Fatal(err)
	}
	backend, err := local.New(local.Options{Path: regPath})
	if err != nil {
		t.Fatal(err)
	}
	dst, err := ctldestination.NewServer(backend, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	svc := identitytest.Start(t, identitytest.Options{
		Tokens:   map[string]string{"tok": webID},
		Register: func(gs *grpc.Server) { destinationv1.RegisterDestinationServer(gs, dst) },
	})
	dir := svc.Dir

	tokenFile := filepath.Join(dir, "token")
	os.WriteFile(tokenFile, []byte("tok\n"), 0o600)
	caPEM, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"--controller-addr", svc.Addr, "--identity-name", webID, "--identity-token-file", tokenFile}
	// The trust anchors as a file, and as PEM text in the environment (what
	// the injector sets).
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
	}{
		{"file", append(base, "--trust-anchors-file", filepath.Join(dir, "ca.crt")), nil},
		{"env", base, map[string]string{contract.Env(contract.FlagTrustAnchors): string(caPEM)}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			connectAndCertify(t, parseControlPlaneEnv(t, tc.env, tc.args...), webID)
		})
	}
}

func connectAndCertify(t *testing.T, o *sidecar.ControlPlane, webID string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	pl, err := o.Connect(ctx, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	defer pl.Close()
	res, provider := pl.Resolver, pl.TLS

	// The namespace comes from the identity: "books:8080" is books.demo.
	eps, err := res.Endpoints(ctx, "books:8080")
	if err != nil || len(eps) != 1 || eps[0].Addr != "127.0.0.1:4143" || eps[0].Identity != "spiffe://cluster.local/ns/demo/sa/books" {
		t.Fatalf("Endpoints = %+v, %v", eps, err)
	}
	if provider.LocalID() != webID {
		t.Fatalf("LocalID = %q", provider.LocalID())
	}
	ready := provider.(interface{ Ready() bool })
	for !ready.Ready() {
		if ctx.Err() != nil {
			t.Fatal("no certificate")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if provider.ServerConfig() == nil || provider.ClientConfig("spiffe://cluster.local/ns/demo/sa/books") == nil {
		t.Fatal("nil TLS configs with a certificate")
	}
}
