package cmd

import (
	"context"
	"fmt"

	"github.com/urfave/cli/v2"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/tui"
)

type edgesOptions struct {
	resource      targetArg
	allNamespaces bool
	output        string
	cpNamespace   string
}

func edgesCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:      "edges",
		Usage:     "show the connections between meshed resources and whether mTLS secures them",
		ArgsUsage: "TYPE",
		Description: "TYPE is one of namespace (ns), deployment (deploy), pod (po), service (svc).\n" +
			"Example:\n  conduit edges deploy -n demo",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "show edges in every namespace"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "output format: table, wide, json or yaml"},
		},
		Action: func(c *cli.Context) error {
			args := c.Args().Slice() // flags after them were moved in front by interspersed
			res, err := parseTargetArgs(args)
			if err != nil {
				return err
			}
			return runEdges(c.Context, g, edgesOptions{resource: res, allNamespaces: c.Bool("all-namespaces"),
				output: c.String("output"), cpNamespace: c.String("conduit-namespace")})
		},
	}
}

// edgeJSON is one edge of `conduit edges -o json`.
type edgeJSON struct {
	Src          string `json:"src"`
	SrcNamespace string `json:"srcNamespace"`
	Dst          string `json:"dst"`
	DstNamespace string `json:"dstNamespace"`
	ClientID     string `json:"clientId"`
	ServerID     string `json:"serverId"`
	Secured      bool   `json:"secured"`
	NoTLSReason  string `json:"noTlsReason,omitempty"`
}

func runEdges(ctx context.Context, g *Globals, o edgesOptions) error {
	if err := checkOutputFormat(o.output, "table", "wide", "json", "yaml"); err != nil {
		return err
	}
	conn, err := connectController(ctx, g, o.cpNamespace)
	if err != nil {
		return err
	}
	defer conn.Close()
	ns := g.Namespace()
	resp, err := statsv1.NewStatsClient(conn.cc).Edges(ctx, &statsv1.EdgesRequest{
		Selector:      &statsv1.Resource{Namespace: ns, Type: o.resource.typ, Name: o.resource.name},
		AllNamespaces: o.allNamespaces,
	})
	if err != nil {
		return conn.explain(err)
	}
	if structured(o.output) {
		out := make([]edgeJSON, 0, len(resp.GetEdges()))
		for _, e := range resp.GetEdges() {
			out = append(out, edgeJSON{Src: e.GetSrc().GetName(), SrcNamespace: e.GetSrc().GetNamespace(),
				Dst: e.GetDst().GetName(), DstNamespace: e.GetDst().GetNamespace(),
				ClientID: e.GetClientId(), ServerID: e.GetServerId(), Secured: e.GetSecured(), NoTLSReason: e.GetNoTlsReason()})
		}
		return writeStructured(g.Streams.Out, o.output, out)
	}
	if len(resp.GetEdges()) == 0 {
		fmt.Fprintf(g.Streams.ErrOut, "No edges between %s resources seen in the last minute in namespace %s.\n", o.resource.typ, ns)
		return nil
	}
	rows := make([]tui.EdgeRow, 0, len(resp.GetEdges()))
	for _, e := range resp.GetEdges() {
		rows = append(rows, tui.EdgeRow{Src: e.GetSrc().GetName(), Dst: e.GetDst().GetName(),
			SrcNamespace: e.GetSrc().GetNamespace(), DstNamespace: e.GetDst().GetNamespace(),
			ClientID: e.GetClientId(), ServerID: e.GetServerId(), Secured: e.GetSecured(), NoTLSReason: e.GetNoTlsReason()})
	}
	return tui.WriteEdgesTable(g.Streams.Out, rows, o.output == "wide")
}
