package cmd

import (
	"github.com/urfave/cli/v2"

	"github.com/conduitmesh/conduit/pkg/inject"
)

func uninjectCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:      "uninject",
		Usage:     "remove the Conduit proxy from Kubernetes workloads",
		ArgsUsage: "FILE|DIR|URL|- ...",
		Description: `Reverses conduit inject (with or without --manual): the proxy, its init
container, volumes, labels and annotations are removed and whatever injection
changed is restored, so inject then uninject gives back the original objects.
Other objects pass through untouched, and so does what inject never meshes:
objects in the control plane's namespace and pods on the host's network. A
report goes to stderr.

   kubectl get deploy -o yaml | conduit uninject - | kubectl apply -f -`,
		Action: func(c *cli.Context) error {
			var opts inject.Options
			opts.Proxy.ControlPlaneNamespace = c.String("conduit-namespace")
			return transform(c.Context, c.Args().Slice(), g.Streams, "uninjected", func(b []byte) ([]byte, []inject.Result, error) {
				return inject.Uninject(b, opts)
			})
		},
	}
}
