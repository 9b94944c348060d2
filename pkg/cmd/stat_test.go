package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
)

// fakeStats answers with canned rows and remembers the last request.
type fakeStats struct {
	statsv1.UnimplementedStatsServer
	last  *statsv1.StatRequest
	rows  []*statsv1.StatRow
	edges []*statsv1.Edge
}

func (f *fakeStats) Stat(_ context.Context, req *statsv1.StatRequest) (*statsv1.StatResponse, error) {
	f.last = req
	if _, err := stats.NormalizeRef(stats.Ref{Type: req.GetSelector().GetType()}); err != nil {
		return nil, err
	}
	return &statsv1.StatResponse{Rows: f.rows}, nil
}

func (f *fakeStats) Edges(context.Context, *statsv1.EdgesRequest) (*statsv1.EdgesResponse, error) {
	return &statsv1.EdgesResponse{Edges: f.edges}, nil
}

// serveController serves the given services on loopback and returns the address.
func serveController(t *testing.T, st statsv1.StatsServer, tp tapv1.TapAPIServer) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	if st != nil {
		statsv1.RegisterStatsServer(gs, st)
	}
	if tp != nil {
		tapv1.RegisterTapAPIServer(gs, tp)
	}
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	return lis.Addr().String()
}

func runObsCLI(ctx context.Context, t *testing.T, args ...string) (string, string, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	err := Run(ctx, IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, append([]string{"conduit"}, args...))
	return out.String(), errOut.String(), err
}

func cannedRows() []*statsv1.StatRow {
	return []*statsv1.StatRow{
		{Resource: &statsv1.Resource{Namespace: "demo", Type: "deployment", Name: "books"}, MeshedPods: 1, RunningPods: 1,
			SuccessCount: 950, FailureCount: 50, Rps: 16.7, LatencyMsP50: 1.5, LatencyMsP95: 4.2, LatencyMsP99: 9.8,
			TcpOpenConnections: 2, Window: durationpb.New(time.Minute)},
		{Resource: &statsv1.Resource{Namespace: "demo", Type: "deployment", Name: "idle"}, MeshedPods: 0, RunningPods: 1,
			Window: durationpb.New(time.Minute)},
	}
}

func TestStatTable(t *testing.T) {
	fs := &fakeStats{rows: cannedRows()}
	addr := serveController(t, fs, nil)
	out, _, err := runObsCLI(context.Background(), t, "stat", "deploy", "-n", "demo", "--controller-addr", addr, "--to", "deploy/web", "-t", "30s")
	if err != nil {
		t.Fatal(err)
	}
	want := "" +
		"NAME    MESHED   SUCCESS   RPS       LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN\n" +
		"books   1/1      95.00%    16.7rps   1.50ms        4.20ms        9.80ms        2\n" +
		"idle    0/1      -         0.0rps    -             -             -             0\n"
	if out != want {
		t.Errorf("stdout:\n%s\nwant:\n%s", out, want)
	}
	if fs.last.GetTo().GetName() != "web" || fs.last.GetTo().GetNamespace() != "demo" || fs.last.GetWindow().AsDuration() != 30*time.Second ||
		fs.last.GetSelector().GetNamespace() != "demo" {
		t.Errorf("request = %v", fs.last)
	}
}

// TestStatTableAuthz: where a policy applies, ALLOWED and DENIED columns;
// its decisions on opaque connections get their own (TCP_ALLOWED,
// TCP_DENIED), since they count connections, not requests.
func TestStatTableAuthz(t *testing.T) {
	const head = "NAME    MESHED   SUCCESS   RPS       LATENCY_P50   LATENCY_P95   LATENCY_P99   TCP_CONN   ALLOWED   DENIED"
	cases := []struct {
		name string
		set  func(*statsv1.StatRow)
		want string
	}{
		{
			name: "requests",
			set: func(r *statsv1.StatRow) {
				r.AuthzApplies, r.AuthzAllowedCount, r.AuthzDeniedCount = true, 1000, 12
			},
			want: head + "\n" +
				"books   1/1      95.00%    16.7rps   1.50ms        4.20ms        9.80ms        2          1000      12\n" +
				"idle    0/1      -         0.0rps    -             -             -             0          -         -\n",
		},
		{
			name: "connections",
			set: func(r *statsv1.StatRow) {
				r.AuthzApplies, r.AuthzTcpAllowedCount, r.AuthzTcpDeniedCount = true, 40, 2
			},
			want: head + "   TCP_ALLOWED   TCP_DENIED\n" +
				"books   1/1      95.00%    16.7rps   1.50ms        4.20ms        9.80ms        2          0         0        40            2\n" +
				"idle    0/1      -         0.0rps    -             -             -             0          -         -        -             -\n",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rows := cannedRows()
			tc.set(rows[0])
			addr := serveController(t, &fakeStats{rows: rows}, nil)
			out, _, err := runObsCLI(context.Background(), t, "stat", "deploy", "-n", "demo", "--controller-addr", addr)
			if err != nil {
				t.Fatal(err)
			}
			if out != tc.want {
				t.Errorf("stdout:\n%s\nwant:\n%s", out, tc.want)
			}
		})
	}
}

