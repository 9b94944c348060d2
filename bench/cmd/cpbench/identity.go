package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"fmt"
	"net/url"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	identityv1 "github.com/conduitmesh/conduit/pkg/api/identity/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
)

type identityResult struct {
	concurrency, accounts int
	ok                    int
	errors                map[string]int // by gRPC code
	lastErr               string
	elapsed               time.Duration
	latencies             []time.Duration // of the successful calls, sorted
	cpu                   time.Duration   // the controller's, over elapsed
}

func (r identityResult) rate() float64 { return float64(r.ok) / r.elapsed.Seconds() }

// runIdentity has o.identityConcurrency proxies, each on its own
// connection, call Identity.Certify back to back for o.identityDuration, as
// proxies starting at once do: a CSR for their identity plus their
// service-account token, which the controller reviews with the API server
// (TokenReview) before it signs.
func runIdentity(ctx context.Context, f *fleet, c *controllerProc, tokens []accountToken, o options) (identityResult, error) {
	res := identityResult{concurrency: o.identityConcurrency, accounts: len(tokens), errors: map[string]int{}}
	// Keys and CSRs are made before the clock starts: a proxy makes its key
	// once, and the bench must not compete with the controller for CPU.
	reqs := make([][]byte, o.identityConcurrency)
	for w := range reqs {
		tok := tokens[w%len(tokens)]
		csr, err := makeCSR(tok.id)
		if err != nil {
			return res, err
		}
		reqs[w], _ = proto.Marshal(&identityv1.CertifyRequest{Identity: tok.id, Token: tok.token, CertificateSigningRequest: csr})
	}
	// One call first, checked, outside the measurement.
	if err := certifyOnce(ctx, f.proxies[0].conn, reqs[0], c.anchors); err != nil {
		return res, fmt.Errorf("first Certify: %w", err)
	}
	before, err := c.sample()
	if err != nil {
		return res, err
	}
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	stop := start.Add(o.identityDuration)
	for w := range o.identityConcurrency {
		conn := f.proxies[w].conn
		wg.Go(func() {
			for time.Now().Before(stop) && ctx.Err() == nil {
				cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				t := time.Now()
				_, err := conn.Unary(cctx, identityv1.Identity_Certify_FullMethodName, reqs[w])
				d := time.Since(t)
				cancel()
				mu.Lock()
				if err != nil {
					res.errors[codes.Code(grpcwire.CodeOf(err)).String()]++
					res.lastErr = err.Error()
				} else {
					res.ok++
					res.latencies = append(res.latencies, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	res.elapsed = time.Since(start)
	after, err := c.sample()
	if err != nil {
		return res, err
	}
	res.cpu = after.cpu - before.cpu
	slices.Sort(res.latencies)
	return res, nil
}

func makeCSR(id string) ([]byte, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(id)
	if err != nil {
		return nil, err
	}
	return x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
}

// certifyOnce checks that a Certify call succeeds and its certificate
// chains to the trust anchors.
func certifyOnce(ctx context.Context, conn *grpcwire.Conn, req []byte, anchors *x509.CertPool) error {
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	b, err := conn.Unary(cctx, identityv1.Identity_Certify_FullMethodName, req)
	if err != nil {
		return err
	}
	var resp identityv1.CertifyResponse
	if err := proto.Unmarshal(b, &resp); err != nil {
		return err
	}
	leaf, err := x509.ParseCertificate(resp.GetLeafCertificate())
	if err != nil {
		return err
	}
	inter := x509.NewCertPool()
	for _, der := range resp.GetIntermediateCertificates() {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	_, err = leaf.Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
	return err
}
