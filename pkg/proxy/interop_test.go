package proxy

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/interop"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/orca"
)

// The gRPC interop suite (issue 15): grpc-go's interop test cases, run by
// TestInterop against grpc-go's interop test server directly, through one
// proxy and through two proxies with mTLS between them (on the proxy's
// HTTP/2 fast path, and again with DisableFastPath).
//
// An interop case reports a failure with grpclog's Fatal, which exits the
// process. So each case runs in a child process, this test binary running
// TestInteropClient: a failing case is a failed subtest that shows the
// child's output, and the other cases still run.

const (
	interopCaseEnv      = "CONDUIT_INTEROP_CASE"      // the case a child runs
	interopAddrEnv      = "CONDUIT_INTEROP_ADDR"      // the address it dials
	interopAuthorityEnv = "CONDUIT_INTEROP_AUTHORITY" // its :authority, if set
	interopPassed       = "interop case passed: "     // what a child prints when its case returned
)

// interopCase is one test case of grpc-go's interop client, named as its
// --test_case flag names it. The cases that need real credentials (Google
// default, compute engine, service account, JWT, OAuth2, per-RPC) are not
// listed: they need GCP.
type interopCase struct {
	name string
	skip string // why the case cannot run here, if it cannot
	run  func(ctx context.Context, cc *grpc.ClientConn, newConn func() *grpc.ClientConn)
}

// withTestService adapts an interop case that takes a TestService client.
func withTestService(do func(context.Context, testpb.TestServiceClient, ...grpc.CallOption)) func(context.Context, *grpc.ClientConn, func() *grpc.ClientConn) {
	return func(ctx context.Context, cc *grpc.ClientConn, _ func() *grpc.ClientConn) {
		do(ctx, testpb.NewTestServiceClient(cc))
	}
}

// soak runs the interop client's rpc_soak (every RPC on cc) or channel_soak
// (every RPC on a new channel) with the client's default flags.
func soak(newChannel bool) func(context.Context, *grpc.ClientConn, func() *grpc.ClientConn) {
	return func(ctx context.Context, cc *grpc.ClientConn, newConn func() *grpc.ClientConn) {
		channel := func() (*grpc.ClientConn, func()) { return cc, func() {} }
		if newChannel {
			channel = func() (*grpc.ClientConn, func()) {
				c := newConn()
				return c, func() { c.Close() }
			}
		}
		ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
		defer cancel()
		interop.DoSoakTest(ctx, interop.SoakTestConfig{
			RequestSize:  271828,
			ResponseSize: 314159,
			// Correctness only (the bench measures speed): an iteration
			// of 0.6 MB through two mTLS hops took 1.25 s under the race
			// detector on a loaded machine, past the client's default 1 s.
			PerIterationMaxAcceptableLatency: 15 * time.Second,
			OverallTimeout:                   15 * time.Second,
			ServerAddr:                       cc.Target(),
			NumWorkers:                       1,
			Iterations:                       10,
			ChannelForTest:                   channel,
		})
	}
}

