package identity

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/conduitmesh/conduit/internal/testenv"
	identityv1 "github.com/conduitmesh/conduit/pkg/api/identity/v1"
	"github.com/conduitmesh/conduit/pkg/controller/identity/identitytest"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	"github.com/conduitmesh/conduit/pkg/proxy/tlsconf"
)

const (
	webID   = "spiffe://cluster.local/ns/demo/sa/web"
	booksID = "spiffe://cluster.local/ns/demo/sa/books"
)

// controller is the real controller identity service on a loopback port,
// with local tokens.
type controller struct {
	svc     *identitytest.Service
	addr    string
	anchors *x509.CertPool
	tokens  string // the local token file
}

func startController(t testing.TB, lifetime time.Duration) *controller {
	t.Helper()
	s := identitytest.Start(t, identitytest.Options{Lifetime: lifetime, Tokens: map[string]string{"web-token": webID, "books-token": booksID}})
	c := &controller{svc: s, addr: s.Addr, tokens: s.TokensFile}
	var err error
	if c.anchors, err = LoadTrustAnchors(s.AnchorsFile); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *controller) setTokens(t testing.TB, tokens map[string]string) {
	t.Helper()
	c.svc.SetTokens(t, tokens)
}

// startProvider runs a provider for name with the given token until the
// test ends.
func startProvider(t testing.TB, c *controller, name, token string, logs *testenv.SyncBuffer) *Provider {
	t.Helper()
	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	conn, err := grpcwire.New(c.addr, grpcwire.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(conn.Close)
	cfg := Config{
		Name: name, TokenFile: tokenFile, TrustAnchors: c.anchors, Client: conn,
		RetryBase: 20 * time.Millisecond, RetryMax: 100 * time.Millisecond,
	}
	if logs != nil {
		cfg.Log = slog.New(slog.NewTextHandler(logs, nil))
	}
	p, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return p
}

func waitReady(t testing.TB, p *Provider) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.WaitReady(ctx); err != nil {
		t.Fatal(err)
	}
}

