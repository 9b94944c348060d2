package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki"
)

// The two-hop system: a client-side conduit-proxy (outbound) and a
// server-side one (inbound), with identities certified by a real
// conduit-controller in local mode, so the hop between them is mutual TLS.
const (
	meshNamespace = "bench"
	trustDomain   = "cluster.local"
	// serviceAuthority is the name the load generator asks for; the
	// controller's registry maps it to the server-side proxy.
	serviceAuthority = "fortio." + meshNamespace + ".svc." + trustDomain + ":8080"
)

func spiffeID(sa string) string {
	return "spiffe://" + trustDomain + "/ns/" + meshNamespace + "/sa/" + sa
}

// meshFiles are written once per run: the PKI, the proxies' tokens and the
// controller's token file.
type meshFiles struct {
	pkiDir, anchors, tokens string
	tokenFile               map[string]string // by service account
}

func (e *benchEnv) mesh() (*meshFiles, error) {
	if e.meshFiles != nil {
		return e.meshFiles, nil
	}
	dir := filepath.Join(e.dir, "mesh")
	m := &meshFiles{pkiDir: filepath.Join(dir, "pki"), tokens: filepath.Join(dir, "tokens.yaml"), tokenFile: map[string]string{}}
	m.anchors = filepath.Join(m.pkiDir, "ca.crt")
	// The anchor and the issuer come from pkg/pki, as `conduit install`
	// makes them; WriteDir writes ca.crt, tls.crt and tls.key, the layout
	// --identity-issuer-dir reads (m.anchors is its ca.crt).
	p, err := pki.Generate(time.Now(), trustDomain, 48*time.Hour, 48*time.Hour)
	if err != nil {
		return nil, fmt.Errorf("generating the bench PKI: %w", err)
	}
	if err := p.WriteDir(m.pkiDir); err != nil {
		return nil, fmt.Errorf("writing the bench PKI: %w", err)
	}
	tokens := "tokens:\n"
	for _, sa := range []string{"client", "server"} {
		var b [16]byte
		if _, err := rand.Read(b[:]); err != nil {
			return nil, err
		}
		tok := hex.EncodeToString(b[:])
		m.tokenFile[sa] = filepath.Join(dir, sa+".token")
		if err := os.WriteFile(m.tokenFile[sa], []byte(tok+"\n"), 0o600); err != nil {
			return nil, err
		}
		tokens += fmt.Sprintf("- token: %s\n  identity: %s\n", tok, spiffeID(sa))
	}
	if err := os.WriteFile(m.tokens, []byte(tokens), 0o600); err != nil {
		return nil, err
	}
	e.meshFiles = m
	return m, nil
}

// startTwoHops starts a controller whose registry sends serviceAuthority to
// a server-side proxy in front of target, and a client-side proxy whose
// outbound listener the load generator uses with that authority as Host.
func startTwoHops(ctx context.Context, e *benchEnv, p protocol, target string) (d *deployment, err error) {
	return startMeshed(ctx, e, p, target, 0, "")
}

// startTwoHopsRoutes is startTwoHops with the Service carrying what issue
// 14 adds, none of it matching the load's requests: an HTTPRoute whose rule
// (path /bench-unmatched/) has retries and timeouts, and the Service's
// failure accrual, which applies to every request.
func startTwoHopsRoutes(ctx context.Context, e *benchEnv, p protocol, target string) (d *deployment, err error) {
	return startMeshed(ctx, e, p, target, 0, unmatchedRoute)
}

// startTwoHopsRetries is startTwoHopsRoutes with a route that every request
// matches (path /): each is served under its retries and timeouts (none
// fails, so none is retried) and gets a response header set.
func startTwoHopsRetries(ctx context.Context, e *benchEnv, p protocol, target string) (d *deployment, err error) {
	return startMeshed(ctx, e, p, target, 0, matchedRoute)
}

// unmatchedRoute and matchedRoute are the routes of startTwoHopsRoutes and
// startTwoHopsRetries: the first's rule has path /bench-unmatched/, the
// second's /.
const (
	unmatchedRoute = "bench-unmatched"
	matchedRoute   = "bench-retries"
)

