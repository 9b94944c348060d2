package tui

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// RouteRow is one row of `conduit stat --by route`: the requests of one
// route of a parent authority to one backend.
type RouteRow struct {
	// Route is the route's name ("[default]" for requests that matched
	// none), Kind its kind ("" for [default]), Parent the authority,
	// Backend the service (or workload) the requests went to, "" unknown.
	Route, Kind, Parent, Backend string
	// HasTraffic is false when no response was seen in the window:
	// success and latencies print "-".
	HasTraffic    bool
	SuccessRate   float64
	RPS           float64
	P50, P95, P99 float64 // milliseconds
	// Wide only. Retries are the route's, all backends together.
	Requests, Failures, Timeouts, Retries uint64
	// Share is the backend's share of the route's requests, 0 to 1.
	Share float64
}

// WriteRouteTable prints route rows as an aligned table; wide adds the
// counts and each backend's share of its route.
func WriteRouteTable(w io.Writer, rows []RouteRow, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	h := []string{"ROUTE", "KIND", "PARENT", "BACKEND", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99"}
	if wide {
		h = append(h, "REQUESTS", "FAILURES", "TIMEOUTS", "RETRIES", "SHARE")
	}
	fmt.Fprintln(tw, strings.Join(h, "\t"))
	for _, r := range rows {
		v := []string{
			r.Route, dash(r.Kind), dash(r.Parent), dash(r.Backend),
			FormatPercent(r.SuccessRate, r.HasTraffic),
			FormatRate(r.RPS),
			FormatMillis(r.P50, r.HasTraffic),
			FormatMillis(r.P95, r.HasTraffic),
			FormatMillis(r.P99, r.HasTraffic),
		}
		if wide {
			v = append(v, strconv.FormatUint(r.Requests, 10), strconv.FormatUint(r.Failures, 10),
				strconv.FormatUint(r.Timeouts, 10), strconv.FormatUint(r.Retries, 10), FormatPercent(r.Share, r.HasTraffic))
		}
		fmt.Fprintln(tw, strings.Join(v, "\t"))
	}
	return tw.Flush()
}
