// Package identity is the proxy's workload identity: it keeps an ECDSA P-256
// key in memory (never written anywhere), has the controller's
// Identity.Certify sign a certificate for the proxy's SPIFFE ID, renews it at
// 70 % of its lifetime, and implements tlsconf.Provider so that every
// meshed connection is mutual TLS verified against the trust anchors.
package identity

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/tlsconf"

	"github.com/conduitmesh/conduit/pkg/pki"
)

// Unary makes a unary gRPC call; *grpcwire.Conn implements it.
type Unary interface {
	Unary(ctx context.Context, method string, req []byte) ([]byte, error)
}

// Config configures a Provider.
type Config struct {
	// Name is the SPIFFE ID to request: spiffe://<td>/ns/<ns>/sa/<sa>.
	Name string
	// TokenFile holds the token proving Name (a projected service-account
	// token, or a local demo token). It is re-read before every Certify
	// call because projected tokens rotate.
	TokenFile string
	// TrustAnchors verify the certificates the controller issues and every
	// meshed peer's.
	TrustAnchors *x509.CertPool
	// Client reaches the controller's Identity service.
	Client Unary
	// RenewFraction is the share of a certificate's lifetime after which it
	// is renewed; default 0.7.
	RenewFraction float64
	// RetryBase and RetryMax bound the delay between failed Certify calls;
	// defaults 1 s and 1 min.
	RetryBase, RetryMax time.Duration
	// CallTimeout bounds one Certify call; default 10 s.
	CallTimeout time.Duration
	Log         *slog.Logger
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Provider implements tlsconf.Provider. Run obtains and renews the
// certificate; until the first one arrives ServerConfig and ClientConfig
// return nil and Ready reports false.
type Provider struct {
	cfg   Config
	key   *ecdsa.PrivateKey
	id    *url.URL
	cert  atomic.Pointer[tls.Certificate]
	ready chan struct{} // closed when the first certificate arrives
	once  sync.Once

	server   *tls.Config
	sessions tls.ClientSessionCache

	mu      sync.Mutex             // guards clients
	clients map[string]*tls.Config // by server identity

	verified verifiedCache
}

// New validates cfg and generates the proxy's key.
func New(cfg Config) (*Provider, error) {
	id, err := ParseSPIFFEID(cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("identity name: %w", err)
	}
	if cfg.TrustAnchors == nil {
		return nil, errors.New("identity needs trust anchors")
	}
	if cfg.Client == nil || cfg.TokenFile == "" {
		return nil, errors.New("identity needs a controller client and a token file")
	}
	if cfg.RenewFraction <= 0 || cfg.RenewFraction >= 1 {
		cfg.RenewFraction = 0.7
	}
	if cfg.RetryBase <= 0 {
		cfg.RetryBase = time.Second
	}
	if cfg.RetryMax <= 0 {
		cfg.RetryMax = time.Minute
	}
	if cfg.CallTimeout <= 0 {
		cfg.CallTimeout = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating the proxy's key: %w", err)
	}
	p := &Provider{
		cfg:      cfg,
		key:      key,
		id:       id,
		ready:    make(chan struct{}),
		sessions: tls.NewLRUClientSessionCache(256),
		clients:  map[string]*tls.Config{},
	}
	p.server = &tls.Config{
		MinVersion:     tls.VersionTLS13,
		NextProtos:     []string{tlsconf.ALPN},
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.current() },
		ClientAuth:     tls.RequireAnyClientCert,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := p.verifyPeer(cs.PeerCertificates, "")
			return err
		},
	}
	return p, nil
}

// LoadTrustAnchors reads a PEM bundle of trust anchor certificates.
func LoadTrustAnchors(path string) (*x509.CertPool, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading trust anchors: %w", err)
	}
	pool, err := pki.Pool(data)
	if err != nil {
		return nil, fmt.Errorf("trust anchors file %s: %w", path, err)
	}
	return pool, nil
}

// ParseSPIFFEID checks that s is spiffe://<trust-domain>/ns/<ns>/sa/<sa>.
func ParseSPIFFEID(s string) (*url.URL, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil || u.Port() != "" || u.RawPath != "" {
		return nil, fmt.Errorf("%q is not a SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)", s)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	// Only the form the URL prints back (lower-case scheme, no escapes) is
	// accepted: it is what the issued certificate's URI SAN will say. The
	// controller's ParseID (pkg/controller/identity) accepts the same names.
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" ||
		u.String() != s || "spiffe://"+u.Host+u.Path != s {
		return nil, fmt.Errorf("%q is not a SPIFFE ID (spiffe://<trust-domain>/ns/<ns>/sa/<sa>)", s)
	}
	return u, nil
}

// LocalID implements tlsconf.Provider.
func (p *Provider) LocalID() string { return p.cfg.Name }

// Ready reports whether the proxy holds a certificate that has not expired:
// the proxy's /ready reflects it when identity is configured.
func (p *Provider) Ready() bool {
	c := p.cert.Load()
	return c != nil && p.cfg.Now().Before(c.Leaf.NotAfter)
}

// WaitReady blocks until the first certificate arrives or ctx ends.
func (p *Provider) WaitReady(ctx context.Context) error {
	select {
	case <-p.ready:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the proxy's certificate: %w", ctx.Err())
	}
}

// Certificate returns the current certificate, or nil before the first.
func (p *Provider) Certificate() *tls.Certificate { return p.cert.Load() }

// ServerConfig implements tlsconf.Provider: it terminates mTLS from meshed
// peers, requiring a client certificate that chains to the trust anchors
// and carries a SPIFFE ID. It is nil until the first certificate arrives.
func (p *Provider) ServerConfig() *tls.Config {
	if p.cert.Load() == nil {
		return nil
	}
	return p.server
}

// ClientConfig implements tlsconf.Provider: it presents the proxy's
// certificate and accepts only a server whose certificate chains to the
// trust anchors and names serverID as its URI SAN. It is nil until the
// first certificate arrives.
func (p *Provider) ClientConfig(serverID string) *tls.Config {
	if p.cert.Load() == nil {
		return nil
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if c, ok := p.clients[serverID]; ok {
		return c
	}
	if len(p.clients) >= 4096 {
		clear(p.clients) // bound memory against churn of identities
	}
	c := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{tlsconf.ALPN},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			return p.current()
		},
		// The standard verification checks DNS names; a meshed peer is
		// verified by its SPIFFE ID in VerifyConnection instead (which also
		// runs on resumed sessions).
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := p.verifyPeer(cs.PeerCertificates, serverID)
			return err
		},
		ClientSessionCache: p.sessions,
	}
	p.clients[serverID] = c
	return c
}

