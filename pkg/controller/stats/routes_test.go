package stats

import (
	"bufio"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/durationpb"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
)

// Pages of two pods of deploy/web and one of deploy/load, as their proxies
// write them: a GRPCRoute splitting books 90/10 between two services, with
// deadlines exceeded and retries; requests to books and authors that
// matched no route; a route that only retried; inbound, TCP and load's
// traffic that no route row counts.
const (
	books   = `authority="books.demo.svc.cluster.local:8080"`
	authors = `authority="authors.demo.svc.cluster.local:8080"`
	split   = `route_kind="grpcroute",route_name="books-split"`
	toV1    = `target_addr="10.0.0.1:8080",tls="true",server_id="spiffe://cluster.local/ns/demo/sa/books",dst_deployment="books-v1",dst_namespace="demo",dst_pod="books-v1-0",dst_service="books-v1"`
	toV2    = `target_addr="10.0.0.2:8080",tls="true",server_id="spiffe://cluster.local/ns/demo/sa/books",dst_deployment="books-v2",dst_namespace="demo",dst_pod="books-v2-0",dst_service="books-v2"`
	toAu    = `target_addr="10.0.0.3:8080",tls="true",dst_deployment="authors",dst_namespace="demo",dst_pod="authors-0",dst_service="authors"`

	web0Page = `# TYPE request_total counter
request_total{direction="inbound",authority="web.demo.svc.cluster.local:80",target_addr="127.0.0.1:80",tls="false"} 500
request_total{direction="outbound",` + books + `,` + split + `,` + toV1 + `} 90
request_total{direction="outbound",` + books + `,` + split + `,` + toV2 + `} 6
request_total{direction="outbound",` + books + `,` + toV1 + `} 5
request_total{direction="outbound",` + authors + `,` + toAu + `} 20
# TYPE response_total counter
response_total{direction="inbound",authority="web.demo.svc.cluster.local:80",target_addr="127.0.0.1:80",tls="false",status_code="504",classification="failure"} 500
response_total{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="0",classification="success"} 85
response_total{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="4",classification="failure"} 3
response_total{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="14",classification="failure"} 2
response_total{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success"} 6
response_total{direction="outbound",` + books + `,` + toV1 + `,status_code="200",grpc_status="0",classification="success"} 5
response_total{direction="outbound",` + authors + `,` + toAu + `,status_code="200",classification="success"} 18
response_total{direction="outbound",` + authors + `,` + toAu + `,status_code="504",classification="failure"} 2
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="0",classification="success",le="1"} 0
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="0",classification="success",le="10"} 85
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="0",classification="success",le="100"} 85
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="0",classification="success",le="+Inf"} 85
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="4",classification="failure",le="1"} 0
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="4",classification="failure",le="10"} 0
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="4",classification="failure",le="100"} 0
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="4",classification="failure",le="+Inf"} 3
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="14",classification="failure",le="1"} 2
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="14",classification="failure",le="10"} 2
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="14",classification="failure",le="100"} 2
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="14",classification="failure",le="+Inf"} 2
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success",le="1"} 0
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success",le="10"} 6
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success",le="100"} 6
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success",le="+Inf"} 6
# TYPE outbound_http_route_retry_requests_total counter
outbound_http_route_retry_requests_total{` + books + `,` + split + `} 12
outbound_http_route_retry_requests_total{` + authors + `,route_kind="grpcroute",route_name="authors-grpc"} 2
# TYPE outbound_http_route_retry_successes_total counter
outbound_http_route_retry_successes_total{` + books + `,` + split + `} 10
# TYPE outbound_http_route_retry_limit_exceeded_total counter
outbound_http_route_retry_limit_exceeded_total{` + books + `,` + split + `} 1
# TYPE outbound_http_route_retry_overflow_total counter
outbound_http_route_retry_overflow_total{` + books + `,` + split + `} 0
# TYPE tcp_open_total counter
tcp_open_total{direction="outbound",peer="dst",` + toV1 + `} 4
`
	web1Page = `# TYPE response_total counter
response_total{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success"} 4
# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success",le="1"} 0
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success",le="10"} 4
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success",le="100"} 4
response_latency_ms_bucket{direction="outbound",` + books + `,` + split + `,` + toV2 + `,status_code="200",grpc_status="0",classification="success",le="+Inf"} 4
# TYPE outbound_http_route_retry_requests_total counter
outbound_http_route_retry_requests_total{` + books + `,` + split + `} 3
`
	loadPage = `# TYPE response_total counter
response_total{direction="outbound",` + books + `,` + split + `,` + toV1 + `,status_code="200",grpc_status="0",classification="success"} 1000
`
)

