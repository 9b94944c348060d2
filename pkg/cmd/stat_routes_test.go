package cmd

import (
	"context"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/types/known/durationpb"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
)

// fakeRoutes answers Routes with canned rows and remembers the request.
type fakeRoutes struct {
	fakeStats
	lastRoutes *statsv1.RoutesRequest
	routes     []*statsv1.RouteRow
}

func (f *fakeRoutes) Routes(_ context.Context, req *statsv1.RoutesRequest) (*statsv1.RoutesResponse, error) {
	f.lastRoutes = req
	return &statsv1.RoutesResponse{Rows: f.routes}, nil
}

// cannedRoutes: a GRPCRoute splitting books 90/10 with timeouts and
// retries, [default] traffic to authors, a backend in another namespace,
// and a route that only retried in the window (no backend, no responses).
func cannedRoutes() []*statsv1.RouteRow {
	web := &statsv1.Resource{Namespace: "demo", Type: "deployment", Name: "web"}
	svc := func(ns, name string) *statsv1.Resource {
		return &statsv1.Resource{Namespace: ns, Type: "service", Name: name}
	}
	w := durationpb.New(time.Minute)
	return []*statsv1.RouteRow{
		{Resource: web, Parent: "authors.demo.svc.cluster.local:8080", RouteName: stats.DefaultRoute, Backend: svc("demo", "authors"),
			SuccessCount: 118, FailureCount: 2, TimeoutCount: 2, Share: 1, Rps: 2, LatencyMsP50: 3, LatencyMsP95: 8.5, LatencyMsP99: 9.7, Window: w},
		{Resource: web, Parent: "authors.demo.svc.cluster.local:8080", RouteKind: "grpcroute", RouteName: "authors-grpc", RetryCount: 2, Window: w},
		{Resource: web, Parent: "books.demo.svc.cluster.local:8080", RouteKind: "grpcroute", RouteName: "books-split", Backend: svc("demo", "books-v1"),
			SuccessCount: 535, FailureCount: 5, TimeoutCount: 3, RetryCount: 15, Share: 0.9, Rps: 9, LatencyMsP50: 5.55, LatencyMsP95: 9.84, LatencyMsP99: 100, Window: w},
		{Resource: web, Parent: "books.demo.svc.cluster.local:8080", RouteKind: "grpcroute", RouteName: "books-split", Backend: svc("demo", "books-v2"),
			SuccessCount: 60, RetryCount: 15, Share: 0.1, Rps: 1, LatencyMsP50: 5, LatencyMsP95: 9.5, LatencyMsP99: 9.9, Window: w},
		{Resource: web, Parent: "ratings.shop.svc.cluster.local:80", RouteKind: "httproute", RouteName: "ratings", Backend: svc("shop", "ratings"),
			SuccessCount: 60, Share: 1, Rps: 1, LatencyMsP50: 12, LatencyMsP95: 40, LatencyMsP99: 48, Window: w},
	}
}

// TestStatByRoute prints the rows as a table, a wide table, JSON and
// YAML, each compared with its golden file (-update rewrites them).
func TestStatByRoute(t *testing.T) {
	fs := &fakeRoutes{routes: cannedRoutes()}
	addr := serveController(t, fs, nil)
	for _, tc := range []struct{ golden, output string }{
		{"stat_routes_table.golden", "table"},
		{"stat_routes_wide.golden", "wide"},
		{"stat_routes_json.golden", "json"},
		{"stat_routes_yaml.golden", "yaml"},
	} {
		out, stderr, err := runObsCLI(context.Background(), t, "stat", "deploy/web", "--by", "route", "-n", "demo", "-t", "30s",
			"-o", tc.output, "--controller-addr", addr)
		if err != nil || stderr != "" {
			t.Fatalf("-o %s: err %v, stderr %q", tc.output, err, stderr)
		}
		goldenFile(t, tc.golden, out)
	}
	want := &statsv1.RoutesRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"}, Window: durationpb.New(30 * time.Second)}
	if got := fs.lastRoutes; got.GetSelector().String() != want.GetSelector().String() || got.GetWindow().AsDuration() != 30*time.Second {
		t.Errorf("request %v, want %v", got, want)
	}
	if fs.last != nil {
		t.Errorf("--by route also called Stat: %v", fs.last)
	}
}

func TestStatByRouteNoRows(t *testing.T) {
	addr := serveController(t, &fakeRoutes{}, nil)
	out, stderr, err := runObsCLI(context.Background(), t, "stat", "--by", "route", "deploy", "web", "-n", "demo", "--controller-addr", addr)
	if err != nil || out != "" || stderr != "No HTTP requests from deploy/web in namespace demo in the last 1m0s.\n" {
		t.Errorf("err %v, stdout %q, stderr %q", err, out, stderr)
	}
	out, _, err = runObsCLI(context.Background(), t, "stat", "--by", "route", "deploy/web", "-o", "json", "--controller-addr", addr)
	if err != nil || out != "[]\n" {
		t.Errorf("json: err %v, stdout %q", err, out)
	}
}

func TestStatByRouteErrors(t *testing.T) {
	// An old controller serves no Routes.
	old := serveController(t, &fakeStats{}, nil)
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"stat", "deploy/web", "--by", "path"}, `--by "path" is not a grouping of this command: use --by route`},
		{[]string{"stat", "deploy", "--by", "route"}, "--by route needs one resource: give deploy/NAME"},
		{[]string{"stat", "deploy/web", "--by", "route", "-A"}, "--by route needs one resource: it cannot be combined with --all-namespaces"},
		{[]string{"stat", "deploy/web", "--by", "route", "--to", "deploy/books"}, "--by route cannot be combined with --from or --to"},
		{[]string{"stat", "au/web:80", "--by", "route"}, "not au/web:80"},
		{[]string{"stat", "deploy/web", "--by", "route", "-o", "xml"}, `-o "xml" is not an output format`},
		{[]string{"stat", "deploy/web", "--by", "route", "--controller-addr", old}, "does not serve this API"},
	} {
		out, _, err := runObsCLI(context.Background(), t, tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%v: err = %v, want one line containing %q", tc.args, err, tc.want)
		}
		if out != "" {
			t.Errorf("%v: stdout %q on error", tc.args, out)
		}
	}
}
