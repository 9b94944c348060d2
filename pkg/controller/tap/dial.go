package tap

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
)

// MTLSDialer dials proxies' admin ports with mutual TLS: the controller
// presents its own identity certificate (from getCert, which may rotate),
// and each proxy must present a certificate that chains to the trust
// anchors and names the pod's identity (its SPIFFE ID), like a meshed peer.
// roots returns the current trust anchors; it is called at every
// handshake, so that rotated anchors apply to the next tap.
func MTLSDialer(getCert func(*tls.CertificateRequestInfo) (*tls.Certificate, error), roots func() *x509.CertPool) Dialer {
	return func(_ context.Context, pod stats.Pod) (tapv1.TapClient, func(), error) {
		if pod.Identity == "" {
			return nil, nil, fmt.Errorf("pod %s/%s: no identity to verify its proxy against", pod.Namespace, pod.Name)
		}
		cfg := &tls.Config{
			MinVersion:           tls.VersionTLS13,
			GetClientCertificate: getCert,
			NextProtos:           []string{"h2"},
			// The proxy's certificate names a SPIFFE ID, not a host name:
			// verified below instead of by host name.
			InsecureSkipVerify:    true,
			VerifyPeerCertificate: verifyIdentity(roots, pod.Identity),
		}
		cc, err := grpc.NewClient(pod.AdminAddr, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
		if err != nil {
			return nil, nil, fmt.Errorf("dialing proxy %s/%s at %s: %w", pod.Namespace, pod.Name, pod.AdminAddr, err)
		}
		return tapv1.NewTapClient(cc), func() { cc.Close() }, nil
	}
}

// MeshDialer dials a pod's proxy with mtls when the pod has an identity
// and with plaintext otherwise: for local mode, where a proxy without an
// identity listens on loopback and accepts plaintext taps from it.
func MeshDialer(mtls, plaintext Dialer) Dialer {
	return func(ctx context.Context, pod stats.Pod) (tapv1.TapClient, func(), error) {
		if pod.Identity == "" {
			return plaintext(ctx, pod)
		}
		return mtls(ctx, pod)
	}
}

// verifyIdentity checks a peer's chain against roots() and its URI SAN
// against want.
func verifyIdentity(roots func() *x509.CertPool, want string) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the proxy presented no certificate")
		}
		certs := make([]*x509.Certificate, 0, len(raw))
		for _, r := range raw {
			c, err := x509.ParseCertificate(r)
			if err != nil {
				return fmt.Errorf("parsing the proxy's certificate: %w", err)
			}
			certs = append(certs, c)
		}
		inter := x509.NewCertPool()
		for _, c := range certs[1:] {
			inter.AddCert(c)
		}
		pool := roots()
		if pool == nil {
			return errors.New("no trust anchors to verify the proxy's certificate against")
		}
		if _, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return fmt.Errorf("verifying the proxy's certificate: %w", err)
		}
		for _, u := range certs[0].URIs {
			if u.String() == want {
				return nil
			}
		}
		return fmt.Errorf("the proxy's certificate does not name %s", want)
	}
}