var routePods = []Pod{
	{Namespace: "demo", Name: "web-0", AdminAddr: "x", Labels: map[string]string{"deployment": "web"}, Running: true},
	{Namespace: "demo", Name: "web-1", AdminAddr: "x", Labels: map[string]string{"deployment": "web"}, Running: true},
	{Namespace: "demo", Name: "load-0", AdminAddr: "x", Labels: map[string]string{"deployment": "load"}, Running: true},
}

// routeStore scrapes the pods twice, 10 s apart: first an empty page,
// then theirs, whose series are all new and so count from zero.
func routeStore(t *testing.T) (*Store, time.Time) {
	t.Helper()
	s, t0 := NewStore(10*time.Second, time.Hour), time.Unix(1_000_000, 0)
	s.SetPods(routePods, t0)
	var pg page
	for i, text := range []string{web0Page, web1Page, loadPage} {
		checkSameAsParseMetrics(t, text, true)
		if err := pg.scan(bufio.NewReader(strings.NewReader("# no series yet\n"))); err != nil {
			t.Fatal(err)
		}
		s.apply(routePods[i], t0, &pg)
		if err := pg.scan(bufio.NewReader(strings.NewReader(text))); err != nil {
			t.Fatalf("%s: %v", routePods[i].Name, err)
		}
		s.apply(routePods[i], t0.Add(10*time.Second), &pg)
	}
	return s, t0.Add(10 * time.Second)
}

func TestRoutes(t *testing.T) {
	s, now := routeStore(t)
	svc := func(name string) Ref { return Ref{Namespace: "demo", Type: TypeService, Name: name} }
	const w = 10 * time.Second
	for _, tc := range []struct {
		name string
		sel  Ref
		want []RouteResult
	}{{
		name: "deploy/web",
		sel:  Ref{Namespace: "demo", Type: TypeDeployment, Name: "web"},
		want: []RouteResult{
			// 504s are timeouts; requests without route labels are [default].
			{Parent: "authors.demo.svc.cluster.local:8080", RouteName: DefaultRoute, Backend: svc("authors"),
				Successes: 18, Failures: 2, Timeouts: 2, Share: 1, RPS: 2, Window: w},
			// A route that retried but has no response in the window.
			{Parent: "authors.demo.svc.cluster.local:8080", RouteKind: "grpcroute", RouteName: "authors-grpc", Retries: 2, Window: w},
			{Parent: "books.demo.svc.cluster.local:8080", RouteName: DefaultRoute, Backend: svc("books-v1"),
				Successes: 5, Share: 1, RPS: 0.5, Window: w},
			// The 90/10 split, over both pods; grpc-status 4 is a timeout,
			// 14 a failure only; retries are the route's.
			{Parent: "books.demo.svc.cluster.local:8080", RouteKind: "grpcroute", RouteName: "books-split", Backend: svc("books-v1"),
				Successes: 85, Failures: 5, Timeouts: 3, Retries: 15, RetryLimitExceeded: 1, Share: 0.9, RPS: 9,
				P50: 1 + 9*(45-2)/85.0, P95: 1 + 9*(85.5-2)/85, P99: 100, Window: w},
			{Parent: "books.demo.svc.cluster.local:8080", RouteKind: "grpcroute", RouteName: "books-split", Backend: svc("books-v2"),
				Successes: 10, Retries: 15, RetryLimitExceeded: 1, Share: 0.1, RPS: 1, P50: 5, P95: 9.5, P99: 9.9, Window: w},
		},
	}, {
		name: "pod/web-1",
		sel:  Ref{Namespace: "demo", Type: TypePod, Name: "web-1"},
		want: []RouteResult{
			{Parent: "books.demo.svc.cluster.local:8080", RouteKind: "grpcroute", RouteName: "books-split", Backend: svc("books-v2"),
				Successes: 4, Retries: 3, Share: 1, RPS: 0.4, P50: 5, P95: 9.5, P99: 9.9, Window: w},
		},
	}, {
		name: "deploy/nothing",
		sel:  Ref{Namespace: "demo", Type: TypeDeployment, Name: "nothing"},
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got := s.Routes(now, RouteQuery{Selector: tc.sel, Window: time.Minute})
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateApprox(0, 1e-9), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Routes (-want +got):\n%s", diff)
			}
		})
	}
}

