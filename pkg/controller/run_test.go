package controller

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/conduitmesh/conduit/internal/testenv"
	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	identityv1 "github.com/conduitmesh/conduit/pkg/api/identity/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/controller/discovery/local"
	"github.com/conduitmesh/conduit/pkg/controller/identity"
	"github.com/conduitmesh/conduit/pkg/pki"
	"github.com/conduitmesh/conduit/pkg/version"
)

// testConfig is the flags' defaults, in local mode on loopback ports.
func testConfig(dir string, log io.Writer, announce io.Writer) Config {
	return Config{
		GRPCAddr: "127.0.0.1:0", AdminAddr: "127.0.0.1:0", WebhookAddr: "127.0.0.1:0",
		Discovery: "local", RegistryFile: filepath.Join(dir, "registry.yaml"),
		TrustDomain: "cluster.local", ClusterDomain: "cluster.local",
		IdentityLifetime: identity.DefaultLifetime, IdentityReload: 10 * time.Second,
		ControllerNamespace: "conduit", ProxyImage: version.ProxyImage, ProxyVersion: version.Version,
		ShutdownGrace: 10 * time.Second, StatsInterval: 10 * time.Second,
		Log: slog.New(slog.NewTextHandler(log, nil)), Announce: announce,
	}
}

// addrs waits for the controller to print its addresses.
func addrs(t *testing.T, out *testenv.SyncBuffer, done <-chan error) map[string]string {
	t.Helper()
	deadline := time.After(10 * time.Second)
	for {
		m := map[string]string{}
		sc := bufio.NewScanner(strings.NewReader(out.String()))
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), "="); ok {
				m[k] = v
			}
		}
		if m["grpc-addr"] != "" && m["admin-addr"] != "" && m["controller-identity"] != "" {
			return m
		}
		select {
		case err := <-done:
			t.Fatalf("controller stopped before listening: %v", err)
		case <-deadline:
			t.Fatal("controller printed no addresses")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestLocalMode(t *testing.T) {
	dir := t.TempDir()
	pki, err := pki.Generate(time.Now(), "cluster.local", time.Hour, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteDir(filepath.Join(dir, "pki")); err != nil {
		t.Fatal(err)
	}
	webID := "spiffe://cluster.local/ns/demo/sa/web"
	reg := local.Registry{Services: []local.Service{{
		Name: "web", Namespace: "demo", Port: 80,
		Annotations: map[string]string{contract.AnnotationTimeoutRequest: "2s"},
		Endpoints:   []local.Endpoint{{Address: "127.0.0.1:41001", Identity: webID, Labels: map[string]string{"pod": "web-0"}}},
	}}, Proxies: []local.Proxy{{Namespace: "demo", Pod: "web-0", AdminAddress: "127.0.0.1:41191", Identity: webID}}}
	if err := local.WriteFile(filepath.Join(dir, "registry.yaml"), reg); err != nil {
		t.Fatal(err)
	}
	if err := identity.WriteLocalTokens(filepath.Join(dir, "tokens.yaml"), identity.LocalTokens{Tokens: []identity.LocalToken{{Token: "web-token", Identity: webID}}}); err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var stdout, stderr testenv.SyncBuffer
	cfg := testConfig(dir, &stderr, &stdout)
	cfg.IssuerDir = filepath.Join(dir, "pki")
	cfg.LocalTokensFile = filepath.Join(dir, "tokens.yaml")
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	defer func() {
		if t.Failed() {
			t.Logf("controller log:\n%s", stderr.String())
		}
	}()
	a := addrs(t, &stdout, done)

	for _, path := range []string{"/ready", "/live", "/metrics"} {
		resp, err := http.Get("http://" + a["admin-addr"] + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET %s: %s", path, resp.Status)
		}
		for _, metric := range []string{"destination_streams", `conduit_controller_info{discovery="local",version="dev"} 1`} {
			if path == "/metrics" && !bytes.Contains(body, []byte(metric)) {
				t.Errorf("/metrics lacks %s:\n%s", metric, body)
			}
		}
	}

	conn, err := grpc.NewClient(a["grpc-addr"], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second) // outlives the controller
	defer ccancel()

	hr, err := healthpb.NewHealthClient(conn).Check(cctx, &healthpb.HealthCheckRequest{Service: "conduit.destination.v1.Destination"})
	if err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health: %v %v", hr, err)
	}

	stream, err := destinationv1.NewDestinationClient(conn).Get(cctx, &destinationv1.GetDestination{Authority: "web.demo.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	u, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if add := u.GetAdd(); add == nil || len(add.Addrs) != 1 || add.Addrs[0].Identity != webID {
		t.Fatalf("first update = %v, want an add of the web endpoint", u)
	}

	// Outbound routes are served from the registry: its Service's
	// annotations (routes.Source's tests cover routes in local mode).
	rs, err := destinationv1.NewDestinationClient(conn).GetRoutes(cctx, &destinationv1.GetDestination{Authority: "web.demo.svc.cluster.local:80"})
	if err != nil {
		t.Fatal(err)
	}
	if table, err := rs.Recv(); err != nil || !table.GetFound() || table.GetServicePolicy().GetRequestTimeoutMs() != 2000 {
		t.Errorf("GetRoutes in local mode: %v, %v; want web found with its 2s timeout annotation", table, err)
	}

	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{{Scheme: "spiffe", Host: "cluster.local", Path: "/ns/demo/sa/web"}}}, key)
	if err != nil {
		t.Fatal(err)
	}
	idc := identityv1.NewIdentityClient(conn)
	if _, err := idc.Certify(cctx, &identityv1.CertifyRequest{Identity: webID, Token: []byte("web-token"), CertificateSigningRequest: csr}); err != nil {
		t.Errorf("Certify: %v", err)
	}
	if _, err := idc.Certify(cctx, &identityv1.CertifyRequest{Identity: webID, Token: []byte("wrong"), CertificateSigningRequest: csr}); status.Code(err) != codes.Unauthenticated {
		t.Errorf("Certify with a bad token: %v, want UNAUTHENTICATED", err)
	}

	// Stats and TapAPI are served (their behaviour is tested in their packages).
	if _, err := statsv1.NewStatsClient(conn).Stat(cctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Type: "deployment", Namespace: "demo"}}); err != nil {
		t.Errorf("Stats.Stat: %v", err)
	}
	if _, err := statsv1.NewStatsClient(conn).Stat(cctx, &statsv1.StatRequest{Selector: &statsv1.Resource{Type: "bogus"}}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("Stats.Stat of a bogus type: %v, want INVALID_ARGUMENT", err)
	}

	// InboundPolicies is served from the registry: a port no Server
	// selects gets the default policy, then its namespace's once the
	// registry gives the namespace the annotation.
	ws, err := policyv1.NewInboundPoliciesClient(conn).WatchPort(cctx, &policyv1.PortSpec{Namespace: "demo", Pod: "web-0", Port: 8080})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := ws.Recv(); err != nil || p.GetServer().GetName() != "all-unauthenticated" || p.GetFailClosed() {
		t.Errorf("WatchPort in local mode: %v, %v; want the default all-unauthenticated", p, err)
	}
	reg.Namespaces = []local.Namespace{{Name: "demo", Annotations: map[string]string{contract.AnnotationDefaultInboundPolicy: contract.PolicyDeny}}}
	if err := local.WriteFile(filepath.Join(dir, "registry.yaml"), reg); err != nil {
		t.Fatal(err)
	}
	if p, err := ws.Recv(); err != nil || p.GetServer().GetName() != "deny" || !p.GetFailClosed() {
		t.Errorf("WatchPort in local mode after the namespace annotation: %v, %v; want deny", p, err)
	}

	// The same port speaks TLS with the controller's own identity.
	wantID := "spiffe://cluster.local/ns/conduit/sa/conduit-controller"
	if a["controller-identity"] != wantID {
		t.Errorf("controller-identity=%q, want %q", a["controller-identity"], wantID)
	}
	anchors := x509.NewCertPool()
	anchors.AppendCertsFromPEM(pki.AnchorPEM)
	tlsConn, err := grpc.NewClient(a["grpc-addr"], grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		InsecureSkipVerify: true, // verified by SPIFFE ID below
		VerifyConnection: func(cs tls.ConnectionState) error {
			leaf := cs.PeerCertificates[0]
			inters := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inters.AddCert(c)
			}
			if _, err := leaf.Verify(x509.VerifyOptions{Roots: anchors, Intermediates: inters}); err != nil {
				return err
			}
			if len(leaf.URIs) != 1 || leaf.URIs[0].String() != wantID {
				return fmt.Errorf("controller presented %v, want %s", leaf.URIs, wantID)
			}
			return nil
		},
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer tlsConn.Close()
	if hr, err := healthpb.NewHealthClient(tlsConn).Check(cctx, &healthpb.HealthCheckRequest{}); err != nil || hr.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("health over TLS: %v %v", hr, err)
	}

	// Cancellation (SIGTERM): open streams end with UNAVAILABLE and Run returns nil.
	cancel()
	if _, err := stream.Recv(); status.Code(err) != codes.Unavailable {
		t.Errorf("stream after shutdown: %v, want UNAVAILABLE", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("controller did not stop")
	}
}