// routesRegistry is the registry's part for the route named route.
func routesRegistry(route string) string {
	_, port, _ := net.SplitHostPort(serviceAuthority)
	path, filters := "/"+route+"/", ""
	if route == matchedRoute {
		path = "/"
		filters = "      filters: [{type: ResponseHeaderModifier, responseHeaderModifier: {set: [{name: x-route, value: " + route + "}]}}]\n"
	}
	return fmt.Sprintf("- apiVersion: gateway.networking.k8s.io/v1\n  kind: HTTPRoute\n"+
		"  metadata:\n    name: %s\n    namespace: %s\n"+
		"    annotations: {retry.conduit.io/http: 5xx, retry.conduit.io/limit: \"2\", retry.conduit.io/timeout: 2s}\n"+
		"  spec:\n    parentRefs: [{group: \"\", kind: Service, name: fortio, port: %s}]\n"+
		"    rules:\n    - matches: [{path: {type: PathPrefix, value: %s}}]\n"+
		"      timeouts: {request: 10s}\n%s      backendRefs: [{name: fortio, port: %s}]\n",
		route, meshNamespace, port, path, filters, port)
}

// startTwoHopsAuthz is startTwoHops with the server-side proxy enforcing an
// inbound policy of n AuthorizationPolicies on the target's port (a Server),
// each requiring a MeshTLSAuthentication of one identity: only the last
// admits the client, so every request's decision passes them all.
func startTwoHopsAuthz(n int) func(context.Context, *benchEnv, protocol, string) (*deployment, error) {
	return func(ctx context.Context, e *benchEnv, p protocol, target string) (*deployment, error) {
		return startMeshed(ctx, e, p, target, n, "")
	}
}

// authzRegistry is the registry's part that gives the server-side proxy
// (pod server-0) its inbound policy: a Server on port and n policies.
func authzRegistry(port string, n int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "proxies:\n- namespace: %s\n  pod: server-0\n  adminAddress: 127.0.0.1:1\n  identity: %s\n  labels: {app: fortio}\n",
		meshNamespace, spiffeID("server"))
	fmt.Fprintf(&b, "policies:\n- apiVersion: policy.conduit.io/v1beta1\n  kind: Server\n  metadata: {name: fortio, namespace: %s}\n"+
		"  spec: {podSelector: {matchLabels: {app: fortio}}, port: %s}\n", meshNamespace, port)
	for i := range n {
		sa := fmt.Sprintf("other-%d", i)
		if i == n-1 {
			sa = "client"
		}
		fmt.Fprintf(&b, "- apiVersion: policy.conduit.io/v1beta1\n  kind: MeshTLSAuthentication\n  metadata: {name: %s, namespace: %s}\n"+
			"  spec: {identities: [%q]}\n", sa, meshNamespace, spiffeID(sa))
		fmt.Fprintf(&b, "- apiVersion: policy.conduit.io/v1beta1\n  kind: AuthorizationPolicy\n  metadata: {name: from-%s, namespace: %s}\n"+
			"  spec:\n    targetRef: {group: policy.conduit.io, kind: Server, name: fortio}\n"+
			"    requiredAuthenticationRefs: [{group: policy.conduit.io, kind: MeshTLSAuthentication, name: %s}]\n", sa, meshNamespace, sa)
	}
	return b.String()
}