// Route labels split the groups stat sums: stat's numbers stay the same.
func TestRoutesLeaveStatAlone(t *testing.T) {
	s, now := routeStore(t)
	rows := s.Stat(now, StatQuery{Selector: Ref{Namespace: "demo", Type: TypeDeployment, Name: "web"},
		To: &Ref{Namespace: "demo", Type: TypeService, Name: "books-v1"}, Window: time.Minute})
	if len(rows) != 1 || rows[0].Successes != 90 || rows[0].Failures != 5 {
		t.Errorf("stat --to svc/books-v1: %+v, want 90 successes (85 routed, 5 not) and 5 failures", rows)
	}
	edges := s.Edges(now, TypeDeployment, "demo", "web", time.Minute)
	if len(edges) != 3 {
		t.Errorf("edges %+v, want web → authors, books-v1, books-v2", edges)
	}
}

func TestServerRoutes(t *testing.T) {
	s, now := routeStore(t)
	srv := NewServer(Config{Pods: PodsFunc(func(context.Context) ([]Pod, error) { return routePods, nil }), Now: func() time.Time { return now }})
	srv.store = s
	resp, err := srv.Routes(context.Background(), &statsv1.RoutesRequest{Selector: &statsv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"},
		Window: durationpb.New(30 * time.Second)})
	if err != nil {
		t.Fatal(err)
	}
	if len(resp.Rows) != 5 {
		t.Fatalf("rows %v", resp.Rows)
	}
	r := resp.Rows[4]
	want := &statsv1.RouteRow{Resource: &statsv1.Resource{Namespace: "demo", Type: TypeDeployment, Name: "web"},
		Parent: "books.demo.svc.cluster.local:8080", RouteKind: "grpcroute", RouteName: "books-split",
		Backend:      &statsv1.Resource{Namespace: "demo", Type: TypeService, Name: "books-v2"},
		SuccessCount: 10, RetryCount: 15, RetryLimitExceededCount: 1, Share: 0.1, Rps: 1,
		LatencyMsP50: 5, LatencyMsP95: 9.5, LatencyMsP99: 9.9, Window: durationpb.New(10 * time.Second)}
	if diff := cmp.Diff(want, r, cmpopts.EquateApprox(0, 1e-9), protocmp.Transform()); diff != "" {
		t.Errorf("books-v2 row (-want +got):\n%s", diff)
	}
	if resp.Rows[1].Backend != nil {
		t.Errorf("a retry-only row has a backend: %v", resp.Rows[1])
	}

	for name, req := range map[string]*statsv1.RoutesRequest{
		"no selector": {},
		"no name":     {Selector: &statsv1.Resource{Type: "deploy"}},
		"authority":   {Selector: &statsv1.Resource{Type: "au", Name: "web:80"}},
		"window":      {Selector: &statsv1.Resource{Type: "deploy", Name: "web"}, Window: durationpb.New(2 * time.Hour)},
		"bad type":    {Selector: &statsv1.Resource{Type: "cronjob", Name: "x"}},
	} {
		if _, err := srv.Routes(context.Background(), req); status.Code(err) != codes.InvalidArgument {
			t.Errorf("%s: err = %v, want InvalidArgument", name, err)
		}
	}
}

