// Package tlsconf is the seam between the proxy's listeners and its workload
// identity: the identity client (pkg/proxy/identity) implements Provider once
// the controller has certified the proxy's key. A nil Provider means the
// proxy has no identity and speaks plaintext only.
package tlsconf

import "crypto/tls"

// ALPN is the protocol name a meshed client proxy offers in its ClientHello so
// that the server-side proxy knows the connection is proxy-to-proxy mTLS and
// not an application's own TLS, which is passed through untouched.
const ALPN = "conduit.io/proxy"

// Provider hands out TLS configurations backed by the proxy's current
// certificate; configurations must pick up renewed certificates (use
// GetCertificate/GetClientCertificate callbacks rather than static certs).
type Provider interface {
	// LocalID is this proxy's SPIFFE ID, e.g. spiffe://cluster.local/ns/default/sa/web.
	LocalID() string
	// ServerConfig terminates inbound mTLS from meshed peers. It requests and
	// verifies a client certificate against the trust anchors.
	ServerConfig() *tls.Config
	// ClientConfig dials a meshed peer and verifies that its certificate
	// carries serverID as URI SAN.
	ClientConfig(serverID string) *tls.Config
}