// TestWebhookServed checks the proxy-injector webhook is served over TLS
// when WebhookCertDir is set (its behaviour is tested in pkg/controller/injector).
func TestWebhookServed(t *testing.T) {
	dir := t.TempDir()
	pki, err := pki.Generate(time.Now(), "cluster.local", time.Hour, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteDir(filepath.Join(dir, "webhook")); err != nil { // any certificate and key will do
		t.Fatal(err)
	}
	if err := local.WriteFile(filepath.Join(dir, "registry.yaml"), local.Registry{}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var stdout, stderr testenv.SyncBuffer
	cfg := testConfig(dir, &stderr, &stdout)
	cfg.WebhookCertDir = filepath.Join(dir, "webhook")
	done := make(chan error, 1)
	go func() { done <- Run(ctx, cfg) }()
	defer func() {
		cancel()
		<-done
	}()
	var addr string
	testenv.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		for _, l := range strings.Split(stdout.String(), "\n") {
			if v, ok := strings.CutPrefix(l, "webhook-addr="); ok {
				addr = v
			}
		}
		if addr == "" {
			return fmt.Errorf("no webhook-addr printed; log:\n%s", stderr.String())
		}
		return nil
	})
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := client.Post("https://"+addr+"/inject", "application/json", strings.NewReader("{"))
	if err != nil {
		t.Fatalf("POST /inject over TLS: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("POST /inject with a broken review: %s, want 400", resp.Status)
	}
}

// TestRunValidates checks Run refuses a Config that Validate rejects, before
// binding anything (the messages are tested through the flags in
// cmd/conduit-controller).
func TestRunValidates(t *testing.T) {
	var log, announce testenv.SyncBuffer
	cfg := testConfig(t.TempDir(), &log, &announce)
	cfg.IdentityLifetime = time.Second
	if err := Run(context.Background(), cfg); err == nil || !strings.Contains(err.Error(), "--identity-lifetime 1s: want at least 1m") {
		t.Errorf("Run with a 1s lifetime: %v", err)
	}
	if announce.String() != "" {
		t.Errorf("announced %q", announce.String())
	}
}