// TestRoutesFromRegistry reads route rows from a page the proxy's own
// metrics registry writes.
func TestRoutesFromRegistry(t *testing.T) {
	reg := metrics.NewRegistry()
	dst := func(svc string) string {
		return metrics.DstLabels(map[string]string{"namespace": "demo", "service": svc, "deployment": svc, "pod": svc + "-0"})
	}
	v1 := reg.Route(metrics.HTTPLabels{Direction: "outbound", Authority: "books.demo.svc.cluster.local:8080", TargetAddr: "10.0.0.1:8080",
		TLS: true, Dst: dst("books-v1"), RouteKind: "httproute", RouteName: "books-canary"})
	v2 := reg.Route(metrics.HTTPLabels{Direction: "outbound", Authority: "books.demo.svc.cluster.local:8080", TargetAddr: "10.0.0.2:8080",
		TLS: true, Dst: dst("books-v2"), RouteKind: "httproute", RouteName: "books-canary"})
	plain := reg.Route(metrics.HTTPLabels{Direction: "outbound", Authority: "books.demo.svc.cluster.local:8080", TargetAddr: "10.0.0.1:8080",
		TLS: true, Dst: dst("books-v1")})
	for i := range 20 {
		rt, status := v1, 200
		switch {
		case i%10 == 9:
			rt = v2
		case i == 0:
			status = 504
		}
		rt.Request()
		rt.Response(status, "", metrics.Classify(status, "", false), 3*time.Millisecond)
	}
	plain.Request()
	plain.Response(200, "4", metrics.Classify(200, "4", false), time.Millisecond)
	retries := reg.Retries(metrics.RetryLabels{Authority: "books.demo.svc.cluster.local:8080", RouteKind: "httproute", RouteName: "books-canary"})
	for range 3 {
		retries.Request()
	}
	retries.LimitExceeded()
	var b strings.Builder
	if _, err := reg.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	checkSameAsParseMetrics(t, b.String(), true)

	s, t0 := NewStore(10*time.Second, time.Hour), time.Unix(1_000_000, 0)
	p := routePods[0]
	s.SetPods([]Pod{p}, t0)
	var pg page
	for i, text := range []string{"# nothing yet\n", b.String()} {
		if err := pg.scan(bufio.NewReader(strings.NewReader(text))); err != nil {
			t.Fatal(err)
		}
		s.apply(p, t0.Add(time.Duration(i)*10*time.Second), &pg)
	}
	got := s.Routes(t0.Add(10*time.Second), RouteQuery{Selector: Ref{Namespace: "demo", Type: TypePod, Name: p.Name}, Window: time.Minute})
	type row struct {
		Route, Backend                string
		Successes, Failures, Timeouts float64
		Share, Retries, LimitExceeded float64
	}
	var rows []row
	for _, r := range got {
		rows = append(rows, row{r.RouteName, r.Backend.Name, r.Successes, r.Failures, r.Timeouts, r.Share, r.Retries, r.RetryLimitExceeded})
	}
	want := []row{
		{DefaultRoute, "books-v1", 0, 1, 1, 1, 0, 0},
		{"books-canary", "books-v1", 17, 1, 1, 0.9, 3, 1},
		{"books-canary", "books-v2", 2, 0, 0, 0.1, 3, 1},
	}
	if diff := cmp.Diff(want, rows, cmpopts.EquateApprox(0, 1e-9)); diff != "" {
		t.Errorf("Routes (-want +got):\n%s", diff)
	}
}
