package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"

	"github.com/conduitmesh/conduit/pkg/install"
)

type uninstallOptions struct {
	namespace string // of the control plane
	output    string
	yes       bool
	force     bool                 // even with meshed pods left
	wait      *install.WaitOptions // nil: do not wait for the objects to be gone
}

func uninstallCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:  "uninstall",
		Usage: "delete the control plane: every object labelled as part of the install",
		Description: `Finds the install's objects by their inventory labels
(` + install.InventorySelector("<namespace>") + `), cluster-scoped ones included, and
deletes them, the namespace last if the install created it (a namespace that
existed before the install is kept), and waits until they are gone, so that
an install can follow at once (--wait=false returns after deleting).
Workloads and their injected proxies are never touched: uninject them first;
while pods outside the control plane's namespace run the proxy, uninstall
refuses unless --force. The Gateway API CRDs are kept (other
meshes and gateways use them, and deleting them deletes every route). On a
terminal it asks before deleting; without one it needs --yes. -o yaml|json
prints what would be deleted and changes nothing.

   ` + g.ProgName + ` uninstall -o yaml
   ` + g.ProgName + ` uninstall --yes`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "only print the objects that would be deleted, as yaml or json"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask for confirmation"},
			&cli.BoolFlag{Name: "force", Aliases: []string{"f"}, Usage: "uninstall even while pods outside the control plane's namespace run the proxy"},
			&cli.BoolFlag{Name: "wait", Value: true, Usage: "wait until the deleted objects are gone, the namespace included (--wait=false to return after deleting)"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "how long --wait waits"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("uninstall takes no arguments, got %q", c.Args().First())
			}
			ns, _, err := g.lifecycleNamespace()
			if err != nil {
				return err
			}
			o := uninstallOptions{namespace: ns, output: c.String("output"), yes: c.Bool("yes"), force: c.Bool("force")}
			if c.Bool("wait") {
				o.wait = &install.WaitOptions{Timeout: c.Duration("timeout")}
			}
			return runUninstall(c.Context, g, o)
		},
	}
}

func runUninstall(ctx context.Context, g *Globals, o uninstallOptions) error {
	if o.output != "" {
		if err := checkOutputFormat(o.output, "yaml", "json"); err != nil {
			return err
		}
	}
	ns := o.namespace
	client, err := lifecycleClient(g)
	if err != nil {
		return err
	}
	inv, err := client.Inventory(ctx, ns)
	if err != nil {
		return err
	}
	inv, kept, err := client.KeepUserNamespace(ctx, ns, inv)
	if err != nil {
		return err
	}
	if len(inv) == 0 {
		return fmt.Errorf("nothing to uninstall: no objects labelled %s (name the control plane namespace with -L)", install.InventorySelector(ns))
	}
	switch o.output {
	case "yaml":
		return install.WriteYAML(g.Streams.Out, install.ForReview(inv))
	case "json":
		return install.WriteJSON(g.Streams.Out, install.ForReview(inv))
	}
	if !o.force {
		pods, err := client.MeshedPods(ctx, ns)
		if err != nil {
			return err
		}
		if len(pods) > 0 {
			return &install.MeshedPodsError{Pods: pods, ProgName: g.ProgName}
		}
	}
	if err := client.CheckPermissions(ctx, inv, "delete"); err != nil {
		return err
	}
	if err := confirmUninstall(g, o.yes, ns, inv, kept); err != nil {
		return err
	}
	err = runSteps(ctx, g, fmt.Sprintf("Uninstalling Conduit from namespace %s", ns), func(ctx context.Context, report install.Reporter) error {
		return client.Uninstall(ctx, inv, o.wait, report)
	})
	if err != nil {
		return err
	}
	switch {
	case kept:
		fmt.Fprintf(g.Streams.Out, "Conduit is uninstalled from namespace %s (%d objects deleted; the namespace existed before the install and is kept).\n", ns, len(inv))
	case o.wait == nil:
		fmt.Fprintf(g.Streams.Out, "Conduit is uninstalled from namespace %s (%d objects deleted; the namespace finishes terminating in the background).\n", ns, len(inv))
	default:
		fmt.Fprintf(g.Streams.Out, "Conduit is uninstalled from namespace %s (%d objects deleted, the namespace included).\n", ns, len(inv))
	}
	return nil
}

// confirmUninstall asks on a terminal before inv is deleted; without one
// (piped, CI) it refuses unless yes (--yes) was given.
func confirmUninstall(g *Globals, yes bool, ns string, inv []*unstructured.Unstructured, kept bool) error {
	if yes {
		return nil
	}
	if !interactive(g.Streams.In) || !interactive(g.Streams.ErrOut) {
		return fmt.Errorf("uninstall would delete %d objects of the control plane in namespace %s and there is no terminal to confirm on: review them with `%s uninstall -L %s -o yaml`, then pass --yes", len(inv), ns, g.ProgName, ns)
	}
	for _, obj := range inv {
		fmt.Fprintf(g.Streams.ErrOut, "  %s\n", install.KeyOf(obj))
	}
	if kept {
		fmt.Fprintf(g.Streams.ErrOut, "  (namespace %s existed before the install: it is kept)\n", ns)
	}
	if !confirm(g.Streams.In, g.Streams.ErrOut, fmt.Sprintf("Delete these %d objects?", len(inv))) {
		return errors.New("uninstall cancelled: nothing was deleted")
	}
	return nil
}