// startMeshed starts two meshed hops; policies > 0 gives the server-side
// proxy that many authorization policies, route (unmatchedRoute or
// matchedRoute) the Service a route and failure accrual.
func startMeshed(ctx context.Context, e *benchEnv, _ protocol, target string, policies int, route string) (d *deployment, err error) {
	routes := route != ""
	m, err := e.mesh()
	if err != nil {
		return nil, err
	}
	d = &deployment{loadArgs: []string{"-H", "Host: " + serviceAuthority}}
	started := d // the error returns below set d to nil
	defer func() {
		if err != nil {
			started.stop()
		}
	}()
	// The server-side proxy's inbound address must be in the registry
	// before the controller starts: pick it now.
	serverIn, err := freeAddr()
	if err != nil {
		return nil, err
	}
	registry := filepath.Join(e.dir, "mesh", "registry.yaml")
	_, svcPort, _ := net.SplitHostPort(serviceAuthority)
	reg := fmt.Sprintf("services:\n- name: fortio\n  namespace: %s\n  port: %s\n  endpoints:\n  - address: %s\n    identity: %s\n",
		meshNamespace, svcPort, serverIn, spiffeID("server"))
	if routes {
		reg += "  annotations: {balancer.conduit.io/failure-accrual: consecutive}\n"
	}
	if policies > 0 {
		_, targetPort, err := net.SplitHostPort(target)
		if err != nil {
			return nil, fmt.Errorf("target %q: %w", target, err)
		}
		reg += authzRegistry(targetPort, policies)
	}
	if routes {
		if policies > 0 {
			return nil, errors.New("routes and authorization policies are not benchmarked together")
		}
		reg += "policies:\n" + routesRegistry(route)
	}
	if err := os.WriteFile(registry, []byte(reg), 0o600); err != nil {
		return nil, err
	}
	grpcAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	adminAddr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	ctl, err := start(e.dir, nil, e.opts.pinned(e.opts.serverCPU, e.bins.controller,
		"--discovery", "local", "--registry-file", registry, "--identity-issuer-dir", m.pkiDir,
		"--local-tokens-file", m.tokens, "--trust-domain", trustDomain,
		"--grpc-addr", grpcAddr, "--admin-addr", adminAddr, "--stats-interval", "0")...)
	if err != nil {
		return nil, err
	}
	d.helpers = append(d.helpers, ctl)
	if err := waitReady(ctx, ctl, "http://"+adminAddr+"/ready"); err != nil {
		return nil, err
	}
	var clientOut, clientMetrics string
	for _, sa := range []string{"server", "client"} {
		extra := []string{"--controller-addr", grpcAddr, "--identity-name", spiffeID(sa),
			"--identity-token-file", m.tokenFile[sa], "--trust-anchors-file", m.anchors, "--pod-namespace", meshNamespace}
		if sa == "server" && policies > 0 {
			extra = append(extra, "--pod-name", "server-0")
		}
		p, l, err := e.startConduitProxyAt(ctx, map[string]string{"server": serverIn}[sa], target, extra...)
		if err != nil {
			return nil, fmt.Errorf("%s-side proxy: %w", sa, err)
		}
		d.measured = append(d.measured, p)
		if sa == "client" {
			d.addr = l.out
			clientOut, clientMetrics = l.out, "http://"+l.admin+"/metrics"
		} else {
			metrics := "http://" + l.admin + "/metrics"
			d.verify = func(*sample) error {
				if err := checkMTLS(metrics); err != nil {
					return err
				}
				if policies > 0 {
					return checkAuthorized(metrics, "from-client")
				}
				if routes {
					// The route had reached the client's proxy: a request
					// on its path (after the load and its figures) is
					// labelled with it.
					return checkRouted(ctx, clientOut, clientMetrics, route)
				}
				return nil
			}
		}
	}
	return d, nil
}

// checkRouted sends one request on the unmatched route's path through the
// client-side proxy at out and makes sure the proxy counted it under route
// (the unmatched route, or the matched one, whose path is every path), so
// that the row measured a proxy that had the route table.
func checkRouted(ctx context.Context, out, metricsURL, route string) error {
	var last error
	for range 50 {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+out+"/"+unmatchedRoute+"/probe", nil)
		req.Host = serviceAuthority
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		resp, err := http.Get(metricsURL)
		if err != nil {
			return fmt.Errorf("reading the client-side proxy's metrics: %w", err)
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		if strings.Contains(string(body), `route_name="`+route+`"`) {
			return nil
		}
		last = fmt.Errorf("the client-side proxy counted no request under route %s: it has no route table", route)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	return last
}

// checkMTLS makes sure the server-side proxy saw the requests over mutual
// TLS from the client's identity, so the row measures what it says.
func checkMTLS(metricsURL string) error {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return fmt.Errorf("reading the server-side proxy's metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "request_total{") && strings.Contains(line, `direction="inbound"`) &&
			strings.Contains(line, `tls="true"`) && strings.Contains(line, spiffeID("client")) {
			return nil
		}
	}
	return fmt.Errorf("the server-side proxy counted no inbound request over mTLS from %s: the two hops are not meshed", spiffeID("client"))
}

// checkAuthorized makes sure the server-side proxy admitted the requests by
// the policy named authz, so the row measures decisions, not an unenforced
// policy.
func checkAuthorized(metricsURL, authz string) error {
	resp, err := http.Get(metricsURL)
	if err != nil {
		return fmt.Errorf("reading the server-side proxy's metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(body), "\n") {
		if strings.HasPrefix(line, "inbound_http_authz_allow_total{") && strings.Contains(line, `authz_name="`+authz+`"`) {
			return nil
		}
	}
	return fmt.Errorf("the server-side proxy admitted no request by %s: its inbound policy is not enforced", authz)
}
