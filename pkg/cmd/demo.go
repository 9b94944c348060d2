package cmd

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/conduitmesh/conduit/pkg/demo"
)

func demoCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:  "demo",
		Usage: "run a live mesh on this machine, no cluster needed",
		Description: `Starts, on loopback ports, the controller with its local backend and a small
bookshop: web (HTTP/1.1) calls books and authors (gRPC), books fails a share of
requests on purpose and is slow on a few, authors runs as a stable v1 and a canary
v2, and a traffic generator keeps web busy. Each app runs behind its own
conduit-proxy, with mutual TLS between them. Outbound routes (Gateway API
GRPCRoutes) retry books's failures, time out its slow lookups and split web's
calls to authors 90/10 between v1 and v2: see them with
conduit stat --by route deploy/web -n demo, and the split with conduit edges deploy -n demo.
conduit-controller and conduit-proxy must be next to conduit or on PATH (make build
puts all three in bin/).

Ctrl-C (or --duration) stops every process it started and removes its files.

   conduit demo
   conduit demo --duration 1m -o json
   conduit demo --failure-rate 0.2 --slow-rate 0.01 --rps 20`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "duration", Usage: "stop after this long (default: run until Ctrl-C)"},
			&cli.Float64Flag{Name: "failure-rate", Value: 0.05, Usage: "share of books lookups that fail on purpose (0-1); its route retries them"},
			&cli.Float64Flag{Name: "slow-rate", Value: demo.DefaultSlowRate, Usage: "share of books lookups that are slow on purpose (0-1); its route times them out"},
			&cli.Float64Flag{Name: "rps", Value: 10, Usage: "requests per second the traffic generator sends to web"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "how to describe the running demo: table, json or yaml"},
			&cli.BoolFlag{Name: "keep-dir", Usage: "keep the working directory (logs, certificates) after the demo stops"},
			&cli.DurationFlag{Name: "report-every", Value: 10 * time.Second, Usage: "how often the traffic generator's summary is printed"},
			&cli.DurationFlag{Name: "controller-restart-delay", Value: 5 * time.Second, Usage: "how long a dead controller stays down before the demo restarts it", Hidden: true},
			&cli.DurationFlag{Name: "identity-lifetime", Usage: "lifetime of the proxies' certificates (default: the controller's, 24h)", Hidden: true},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("demo takes no arguments, got %q", c.Args().Slice())
			}
			if err := checkOutputFormat(c.String("output"), "table", "json", "yaml"); err != nil {
				return err
			}
			return demo.Run(c.Context, demo.Options{
				Duration:               c.Duration("duration"),
				FailureRate:            c.Float64("failure-rate"),
				SlowRate:               c.Float64("slow-rate"),
				RPS:                    c.Float64("rps"),
				Output:                 c.String("output"),
				KeepDir:                c.Bool("keep-dir"),
				ReportEvery:            c.Duration("report-every"),
				ControllerRestartDelay: c.Duration("controller-restart-delay"),
				IdentityLifetime:       c.Duration("identity-lifetime"),
				Out:                    g.Streams.Out,
				ErrOut:                 g.Streams.ErrOut,
				Log:                    slog.New(slog.NewTextHandler(g.Streams.ErrOut, &slog.HandlerOptions{Level: slog.LevelWarn})),
			})
		},
		Subcommands: []*cli.Command{demoAppCommand(g)},
	}
}

// demoAppCommand is the hidden `conduit demo app`: the demo re-executes
// the conduit binary as each of its apps, so nothing extra ships.
func demoAppCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:   "app",
		Usage:  "run one of the demo's apps (started by conduit demo)",
		Hidden: true,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "role", Required: true, Usage: "web, books, authors or traffic"},
			&cli.StringFlag{Name: "listen", Required: true, Usage: "the app's address (its proxy's inbound target)"},
			&cli.StringFlag{Name: "outbound", Usage: "the proxy's outbound listener, for calls to other services (empty: dial the Services, as in a meshed pod)"},
			&cli.StringFlag{Name: "app-namespace", Value: demo.Namespace, Usage: "namespace of the demo's services"},
			&cli.StringFlag{Name: "cluster-domain", Value: "cluster.local"},
			&cli.IntFlag{Name: "service-port", Value: 8080},
			&cli.Float64Flag{Name: "failure-rate"},
			&cli.Float64Flag{Name: "slow-rate", Usage: "share of books lookups answered after --slow-delay (0-1)"},
			&cli.DurationFlag{Name: "slow-delay", Value: demo.SlowDelay},
			&cli.StringFlag{Name: "app-version", Usage: "the app's version, given in its answers (authors: v1, v2)"},
			&cli.Float64Flag{Name: "rps", Value: 10},
			&cli.Float64Flag{Name: "direct-share", Usage: "share of the traffic generator's requests sent straight to books (0-1)"},
			&cli.DurationFlag{Name: "report-every", Value: 10 * time.Second},
		},
		Action: func(c *cli.Context) error {
			return demo.RunApp(c.Context, demo.AppOptions{
				Role:          c.String("role"),
				Listen:        c.String("listen"),
				Outbound:      c.String("outbound"),
				Namespace:     c.String("app-namespace"),
				ClusterDomain: c.String("cluster-domain"),
				ServicePort:   c.Int("service-port"),
				FailureRate:   c.Float64("failure-rate"),
				SlowRate:      c.Float64("slow-rate"),
				SlowDelay:     c.Duration("slow-delay"),
				Version:       c.String("app-version"),
				RPS:           c.Float64("rps"),
				DirectShare:   c.Float64("direct-share"),
				ReportEvery:   c.Duration("report-every"),
				Out:           g.Streams.Out,
				Log:           slog.New(slog.NewTextHandler(g.Streams.ErrOut, nil)),
			})
		},
	}
}
