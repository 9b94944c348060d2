package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/conduitmesh/conduit/pkg/tui"
)

type topOptions struct {
	filter      tapFilter
	output      string
	duration    time.Duration
	cpNamespace string
}

func topCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:      "top",
		Usage:     "rank the busiest paths of a meshed resource, live",
		ArgsUsage: "TYPE[/NAME] | TYPE NAME",
		Description: "On a terminal, a live table (1-9 and 0 sort by column, r reverses, space pauses, q quits);\n" +
			"piped or with -o, a snapshot of --duration of traffic. ROUTE is the HTTPRoute or GRPCRoute whose rule\n" +
			"outbound requests matched (- for none).\n" +
			"Example:\n  conduit top deploy/web -n demo",
		Flags: append(tapFilterFlags(100),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output format: table, json or yaml (default: the live view on a terminal, a table otherwise)"},
			&cli.DurationFlag{Name: "duration", Value: 10 * time.Second, Usage: "how long to watch before printing a snapshot (piped or with -o)"}),
		Action: func(c *cli.Context) error {
			f, err := tapFilterFrom(c)
			if err != nil {
				return err
			}
			return runTop(c.Context, g, topOptions{filter: f, output: c.String("output"), duration: c.Duration("duration"), cpNamespace: c.String("conduit-namespace")})
		},
	}
}

func runTop(ctx context.Context, g *Globals, o topOptions) error {
	if o.output != "" {
		if err := checkOutputFormat(o.output, "table", "json", "yaml"); err != nil {
			return err
		}
	}
	if o.duration <= 0 {
		return fmt.Errorf("--duration %s: must be above 0", o.duration)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ts, err := openTap(ctx, g, o.filter, o.cpNamespace)
	if err != nil {
		return err
	}
	defer ts.conn.Close()
	if o.output == "" && liveView(g.Streams) {
		return runLive(ctx, g, tui.NewTopModel(o.filter.target.String()), ts)
	}

	// Snapshot: collect for the duration (or until interrupted), then print.
	table := tui.NewTopTable()
	events := make(chan tui.TapEvent)
	errc := make(chan error, 1)
	go func() {
		defer close(events)
		for {
			ev, err := ts.next()
			if err != nil {
				errc <- err
				return
			}
			if te, ok := tuiEvent(ev); ok {
				select {
				case events <- te:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	timer := time.NewTimer(o.duration)
	defer timer.Stop()
	var streamErr error
collect:
	for {
		select {
		case te, ok := <-events:
			if !ok {
				streamErr = <-errc // the tap ended before the duration
				break collect
			}
			table.Add(te)
		case <-timer.C:
			break collect
		case <-ctx.Done():
			break collect
		}
	}
	cancel()
	ts.conn.Close()
	for range events { // wait for the reader to stop
	}
	if streamErr != nil && !errors.Is(streamErr, io.EOF) {
		return streamErr
	}
	rows := table.Rows(tui.ColCount, true)
	if structured(o.output) {
		type rowJSON struct {
			Source       string  `json:"source"`
			Destination  string  `json:"destination"`
			Method       string  `json:"method"`
			Path         string  `json:"path"`
			Route        string  `json:"route,omitempty"`
			RouteKind    string  `json:"routeKind,omitempty"`
			Count        int64   `json:"count"`
			BestMicros   int64   `json:"bestMicros"`
			WorstMicros  int64   `json:"worstMicros"`
			LastMicros   int64   `json:"lastMicros"`
			SuccessRate  float64 `json:"success"`
			SuccessCount int64   `json:"successCount"`
		}
		out := make([]rowJSON, 0, len(rows))
		for _, r := range rows {
			out = append(out, rowJSON{r.Source, r.Destination, r.Method, r.Path, r.Route, r.RouteKind, r.Count,
				r.Best.Microseconds(), r.Worst.Microseconds(), r.Last.Microseconds(), r.SuccessRate(), r.Successes})
		}
		return writeStructured(g.Streams.Out, o.output, out)
	}
	if len(rows) == 0 {
		fmt.Fprintf(g.Streams.ErrOut, "No requests to %s finished in %s.\n", o.filter.target, o.duration)
		return nil
	}
	tw := tabwriter.NewWriter(g.Streams.Out, 0, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "SOURCE\tDESTINATION\tMETHOD\tPATH\tCOUNT\tBEST\tWORST\tLAST\tSUCCESS\tROUTE")
	for _, r := range rows {
		route := r.Route
		if route == "" {
			route = "-"
		}
		fmt.Fprintln(tw, strings.Join([]string{r.Source, r.Destination, r.Method, r.Path, strconv.FormatInt(r.Count, 10),
			tui.FormatLatency(r.Best), tui.FormatLatency(r.Worst), tui.FormatLatency(r.Last), tui.FormatPercent(r.SuccessRate(), true), route}, "\t"))
	}
	return tw.Flush()
}