func (p *Provider) current() (*tls.Certificate, error) {
	c := p.cert.Load()
	if c == nil {
		return nil, errors.New("the proxy has no certificate yet")
	}
	return c, nil
}

// verifyPeer checks that chain[0] chains to the trust anchors and carries a
// SPIFFE ID (equal to want, when set); it returns that ID.
func (p *Provider) verifyPeer(chain []*x509.Certificate, want string) (string, error) {
	if len(chain) == 0 {
		return "", errors.New("peer presented no certificate")
	}
	leaf := chain[0]
	now := p.cfg.Now()
	key := chainKey(chain)
	if !p.verified.ok(key, now) {
		inter := x509.NewCertPool()
		for _, c := range chain[1:] {
			inter.AddCert(c)
		}
		chains, err := leaf.Verify(x509.VerifyOptions{
			Roots:         p.cfg.TrustAnchors,
			Intermediates: inter,
			CurrentTime:   now,
			KeyUsages:     []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
		})
		if err != nil {
			return "", fmt.Errorf("peer certificate: %w", err)
		}
		p.verified.add(key, chains)
	}
	id := PeerID(chain)
	if id == "" {
		return "", errors.New("peer certificate has no SPIFFE ID")
	}
	if want != "" && id != want {
		return "", fmt.Errorf("peer identity is %s, want %s", id, want)
	}
	return id, nil
}

// PeerID returns the SPIFFE ID (URI SAN) of chain's leaf, or "".
func PeerID(chain []*x509.Certificate) string {
	if len(chain) == 0 {
		return ""
	}
	for _, u := range chain[0].URIs {
		if u.Scheme == "spiffe" {
			return u.String()
		}
	}
	return ""
}

// ControllerTLS is the TLS configuration of the proxy's connection to the
// controller: the controller's certificate must chain to anchors and carry
// controllerID; the proxy presents cert() when the server asks for a client
// certificate and one is available (nil: none yet, e.g. before Certify).
func ControllerTLS(anchors *x509.CertPool, controllerID string, cert func() *tls.Certificate) *tls.Config {
	v := &Provider{cfg: Config{TrustAnchors: anchors, Now: time.Now}}
	return &tls.Config{
		MinVersion:         tls.VersionTLS12,
		InsecureSkipVerify: true, // verified by SPIFFE ID in VerifyConnection
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := v.verifyPeer(cs.PeerCertificates, controllerID)
			return err
		},
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := cert(); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil
		},
	}
}

// verifiedCache remembers chains that verified, so that the repeated
// handshakes of a busy proxy with the same few peers skip the signature
// checks. An entry is valid while every certificate of its verified chain
// is; the cache is bounded and simply cleared when full.
type verifiedCache struct {
	mu      sync.Mutex // guards entries
	entries map[[32]byte]verifiedEntry
}

type verifiedEntry struct{ notBefore, notAfter time.Time }

const verifiedCacheSize = 1024

// chainKey identifies a presented chain by the hash of its certificates.
func chainKey(chain []*x509.Certificate) [32]byte {
	h := sha256.New()
	for _, c := range chain {
		h.Write(c.Raw)
	}
	var k [32]byte
	h.Sum(k[:0])
	return k
}

func (v *verifiedCache) ok(key [32]byte, now time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, found := v.entries[key]
	return found && !now.Before(e.notBefore) && now.Before(e.notAfter)
}

func (v *verifiedCache) add(key [32]byte, chains [][]*x509.Certificate) {
	if len(chains) == 0 {
		return
	}
	e := verifiedEntry{notAfter: chains[0][0].NotAfter, notBefore: chains[0][0].NotBefore}
	for _, c := range chains[0] {
		if c.NotAfter.Before(e.notAfter) {
			e.notAfter = c.NotAfter
		}
		if c.NotBefore.After(e.notBefore) {
			e.notBefore = c.NotBefore
		}
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.entries == nil || len(v.entries) >= verifiedCacheSize {
		v.entries = map[[32]byte]verifiedEntry{}
	}
	v.entries[key] = e
}