var interopCases = []interopCase{
	{name: "empty_unary", run: withTestService(interop.DoEmptyUnaryCall)},
	{name: "large_unary", run: withTestService(interop.DoLargeUnaryCall)},
	{name: "client_streaming", run: withTestService(interop.DoClientStreaming)},
	{name: "server_streaming", run: withTestService(interop.DoServerStreaming)},
	{name: "ping_pong", run: withTestService(interop.DoPingPong)},
	{name: "empty_stream", run: withTestService(interop.DoEmptyStream)},
	{name: "timeout_on_sleeping_server", run: withTestService(interop.DoTimeoutOnSleepingServer)},
	{name: "cancel_after_begin", run: withTestService(interop.DoCancelAfterBegin)},
	{name: "cancel_after_first_response", run: withTestService(interop.DoCancelAfterFirstResponse)},
	{name: "status_code_and_message", run: withTestService(interop.DoStatusCodeAndMessage)},
	{name: "special_status_message", run: withTestService(interop.DoSpecialStatusMessage)},
	{name: "custom_metadata", run: withTestService(interop.DoCustomMetadata)},
	{name: "unimplemented_method", run: func(ctx context.Context, cc *grpc.ClientConn, _ func() *grpc.ClientConn) {
		interop.DoUnimplementedMethod(ctx, cc)
	}},
	{name: "unimplemented_service", run: func(ctx context.Context, cc *grpc.ClientConn, _ func() *grpc.ClientConn) {
		interop.DoUnimplementedService(ctx, testpb.NewUnimplementedServiceClient(cc))
	}},
	{name: "pick_first_unary", run: func(ctx context.Context, cc *grpc.ClientConn, _ func() *grpc.ClientConn) {
		interop.DoPickFirstUnary(ctx, testpb.NewTestServiceClient(cc))
	}},
	{name: "orca_per_rpc", run: func(ctx context.Context, cc *grpc.ClientConn, _ func() *grpc.ClientConn) {
		interop.DoORCAPerRPCTest(ctx, testpb.NewTestServiceClient(cc))
	}},
	{
		name: "orca_oob",
		// grpc-go's own interop runs lower the minimum through
		// google.golang.org/grpc/internal.ORCAAllowAnyMinReportingInterval.
		skip: "an ORCA service outside grpc-go reports at most every 30 s (orca.ServiceOptions.MinReportingInterval), and DoORCAOOBTest gives up after 30 s; every other case keeps an ORCA stream open through the proxy all the same",
		run: func(ctx context.Context, cc *grpc.ClientConn, _ func() *grpc.ClientConn) {
			interop.DoORCAOOBTest(ctx, testpb.NewTestServiceClient(cc))
		},
	},
	{name: "rpc_soak", run: soak(false)},
	{name: "channel_soak", run: soak(true)},
}

// interopServer is grpc-go's interop test server, which leaves server_id
// empty; pick_first_unary needs it (grpc-go's xDS interop server fills it).
type interopServer struct {
	testpb.TestServiceServer
}

func (s interopServer) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	resp, err := s.TestServiceServer.UnaryCall(ctx, req)
	if resp != nil && req.GetFillServerId() {
		resp.ServerId = "interop-server"
	}
	return resp, err
}

// startInteropServer runs the interop server as grpc-go's interop/server
// does (plaintext, with ORCA; the reporting interval is raised to 30 s
// outside grpc-go), until the test ends.
func startInteropServer(t *testing.T) string {
	t.Helper()
	srv := grpc.NewServer(orca.CallMetricsServerOption(nil))
	recorder := orca.NewServerMetricsRecorder()
	if err := orca.Register(srv, orca.ServiceOptions{MinReportingInterval: time.Second, ServerMetricsProvider: recorder}); err != nil {
		t.Fatal(err)
	}
	testpb.RegisterTestServiceServer(srv, interopServer{interop.NewTestServer(interop.NewTestServerOptions{MetricsRecorder: recorder})})
	return serveGRPC(t, srv)
}