func TestStatJSON(t *testing.T) {
	canned := cannedRows()
	canned[0].AuthzApplies, canned[0].AuthzAllowedCount, canned[0].AuthzDeniedCount = true, 940, 3
	canned[0].AuthzTcpAllowedCount, canned[0].AuthzTcpDeniedCount = 40, 2
	addr := serveController(t, &fakeStats{rows: canned}, nil)
	out, _, err := runObsCLI(context.Background(), t, "stat", "deploy/books", "-n", "demo", "-o", "json", "--controller-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v in %s", err, out)
	}
	if len(rows) != 2 || rows[0]["name"] != "books" || rows[0]["success"] != 0.95 || rows[0]["latencyMsP99"] != 9.8 ||
		rows[1]["success"] != nil || rows[0]["meshed"] != "1/1" {
		t.Errorf("rows = %v", rows)
	}
	// The policy's decisions are always there, under a policy or not.
	if rows[0]["authzApplies"] != true || rows[0]["allowedCount"] != 940.0 || rows[0]["deniedCount"] != 3.0 ||
		rows[1]["authzApplies"] != false || rows[1]["allowedCount"] != 0.0 || rows[1]["deniedCount"] != 0.0 ||
		rows[0]["tcpAllowedCount"] != 40.0 || rows[0]["tcpDeniedCount"] != 2.0 || rows[1]["tcpDeniedCount"] != 0.0 {
		t.Errorf("authz fields: %v", rows)
	}
}

func TestEdgesTable(t *testing.T) {
	addr := serveController(t, &fakeStats{edges: []*statsv1.Edge{
		{Src: &statsv1.Resource{Namespace: "demo", Name: "web"}, Dst: &statsv1.Resource{Namespace: "demo", Name: "books"}, Secured: true},
	}}, nil)
	out, _, err := runObsCLI(context.Background(), t, "edges", "deploy", "-n", "demo", "--controller-addr", addr)
	if err != nil {
		t.Fatal(err)
	}
	want := "SRC   DST     SRC_NS   DST_NS   SECURED\nweb   books   demo     demo     √\n"
	if out != want {
		t.Errorf("stdout:\n%q\nwant:\n%q", out, want)
	}
}

func TestStatErrors(t *testing.T) {
	// A port nobody listens on.
	lis, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := lis.Addr().String()
	lis.Close()
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"stat"}, "missing resource"},
		{[]string{"stat", "cronjob"}, `unknown resource type "cronjob"`},
		{[]string{"stat", "deploy", "-o", "xml"}, `-o "xml" is not an output format of this command: use table, wide, json or yaml`},
		{[]string{"stat", "deploy", "-t", "5s"}, "time window 5s is out of range"},
		{[]string{"stat", "deploy", "--to", "bogus/x"}, `--to: resource "bogus/x"`},
		{[]string{"stat", "deploy", "--controller-addr", dead}, "cannot reach the conduit controller at " + dead},
		{[]string{"edges", "deploy", "--controller-addr", dead}, "conduit demo"},
		{[]string{"tap", "au/x"}, "authorities cannot be tapped"},
		{[]string{"stat", "deploy", "--kubeconfig", "/nonexistent/kubeconfig"}, "no controller to talk to: start a local mesh with `conduit demo`"},
		{[]string{"tap", "deploy/web", "--max-rps", "0"}, "--max-rps 0"},
		{[]string{"top", "deploy/web", "--duration", "0s", "--controller-addr", dead}, "--duration 0s"},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		out, _, err := runObsCLI(ctx, t, tc.args...)
		cancel()
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err = %v, want one line containing %q", tc.args, err, tc.want)
		}
		if out != "" {
			t.Errorf("%v: stdout %q on error", tc.args, out)
		}
	}
}

// top and tap close the controller connection to end a feed and again on
// return; through a port-forward the second close panicked (found on a
// real node).
func TestControllerConnClosesOnce(t *testing.T) {
	cc, err := grpc.NewClient("passthrough:///127.0.0.1:1", grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	stops := 0
	stopCh := make(chan struct{})
	c := &controllerConn{cc: cc, stop: func() { close(stopCh); stops++ }}
	c.Close()
	c.Close()
	if stops != 1 {
		t.Errorf("the port-forward was stopped %d times, want once", stops)
	}
}
