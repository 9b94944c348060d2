package cmd

import (
	"context"
	"errors"
	"fmt"

	"google.golang.org/protobuf/types/known/durationpb"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
	"github.com/conduitmesh/conduit/pkg/tui"
)

// `conduit stat --by route`: one resource's outbound HTTP traffic per
// parent authority, route and backend, from the stats API's Routes.

// checkStatBy checks --by and what it may be combined with; "" is stat's
// usual row per resource.
func checkStatBy(o statOptions) error {
	switch o.by {
	case "":
		return nil
	case "route":
	default:
		return fmt.Errorf("--by %q is not a grouping of this command: use --by route, or leave --by out for a row per resource", o.by)
	}
	typ, _ := stats.CanonicalType(o.resource.typ)
	switch {
	case typ == stats.TypeAuthority:
		return fmt.Errorf("--by route counts the routes of the resource that sends the requests: give a namespace, deployment, pod or service, not %s", o.resource)
	case o.resource.name == "":
		return fmt.Errorf("--by route needs one resource: give %s/NAME, e.g. deploy/web", o.resource.typ)
	case o.allNamespaces:
		return errors.New("--by route needs one resource: it cannot be combined with --all-namespaces")
	case o.from != "" || o.to != "":
		return errors.New("--by route cannot be combined with --from or --to: its rows already say where the requests went")
	}
	return nil
}

func runStatRoutes(ctx context.Context, g *Globals, o statOptions) error {
	ns := g.Namespace()
	req := &statsv1.RoutesRequest{
		Selector: &statsv1.Resource{Namespace: ns, Type: o.resource.typ, Name: o.resource.name},
		Window:   durationpb.New(o.window),
	}
	conn, err := connectController(ctx, g, o.cpNamespace)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := statsv1.NewStatsClient(conn.cc).Routes(ctx, req)
	if err != nil {
		return conn.explain(err)
	}
	if structured(o.output) {
		return writeStructured(g.Streams.Out, o.output, routeJSON(resp.GetRows(), ns))
	}
	if len(resp.GetRows()) == 0 {
		fmt.Fprintf(g.Streams.ErrOut, "No HTTP requests from %s in namespace %s in the last %s.\n", o.resource, ns, o.window)
		return nil
	}
	return tui.WriteRouteTable(g.Streams.Out, routeTableRows(resp.GetRows(), ns), o.output == "wide")
}

// backendName prints a route's backend as tap prints peers: svc/books,
// deploy/books, pod/books-0, with ".NAMESPACE" after the name when it is
// not ns; "" when unknown.
func backendName(r *statsv1.Resource, ns string) string {
	if r.GetName() == "" {
		return ""
	}
	short := map[string]string{stats.TypeService: "svc", stats.TypeDeployment: "deploy", stats.TypePod: "pod"}[r.GetType()]
	if short == "" {
		short = r.GetType()
	}
	name := short + "/" + r.GetName()
	if r.GetNamespace() != "" && r.GetNamespace() != ns {
		name += "." + r.GetNamespace()
	}
	return name
}

func routeTableRows(rows []*statsv1.RouteRow, ns string) []tui.RouteRow {
	out := make([]tui.RouteRow, 0, len(rows))
	for _, r := range rows {
		total := r.GetSuccessCount() + r.GetFailureCount()
		row := tui.RouteRow{
			Route: r.GetRouteName(), Kind: r.GetRouteKind(), Parent: r.GetParent(), Backend: backendName(r.GetBackend(), ns),
			HasTraffic: total > 0, RPS: r.GetRps(),
			P50: r.GetLatencyMsP50(), P95: r.GetLatencyMsP95(), P99: r.GetLatencyMsP99(),
			Requests: total, Failures: r.GetFailureCount(), Timeouts: r.GetTimeoutCount(), Retries: r.GetRetryCount(),
			Share: r.GetShare(),
		}
		if total > 0 {
			row.SuccessRate = float64(r.GetSuccessCount()) / float64(total)
		}
		out = append(out, row)
	}
	return out
}

// routeJSONRow is one row of `conduit stat --by route -o json`; its keys
// are those of stat's rows where they mean the same.
type routeJSONRow struct {
	Namespace string `json:"namespace,omitempty"`
	Type      string `json:"type"`
	Name      string `json:"name"`
	Route     string `json:"route"`
	// RouteKind is httproute or grpcroute, "" for [default].
	RouteKind string `json:"routeKind"`
	Parent    string `json:"parent"`
	// Backend is as the table prints it (svc/books-v2), "" when unknown.
	Backend      string   `json:"backend"`
	SuccessRate  *float64 `json:"success"`
	SuccessCount uint64   `json:"successCount"`
	FailureCount uint64   `json:"failureCount"`
	TimeoutCount uint64   `json:"timeoutCount"`
	// RetryCount is the route's, all backends together.
	RetryCount    uint64   `json:"retryCount"`
	Share         float64  `json:"share"`
	RPS           float64  `json:"rps"`
	LatencyMsP50  *float64 `json:"latencyMsP50"`
	LatencyMsP95  *float64 `json:"latencyMsP95"`
	LatencyMsP99  *float64 `json:"latencyMsP99"`
	WindowSeconds float64  `json:"windowSeconds"`
}

func routeJSON(rows []*statsv1.RouteRow, ns string) []routeJSONRow {
	out := make([]routeJSONRow, 0, len(rows))
	for _, r := range rows {
		j := routeJSONRow{
			Namespace: r.GetResource().GetNamespace(), Type: r.GetResource().GetType(), Name: r.GetResource().GetName(),
			Route: r.GetRouteName(), RouteKind: r.GetRouteKind(), Parent: r.GetParent(), Backend: backendName(r.GetBackend(), ns),
			SuccessCount: r.GetSuccessCount(), FailureCount: r.GetFailureCount(), TimeoutCount: r.GetTimeoutCount(),
			RetryCount: r.GetRetryCount(), Share: r.GetShare(), RPS: r.GetRps(),
			WindowSeconds: r.GetWindow().AsDuration().Seconds(),
		}
		j.SuccessRate, j.LatencyMsP50, j.LatencyMsP95, j.LatencyMsP99 = rateAndLatencies(r)
		out = append(out, j)
	}
	return out
}