func TestInterop(t *testing.T) {
	const (
		clientID = "spiffe://cluster.local/ns/default/sa/interop-client"
		serverID = "spiffe://cluster.local/ns/default/sa/interop-server"
	)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	app := startInteropServer(t)

	t.Run("direct", func(t *testing.T) {
		runInterop(t, exe, app, "")
	})

	// Through the proxy's HTTP/2 fast path, and through net/http's server
	// and ReverseProxy (--disable-fast-path).
	for _, disable := range []bool{false, true} {
		suffix := ""
		if disable {
			suffix = "-DisableFastPath"
		}

		// client -> proxy's inbound side (h2c) -> server
		t.Run("one-hop"+suffix, func(t *testing.T) {
			p := startProxy(t, Config{InboundTarget: app, DisableFastPath: disable})
			runInterop(t, exe, p.InboundAddr(), "")
			waitFor(t, "the proxy to count the interop requests", func() bool {
				return metricSum(scrape(t, p), "request_total", `direction="inbound"`) > 0
			})
		})

		// client -> proxy A's outbound side -> mTLS -> proxy B's inbound side -> server
		t.Run("two-mTLS-hops"+suffix, func(t *testing.T) {
			ca := newTestCA(t)
			server := startProxy(t, Config{InboundTarget: app, TLS: newProvider(t, ca, serverID), DisableFastPath: disable})
			res := &fakeResolver{eps: map[string][]resolve.Endpoint{
				"interop:80": {{Addr: server.InboundAddr(), Identity: serverID}},
			}}
			client := startProxy(t, Config{Resolver: res, TLS: newProvider(t, ca, clientID), DisableFastPath: disable})
			runInterop(t, exe, client.OutboundAddr(), "interop")
			// Every request crossed both proxies, over mTLS between them.
			waitFor(t, "the proxies to count the interop requests over mTLS", func() bool {
				out, in := scrape(t, client), scrape(t, server)
				nOut := metricSum(out, "request_total", `direction="outbound"`)
				nIn := metricSum(in, "request_total", `direction="inbound"`)
				return nOut > 0 && nIn > 0 &&
					metricSum(out, "request_total", `direction="outbound"`, `tls="true"`, `server_id="`+serverID+`"`) == nOut &&
					metricSum(in, "request_total", `direction="inbound"`, `tls="true"`, `client_id="`+clientID+`"`) == nIn
			})
		})
	}
}

// runInterop runs every interop case, each in a child process, against addr
// (with :authority authority, if set).
func runInterop(t *testing.T, exe, addr, authority string) {
	for _, c := range interopCases {
		t.Run(c.name, func(t *testing.T) {
			if c.skip != "" {
				t.Skip(c.skip)
			}
			const timeout = 20 * time.Second
			ctx, cancel := context.WithTimeout(t.Context(), timeout)
			defer cancel()
			cmd := exec.CommandContext(ctx, exe, "-test.run=^TestInteropClient$", "-test.count=1")
			cmd.Env = append(os.Environ(), interopCaseEnv+"="+c.name, interopAddrEnv+"="+addr, interopAuthorityEnv+"="+authority,
				// A -race binary otherwise sleeps 1 s on exit; $GORACE still overrides.
				"GORACE=atexit_sleep_ms=0 "+os.Getenv("GORACE"))
			// A child still running at the timeout dumps its goroutines.
			cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGQUIT) }
			cmd.WaitDelay = 5 * time.Second
			out, err := cmd.CombinedOutput()
			if ctx.Err() != nil {
				err = fmt.Errorf("%w: still running after %v", err, timeout)
			}
			if err != nil || !strings.Contains(string(out), interopPassed+c.name+"\n") {
				t.Errorf("interop case %s against %s failed (%v):\n%s", c.name, addr, err, out)
			}
		})
	}
}

// TestInteropClient is the child process of TestInterop: it runs the
// interop case named by $CONDUIT_INTEROP_CASE and does nothing without it.
func TestInteropClient(t *testing.T) {
	name := os.Getenv(interopCaseEnv)
	if name == "" {
		return
	}
	var c *interopCase
	for i := range interopCases {
		if interopCases[i].name == name {
			c = &interopCases[i]
		}
	}
	if c == nil {
		t.Fatalf("no interop case %q", name)
	}
	addr := os.Getenv(interopAddrEnv)
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		// As grpc-go's interop runs do: the ORCA cases need this policy,
		// and with it every channel keeps an ORCA stream open.
		grpc.WithDefaultServiceConfig(`{"loadBalancingConfig": [{"test_backend_metrics_load_balancer": {}}]}`),
	}
	if a := os.Getenv(interopAuthorityEnv); a != "" {
		opts = append(opts, grpc.WithAuthority(a))
	}
	newConn := func() *grpc.ClientConn {
		cc, err := grpc.NewClient(addr, opts...)
		if err != nil {
			panic(err) // only for a malformed target or options
		}
		return cc
	}
	cc := newConn()
	defer cc.Close()
	c.run(context.Background(), cc, newConn)
	fmt.Print(interopPassed + name + "\n")
}
