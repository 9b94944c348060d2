package cmd

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/conduitmesh/conduit/pkg/install"
	"github.com/conduitmesh/conduit/pkg/version"
)

type upgradeOptions struct {
	values   install.ValueOptions
	identity install.IdentityFiles
	dryRun   bool
	output   string // json or yaml: print the plan only
	yes      bool
	force    bool
	wait     *install.WaitOptions // nil: do not wait
}

func upgradeCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:  "upgrade",
		Usage: "upgrade the control plane to this CLI's version, or change its values",
		Description: `Reads the installed values and certificates from the cluster, re-renders the
chart at this CLI's version keeping them (flags change values), applies with
server-side apply, deletes the objects the new version no longer has, and waits.
--dry-run shows the server-side diff and changes nothing; -o json|yaml prints
the same plan as data. On a terminal it asks before applying unless --yes;
without a terminal it never asks.

   ` + g.ProgName + ` upgrade --dry-run
   ` + g.ProgName + ` upgrade -o json | jq '.changes[] | select(.action == "delete")'
   ` + g.ProgName + ` upgrade -L mesh --yes
   ` + g.ProgName + ` upgrade --yes --set webhook.timeoutSeconds=5
   ` + g.ProgName + ` upgrade --identity-trust-anchors-file ca.crt --identity-issuer-certificate-file issuer.crt --identity-issuer-key-file issuer.key`,
		Flags: append(append(valueFlags(), identityFlags("replacing the installed ones (all three together)")...),
			&cli.BoolFlag{Name: "dry-run", Usage: "print the diff against the cluster and change nothing"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "only print the plan as json or yaml, changing nothing"},
			&cli.BoolFlag{Name: "yes", Aliases: []string{"y"}, Usage: "do not ask for confirmation"},
			&cli.BoolFlag{Name: "force-conflicts", Usage: "take over fields another field manager changed (server-side apply --force-conflicts)"},
			&cli.BoolFlag{Name: "wait", Value: true, Usage: "wait until the control plane is ready and its proxy injector answers"},
			&cli.DurationFlag{Name: "timeout", Value: 5 * time.Minute, Usage: "how long --wait waits"},
			waitInjectorFlag(),
		),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return fmt.Errorf("upgrade takes no arguments, got %q", c.Args().First())
			}
			ns, _, err := g.lifecycleNamespace()
			if err != nil {
				return err
			}
			return runUpgrade(c.Context, g, upgradeOptions{
				values:   valueOptions(c, ns),
				identity: identityFiles(c),
				dryRun:   c.Bool("dry-run"),
				output:   c.String("output"),
				yes:      c.Bool("yes"),
				force:    c.Bool("force-conflicts"),
				wait:     waitOptions(c),
			})
		},
	}
}

func runUpgrade(ctx context.Context, g *Globals, o upgradeOptions) error {
	if o.output != "" {
		if err := checkOutputFormat(o.output, "json", "yaml"); err != nil {
			return err
		}
	}
	// A bad value fails the same with or without a reachable cluster.
	if err := o.values.Check(); err != nil {
		return err
	}
	ns := o.values.Namespace
	client, err := lifecycleClient(g)
	if err != nil {
		return err
	}
	objs, from, err := client.RenderUpgrade(ctx, ns, install.UpgradeOptions{Values: o.values, Identity: o.identity, Version: version.Version, Now: time.Now()})
	if err != nil {
		return err
	}
	changes, err := client.Plan(ctx, ns, objs, o.force)
	if err != nil {
		return err
	}
	if structured(o.output) {
		return writeStructured(g.Streams.Out, o.output, upgradePlan(ns, from, version.Version, changes))
	}
	if o.dryRun {
		install.WritePlan(g.Streams.Out, changes)
		return nil
	}
	if len(changes) == 0 {
		fmt.Fprintf(g.Streams.Out, "No changes: Conduit %s in namespace %s is up to date.\n", version.Version, ns)
		return nil
	}
	if !o.yes && interactive(g.Streams.In) && interactive(g.Streams.ErrOut) {
		install.WritePlan(g.Streams.ErrOut, changes)
		if !confirm(g.Streams.In, g.Streams.ErrOut, fmt.Sprintf("Upgrade Conduit in namespace %s from %s to %s?", ns, from, version.Version)) {
			return errors.New("upgrade cancelled: nothing was changed")
		}
	}
	err = runSteps(ctx, g, fmt.Sprintf("Upgrading Conduit in namespace %s from %s to %s", ns, from, version.Version), func(ctx context.Context, report install.Reporter) error {
		return client.Upgrade(ctx, objs, changes, o.force, o.wait, report)
	})
	if err != nil {
		return err
	}
	fmt.Fprintf(g.Streams.Out, "Conduit in namespace %s is upgraded from %s to %s (%d objects changed). Run `%s check` to verify it.\n", ns, from, version.Version, len(changes), g.ProgName)
	return nil
}

// planJSON is `conduit upgrade -o json|yaml`: what the upgrade would change.
type planJSON struct {
	Namespace   string           `json:"namespace"`
	FromVersion string           `json:"fromVersion"`
	ToVersion   string           `json:"toVersion"`
	Changes     []planChangeJSON `json:"changes"`
	// Create, Update and Delete count the changes by action.
	Create int `json:"create"`
	Update int `json:"update"`
	Delete int `json:"delete"`
}

type planChangeJSON struct {
	Action    install.Action `json:"action"`
	Group     string         `json:"group,omitempty"`
	Kind      string         `json:"kind"`
	Namespace string         `json:"namespace,omitempty"`
	Name      string         `json:"name"`
	// Diff is the unified diff live → planned, secrets masked.
	Diff string `json:"diff"`
}

func upgradePlan(ns, from, to string, changes []install.Change) planJSON {
	p := planJSON{Namespace: ns, FromVersion: from, ToVersion: to, Changes: make([]planChangeJSON, 0, len(changes))}
	for _, ch := range changes {
		p.Changes = append(p.Changes, planChangeJSON{Action: ch.Action, Group: ch.Key.GroupKind.Group, Kind: ch.Key.GroupKind.Kind,
			Namespace: ch.Key.Namespace, Name: ch.Key.Name, Diff: ch.Diff})
		switch ch.Action {
		case install.ActionCreate:
			p.Create++
		case install.ActionUpdate:
			p.Update++
		case install.ActionDelete:
			p.Delete++
		}
	}
	return p
}