// handshake runs a TLS handshake between client and server configs over a
// loopback connection and returns the server's view of the client's ID.
func handshake(t *testing.T, client, server *tls.Config) (clientID string, clientErr, serverErr error) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer lis.Close()
	type result struct {
		id  string
		err error
	}
	srvDone := make(chan result, 1)
	go func() {
		c, err := lis.Accept()
		if err != nil {
			srvDone <- result{err: err}
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		c.SetDeadline(time.Now().Add(5 * time.Second))
		err = tc.Handshake()
		if err == nil {
			// TLS 1.3 client auth completes when the server reads.
			buf := make([]byte, 1)
			_, err = tc.Read(buf)
		}
		srvDone <- result{PeerID(tc.ConnectionState().PeerCertificates), err}
	}()
	c, err := net.Dial("tcp", lis.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	tc := tls.Client(c, client)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	clientErr = tc.Handshake()
	if clientErr == nil {
		_, clientErr = tc.Write([]byte{1})
	}
	if clientErr != nil {
		c.Close()
	}
	r := <-srvDone
	return r.id, clientErr, r.err
}

func TestMutualTLSVerifiedByIdentity(t *testing.T) {
	c := startController(t, time.Hour)
	web := startProvider(t, c, webID, "web-token", nil)
	books := startProvider(t, c, booksID, "books-token", nil)
	waitReady(t, web)
	waitReady(t, books)
	if !web.Ready() || web.LocalID() != webID {
		t.Fatalf("web: ready=%v id=%s", web.Ready(), web.LocalID())
	}
	var _ tlsconf.Provider = web
	if got := PeerID([]*x509.Certificate{web.Certificate().Leaf}); got != webID {
		t.Fatalf("web's certificate names %q", got)
	}

	// web → books, expecting books: both sides verified.
	id, cerr, serr := handshake(t, web.ClientConfig(booksID), books.ServerConfig())
	if cerr != nil || serr != nil {
		t.Fatalf("handshake: client %v, server %v", cerr, serr)
	}
	if id != webID {
		t.Errorf("server saw client %q, want %q", id, webID)
	}
	if web.ClientConfig(booksID) != web.ClientConfig(booksID) {
		t.Error("client configs are not cached per identity")
	}

	// web → books, but Destination announced another identity.
	if _, cerr, _ := handshake(t, web.ClientConfig("spiffe://cluster.local/ns/demo/sa/authors"), books.ServerConfig()); cerr == nil || !strings.Contains(cerr.Error(), "want spiffe://cluster.local/ns/demo/sa/authors") {
		t.Errorf("wrong server identity: client err = %v", cerr)
	}

	// A peer from another trust anchor is refused on both sides.
	other := startController(t, time.Hour)
	stranger := startProvider(t, other, booksID, "books-token", nil)
	waitReady(t, stranger)
	if _, cerr, _ := handshake(t, web.ClientConfig(booksID), stranger.ServerConfig()); cerr == nil {
		t.Error("client accepted a server from another trust anchor")
	}
	if _, _, serr := handshake(t, stranger.ClientConfig(booksID), books.ServerConfig()); serr == nil {
		t.Error("server accepted a client from another trust anchor")
	}
	// A client without a certificate is refused.
	noCert := &tls.Config{InsecureSkipVerify: true, NextProtos: []string{tlsconf.ALPN}}
	if _, _, serr := handshake(t, noCert, books.ServerConfig()); serr == nil {
		t.Error("server accepted a client without a certificate")
	}
}

// TestRotation: with short lifetimes the certificate is renewed before it
// expires, the token file is re-read on every renewal, and connections use
// the new certificate without reconfiguration.
func TestRotation(t *testing.T) {
	c := startController(t, 1500*time.Millisecond)
	web := startProvider(t, c, webID, "web-token", nil)
	books := startProvider(t, c, booksID, "books-token", nil)
	waitReady(t, web)
	waitReady(t, books)
	client, server := web.ClientConfig(booksID), books.ServerConfig()

	first := web.Certificate().Leaf
	seen := map[string]bool{first.SerialNumber.String(): true}
	// The token rotates: the controller now accepts only the new one, and
	// the provider must read it from the file.
	c.setTokens(t, map[string]string{"web-token-2": webID, "books-token": booksID})
	os.WriteFile(web.cfg.TokenFile, []byte("web-token-2"), 0o600)

	deadline := time.Now().Add(10 * time.Second)
	for len(seen) < 3 && time.Now().Before(deadline) {
		cur := web.Certificate().Leaf
		if time.Now().After(cur.NotAfter) {
			t.Fatalf("certificate %s expired at %s before renewal", cur.SerialNumber, cur.NotAfter)
		}
		seen[cur.SerialNumber.String()] = true
		if _, cerr, serr := handshake(t, client, server); cerr != nil || serr != nil {
			t.Fatalf("handshake after rotation: client %v, server %v", cerr, serr)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(seen) < 3 {
		t.Fatalf("saw %d certificates in 10 s with a 1.5 s lifetime", len(seen))
	}
	if !web.Ready() {
		t.Fatal("not ready after rotations")
	}
}

func TestRefusedTokenThenFixed(t *testing.T) {
	c := startController(t, time.Hour)
	var logs testenv.SyncBuffer
	web := startProvider(t, c, webID, "wrong-token", &logs)
	testenv.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if !strings.Contains(logs.String(), "certificate request refused") {
			return fmt.Errorf("logs do not say the request was refused:\n%s", logs.String())
		}
		return nil
	})
	if web.Ready() || web.ServerConfig() != nil || web.ClientConfig(booksID) != nil {
		t.Fatal("ready without a certificate")
	}
	os.WriteFile(web.cfg.TokenFile, []byte("web-token"), 0o600)
	waitReady(t, web)
}

func TestNewRejectsBadConfig(t *testing.T) {
	pool := x509.NewCertPool()
	conn, _ := grpcwire.New("127.0.0.1:1", grpcwire.Options{})
	for _, name := range []string{"", "web", "spiffe://cluster.local/ns/demo", "https://cluster.local/ns/demo/sa/web", "spiffe://cluster.local/ns//sa/web"} {
		if _, err := New(Config{Name: name, TrustAnchors: pool, Client: conn, TokenFile: "t"}); err == nil {
			t.Errorf("New accepted name %q", name)
		}
	}
	if _, err := New(Config{Name: webID, Client: conn, TokenFile: "t"}); err == nil {
		t.Error("New accepted no trust anchors")
	}
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.pem")
	os.WriteFile(bad, []byte("not pem"), 0o600)
	if _, err := LoadTrustAnchors(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("LoadTrustAnchors(garbage) = %v", err)
	}
}

func TestCodecMatchesGenerated(t *testing.T) {
	var req identityv1.CertifyRequest
	if err := proto.Unmarshal(encodeCertifyRequest(webID, []byte("tok"), []byte{1, 2}), &req); err != nil {
		t.Fatal(err)
	}
	if req.Identity != webID || string(req.Token) != "tok" || !bytes.Equal(req.CertificateSigningRequest, []byte{1, 2}) {
		t.Fatalf("decoded %v", &req)
	}
	b, _ := proto.Marshal(&identityv1.CertifyResponse{
		LeafCertificate:          []byte("leaf"),
		IntermediateCertificates: [][]byte{[]byte("i1"), []byte("i2")},
		ValidUntil:               timestamppb.Now(),
	})
	leaf, chain, err := decodeCertifyResponse(b)
	if err != nil || string(leaf) != "leaf" || len(chain) != 2 || string(chain[1]) != "i2" {
		t.Fatalf("decodeCertifyResponse = %q, %q, %v", leaf, chain, err)
	}
	for _, garbage := range [][]byte{nil, {0x0a, 0x05}, {0x0b}} {
		if _, _, err := decodeCertifyResponse(garbage); err == nil {
			t.Errorf("decodeCertifyResponse(%x) succeeded", garbage)
		}
	}
}

// TestVerifiedCacheHonoursExpiry: a chain verified once is not accepted
// from the cache after it expires, and another identity is still refused.
func TestVerifiedCacheHonoursExpiry(t *testing.T) {
	c := startController(t, time.Hour)
	books := startProvider(t, c, booksID, "books-token", nil)
	waitReady(t, books)
	chain := []*x509.Certificate{books.Certificate().Leaf}
	for _, der := range books.Certificate().Certificate[1:] {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			t.Fatal(err)
		}
		chain = append(chain, cert)
	}
	now := time.Now()
	conn, _ := grpcwire.New(c.addr, grpcwire.Options{})
	defer conn.Close()
	v, err := New(Config{Name: webID, TokenFile: "unused", TrustAnchors: c.anchors, Client: conn, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second time from the cache
		if id, err := v.verifyPeer(chain, booksID); err != nil || id != booksID {
			t.Fatalf("verifyPeer = %q, %v", id, err)
		}
		if _, err := v.verifyPeer(chain, webID); err == nil {
			t.Fatal("accepted books' chain as web")
		}
	}
	now = chain[0].NotAfter.Add(time.Second)
	if _, err := v.verifyPeer(chain, booksID); err == nil {
		t.Fatal("accepted an expired chain (from the cache)")
	}
}
