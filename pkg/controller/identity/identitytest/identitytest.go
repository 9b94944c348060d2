// Package identitytest runs the controller's real identity service for
// tests: a fresh PKI (pki.Generate), local tokens and a gRPC server on a
// loopback port, stopped when the test ends. One home for what the proxy's
// identity, tap and control-plane tests each built by hand.
package identitytest

import (
	"net"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"

	identityv1 "github.com/conduitmesh/conduit/pkg/api/identity/v1"
	"github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/pki"
)

// Options configure Start.
type Options struct {
	// Tokens maps local tokens to the SPIFFE IDs they prove.
	Tokens map[string]string
	// Lifetime of the issued certificates (0: the service's default).
	Lifetime time.Duration
	// Register adds more services to the gRPC server (e.g. Destination).
	Register func(*grpc.Server)
}

// Service is a running identity service.
type Service struct {
	// Addr is the gRPC server's address (127.0.0.1:port).
	Addr string
	// Dir holds the PKI as --identity-issuer-dir reads it: ca.crt (the
	// trust anchors), tls.crt and tls.key (the issuer).
	Dir string
	// AnchorsFile is Dir/ca.crt.
	AnchorsFile string
	// TokensFile is the local tokens file the service reads.
	TokensFile string
	Issuer     *identity.Issuer
	Server     *identity.Server
}

// Start runs the service until the test ends.
func Start(t testing.TB, opts Options) *Service {
	t.Helper()
	dir := t.TempDir()
	p, err := pki.Generate(time.Now(), "cluster.local", 24*time.Hour, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.WriteDir(dir); err != nil {
		t.Fatal(err)
	}
	s := &Service{Dir: dir, AnchorsFile: filepath.Join(dir, "ca.crt"), TokensFile: filepath.Join(dir, "tokens.yaml")}
	s.SetTokens(t, opts.Tokens)
	if s.Issuer, err = identity.LoadIssuer(dir, "", time.Now()); err != nil {
		t.Fatal(err)
	}
	s.Server, err = identity.NewServer(identity.Config{
		TrustDomain: "cluster.local",
		Issuer:      s.Issuer,
		Tokens:      identity.LocalTokenFile{Path: s.TokensFile},
		Lifetime:    opts.Lifetime,
	})
	if err != nil {
		t.Fatal(err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	identityv1.RegisterIdentityServer(gs, s.Server)
	if opts.Register != nil {
		opts.Register(gs)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	s.Addr = lis.Addr().String()
	return s
}

// SetTokens replaces the local tokens (token → SPIFFE ID); the service
// reads the file at every request.
func (s *Service) SetTokens(t testing.TB, tokens map[string]string) {
	t.Helper()
	var lt identity.LocalTokens
	for tok, id := range tokens {
		lt.Tokens = append(lt.Tokens, identity.LocalToken{Token: tok, Identity: id})
	}
	if err := identity.WriteLocalTokens(s.TokensFile, lt); err != nil {
		t.Fatal(err)
	}
}
