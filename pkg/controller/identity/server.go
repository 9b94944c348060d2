// Package identity is the controller's certificate authority: it checks that
// a proxy's token proves the identity it asks for and signs a short-lived
// certificate whose URI SAN is that SPIFFE ID.
package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/x509"
	"errors"
	"log/slog"
	"slices"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	identityv1 "github.com/conduitmesh/conduit/pkg/api/identity/v1"
)

// DefaultLifetime is how long issued certificates are valid.
const DefaultLifetime = 24 * time.Hour

// Config configures a Server.
type Config struct {
	TrustDomain string
	Issuer      *Issuer
	Tokens      TokenValidator
	// Lifetime of issued certificates; default DefaultLifetime.
	Lifetime time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
	Log *slog.Logger
	// Registerer, when not nil, gets the server's metrics.
	Registerer prometheus.Registerer
}

// Server implements identityv1.IdentityServer.
type Server struct {
	identityv1.UnimplementedIdentityServer

	cfg       Config
	issuer    atomic.Pointer[Issuer]
	own       ownCert
	certified *prometheus.CounterVec
}

// NewServer checks cfg and returns a server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.TrustDomain == "" || cfg.Issuer == nil || cfg.Tokens == nil {
		return nil, errors.New("identity server needs a trust domain, an issuer and a token validator")
	}
	if cfg.Lifetime <= 0 {
		cfg.Lifetime = DefaultLifetime
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{
		cfg: cfg,
		certified: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "identity_certify_total",
			Help: "Certify calls, by gRPC result code.",
		}, []string{"code"}),
	}
	s.issuer.Store(cfg.Issuer)
	if cfg.Registerer != nil {
		if err := cfg.Registerer.Register(s.certified); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// SetIssuer replaces the issuer, e.g. after the issuer secret was rotated.
func (s *Server) SetIssuer(is *Issuer) { s.issuer.Store(is) }

// Certify implements identityv1.IdentityServer.
func (s *Server) Certify(ctx context.Context, req *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
	resp, err := s.certify(ctx, req)
	s.certified.WithLabelValues(status.Code(err).String()).Inc()
	if err != nil {
		s.cfg.Log.Info("certify refused", "identity", req.GetIdentity(), "err", err)
	}
	return resp, err
}

func (s *Server) certify(ctx context.Context, req *identityv1.CertifyRequest) (*identityv1.CertifyResponse, error) {
	id, err := ParseID(req.GetIdentity())
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if id.TrustDomain != s.cfg.TrustDomain {
		return nil, status.Errorf(codes.InvalidArgument, "identity %s is not in trust domain %s", id, s.cfg.TrustDomain)
	}
	if len(req.GetToken()) == 0 {
		return nil, status.Error(codes.Unauthenticated, "missing token")
	}
	csr, err := x509.ParseCertificateRequest(req.GetCertificateSigningRequest())
	if err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate signing request: %v", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, status.Errorf(codes.InvalidArgument, "certificate signing request: %v", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "certificate signing request has a %T key, want ECDSA", csr.PublicKey)
	}

	ns, sa, err := s.cfg.Tokens.Validate(ctx, req.GetToken())
	switch {
	case errors.Is(err, ErrInvalidToken):
		return nil, status.Error(codes.Unauthenticated, err.Error())
	case err != nil:
		s.cfg.Log.Error("validating token", "identity", id.String(), "err", err)
		return nil, status.Errorf(codes.Unavailable, "cannot validate token now: %v", err)
	}
	proven := ID{TrustDomain: s.cfg.TrustDomain, Namespace: ns, ServiceAccount: sa}
	if proven != id {
		return nil, status.Errorf(codes.PermissionDenied, "token proves identity %s, not %s", proven, id)
	}
	uris := make([]string, len(csr.URIs))
	for i, u := range csr.URIs {
		uris[i] = u.String()
	}
	if !slices.Equal(uris, []string{id.String()}) || len(csr.DNSNames)+len(csr.IPAddresses)+len(csr.EmailAddresses) > 0 {
		return nil, status.Errorf(codes.PermissionDenied, "certificate signing request must name exactly %s as its URI SAN and nothing else, not %v", id, append(uris, csr.DNSNames...))
	}

	now := s.cfg.Now()
	leaf, chain, notAfter, err := s.issuer.Load().Issue(id, pub, now, s.cfg.Lifetime)
	if err != nil {
		s.cfg.Log.Error("issuing certificate", "identity", id.String(), "err", err)
		return nil, status.Errorf(codes.Internal, "issuing certificate: %v", err)
	}
	s.cfg.Log.Info("certified", "identity", id.String(), "valid_until", notAfter.UTC().Format(time.RFC3339))
	return &identityv1.CertifyResponse{
		LeafCertificate:          leaf,
		IntermediateCertificates: chain,
		ValidUntil:               timestamppb.New(notAfter),
	}, nil
}
