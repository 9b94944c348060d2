package cmd

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/conduitmesh/conduit/pkg/controller/policy"
	"github.com/conduitmesh/conduit/pkg/inject"
)

// authzOptions are `conduit authz`'s flags and arguments.
type authzOptions struct {
	target      targetArg
	namespace   string
	cpNamespace string
	output      string
	timeout     time.Duration
	progName    string
}

// authzClients are the cluster's clients authz reads through.
type authzClients struct {
	kube    kubernetes.Interface
	dynamic dynamic.Interface
	// discovery tells which resources the API server serves; nil is kube's.
	discovery policy.Discovery
}

func authzCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:      "authz",
		Usage:     "show the inbound policy of a workload's ports: Servers, routes and who is allowed",
		ArgsUsage: "TYPE[/NAME] | TYPE NAME",
		Description: "TYPE is one of " + workloadKindList() + ".\n" +
			"For each port of the pods (their container ports, and the ports a Server selects by number),\n" +
			"the policy the controller serves their proxies: the Server (or default:POLICY when none selects\n" +
			"the port), its protocol, the authorizations of the port (route *) and of each route, and who\n" +
			"each admits. Pods of one template (pod-template-hash) share a policy: one stands for all.\n" +
			"Examples:\n  conduit authz deploy/web -n shop\n  conduit authz sts -n shop -o json",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "output format: table, json or yaml"},
			&cli.DurationFlag{Name: "timeout", Value: time.Minute, Usage: "how long to wait for the cluster's pods and policy resources to be read"},
		},
		Action: func(c *cli.Context) error {
			target, err := parseArgsWith(c.Args().Slice(), parseWorkload) // flags after it were moved in front by interspersed
			if err != nil {
				return err
			}
			o := authzOptions{target: target, namespace: g.Namespace(), cpNamespace: c.String("conduit-namespace"),
				output: c.String("output"), timeout: c.Duration("timeout"), progName: g.ProgName}
			if err := o.check(); err != nil {
				return err
			}
			clients, err := authzClientsFor(g)
			if err != nil {
				return err
			}
			return runAuthz(c.Context, o, g.Streams, clients)
		},
	}
}

func (o authzOptions) check() error {
	if err := checkOutputFormat(o.output, "table", "json", "yaml"); err != nil {
		return err
	}
	if o.timeout <= 0 {
		return fmt.Errorf("--timeout %s: give a positive duration such as 1m", o.timeout)
	}
	return nil
}

func authzClientsFor(g *Globals) (authzClients, error) {
	kube, err := clientsetFor(g)
	if err != nil {
		return authzClients{}, err
	}
	dyn, err := dynamicFor(g)
	if err != nil {
		return authzClients{}, err
	}
	return authzClients{kube: kube, dynamic: dyn}, nil
}

// runAuthz computes the effective policy of the target's ports with the
// controller's own policy index, then prints it whole; notes go to
// stderr.
func runAuthz(ctx context.Context, o authzOptions, streams IOStreams, c authzClients) error {
	if err := o.check(); err != nil {
		return err
	}
	if c.discovery == nil {
		c.discovery = c.kube.Discovery()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()
	timedOut := func(err error) error {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			return fmt.Errorf("reading the cluster took longer than --timeout %s; try again with a longer --timeout", o.timeout)
		}
		return err
	}
	notes := &noteSet{}

	mesh, err := installedMeshConfig(ctx, c.kube, o.cpNamespace)
	if errors.Is(err, errNoMesh) {
		notes.add(fmt.Sprintf("Note: %v: policies are computed with the controller's defaults (default inbound policy %s, trust domain %s); name the control plane's namespace with -L if it is elsewhere", err, mesh.defaultPolicy, mesh.trustDomain))
		mesh.source = "the controller's defaults"
	} else if err != nil {
		return timedOut(err)
	}
	cluster, err := mesh.cluster()
	if err != nil {
		return err
	}

	workloads, err := resolveWorkloads(ctx, c.kube, o.namespace, o.target)
	if err != nil {
		return timedOut(err)
	}
	var entries []authzEntry
	if podCount(workloads) > 0 {
		if entries, err = computeAuthz(ctx, o, c, cluster, workloads, notes); err != nil {
			return timedOut(err)
		}
	}

	if structured(o.output) {
		if entries == nil {
			entries = []authzEntry{}
		}
		if err := writeStructured(streams.Out, o.output, entries); err != nil {
			return err
		}
	} else if len(entries) > 0 {
		if err := writeAuthzTable(streams.Out, entries); err != nil {
			return err
		}
	}
	if len(entries) == 0 {
		what := o.target.String()
		if o.target.name != "" {
			what = "pods of " + what
		}
		notes.add(fmt.Sprintf("No running %s in namespace %s.", what, o.namespace))
	}
	notes.write(streams)
	return nil
}

func podCount(ws []workload) int {
	n := 0
	for _, w := range ws {
		n += len(w.pods)
	}
	return n
}

// computeAuthz runs the policy index over the cluster and asks it for the
// policy of every port of one pod per template.
func computeAuthz(ctx context.Context, o authzOptions, c authzClients, cluster policy.Cluster, workloads []workload, notes *noteSet) ([]authzEntry, error) {
	served, err := checkReadable(ctx, c)
	if err != nil {
		return nil, err
	}
	if !served {
		notes.add(fmt.Sprintf("The policy.conduit.io resources are not installed in this cluster: every port has its default policy; `%s install` or `%s upgrade` installs them.", o.progName, o.progName))
	}
	serverPorts, err := serverPorts(ctx, c.dynamic, o.namespace, served, notes)
	if err != nil {
		return nil, err
	}
	idx, err := policy.NewIndex(policy.Options{
		Client: c.kube, Dynamic: c.dynamic, Discovery: c.discovery, Cluster: cluster,
		Log: slog.New(&indexLog{notes: notes}),
	})
	if err != nil {
		return nil, err
	}
	// The index runs until the policies are computed; WaitSynced gives up
	// when it stops early.
	runCtx, stop := context.WithCancel(ctx)
	var runErr error
	finished := make(chan struct{})
	go func() {
		defer stop()
		runErr = idx.Run(runCtx)
		close(finished)
	}()
	defer func() {
		stop()
		<-finished
	}()
	if err := idx.WaitSynced(runCtx); err != nil {
		stop()
		<-finished
		if runErr != nil {
			err = runErr
		}
		return nil, fmt.Errorf("reading the cluster's pods and policy resources: %w", err)
	}

	var out []authzEntry
	for _, w := range workloads {
		for _, grp := range w.groups() {
			e := authzEntry{Namespace: o.namespace, Resource: w.String(), Pod: grp.pod.Name, Template: grp.template,
				Pods: grp.pods, Meshed: inject.Meshed(&grp.pod.Spec), Ports: []authzPort{}}
			declared := containerPorts(grp.pod)
			ports := append(slices.Clone(declared), serverPorts...)
			slices.Sort(ports)
			ports = slices.Compact(ports)
			gone := false
			for _, port := range ports {
				srv, err := idx.Inbound(o.namespace, grp.pod.Name, port)
				if errors.Is(err, policy.ErrPodNotFound) {
					notes.add(fmt.Sprintf("Pod %s/%s is gone.", o.namespace, grp.pod.Name))
					gone = true
					break
				}
				if err != nil {
					return nil, fmt.Errorf("computing the policy of %s/%s port %d: %w", o.namespace, grp.pod.Name, port, err)
				}
				// A port the pod does not declare is shown when a Server
				// selects it.
				if !slices.Contains(declared, port) && srv.GetServer().GetKind() != "server" {
					continue
				}
				e.Ports = append(e.Ports, portOf(port, srv, cluster.TrustDomain))
			}
			if !gone {
				out = append(out, e)
			}
		}
	}
	return out, nil
}

// policyResources are what the policy index watches when served.
var policyResources = []schema.GroupVersionResource{
	policy.ServersResource, policy.AuthorizationPoliciesResource,
	policy.MeshTLSAuthenticationsResource, policy.NetworkAuthenticationsResource,
	policy.HTTPRoutesResource, policy.GRPCRoutesResource,
}

// checkReadable fails with one line when the user may not list what the
// policy index reads in every namespace (it would wait for it until the
// timeout), and reports whether the policy resources are served.
func checkReadable(ctx context.Context, c authzClients) (policyServed bool, err error) {
	forbidden := func(what string, err error) error {
		if apierrors.IsForbidden(err) {
			return fmt.Errorf("you may not list %s in every namespace, which conduit authz reads as the controller does: ask your cluster admin for list and watch on pods, namespaces and the policy.conduit.io resources (%v)", what, err)
		}
		return fmt.Errorf("listing %s: %w", what, err)
	}
	one := metav1.ListOptions{Limit: 1}
	if _, err := c.kube.CoreV1().Pods("").List(ctx, one); err != nil {
		return false, forbidden("pods", err)
	}
	if _, err := c.kube.CoreV1().Namespaces().List(ctx, one); err != nil {
		return false, forbidden("namespaces", err)
	}
	lists := map[string][]string{}
	for _, gvr := range policyResources {
		gv := gvr.GroupVersion().String()
		names, ok := lists[gv]
		if !ok {
			l, err := c.discovery.ServerResourcesForGroupVersion(gv)
			if err != nil && !apierrors.IsNotFound(err) {
				return false, fmt.Errorf("asking the API server whether it serves %s: %w", gv, err)
			}
			names = []string{}
			if l != nil {
				for _, r := range l.APIResources {
					names = append(names, r.Name)
				}
			}
			lists[gv] = names
		}
		if !slices.Contains(names, gvr.Resource) {
			continue
		}
		if gvr == policy.ServersResource {
			policyServed = true
		}
		if _, err := c.dynamic.Resource(gvr).List(ctx, one); err != nil {
			return false, forbidden(gvr.GroupResource().String(), err)
		}
	}
	return policyServed, nil
}

// serverPorts are the port numbers the Servers of ns select: a pod's port
// that it does not declare still has a Server's policy.
func serverPorts(ctx context.Context, dyn dynamic.Interface, ns string, served bool, notes *noteSet) ([]uint32, error) {
	if !served {
		return nil, nil
	}
	list, err := dyn.Resource(policy.ServersResource).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing the Servers of namespace %s: %w", ns, err)
	}
	var out []uint32
	for _, u := range list.Items {
		var s policy.Server
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, &s); err != nil {
			notes.add(fmt.Sprintf("Server %s/%s cannot be read (%v): it is ignored.", ns, u.GetName(), err))
			continue
		}
		if p := s.Spec.Port; p.Type == intstr.Int && p.IntVal > 0 && p.IntVal < 1<<16 {
			out = append(out, uint32(p.IntVal))
		}
	}
	slices.Sort(out)
	return slices.Compact(out), nil
}

// noteSet gathers the notes for stderr, each once, in order.
type noteSet struct {
	mu    sync.Mutex
	seen  map[string]bool // guarded by mu
	notes []string        // guarded by mu
}

func (n *noteSet) add(s string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.seen[s] {
		return
	}
	if n.seen == nil {
		n.seen = map[string]bool{}
	}
	n.seen[s] = true
	n.notes = append(n.notes, s)
}

func (n *noteSet) write(streams IOStreams) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, s := range n.notes {
		fmt.Fprintln(streams.ErrOut, s)
	}
}

// indexLog turns what the policy index logs into notes: the objects it
// ignores while computing a policy (an AuthorizationPolicy whose
// authentication does not exist, say) and its warnings.
type indexLog struct {
	notes *noteSet
	attrs []slog.Attr
}

func (h *indexLog) Enabled(context.Context, slog.Level) bool { return true }

func (h *indexLog) Handle(_ context.Context, r slog.Record) error {
	attrs := map[string]string{}
	for _, a := range h.attrs {
		attrs[a.Key] = a.Value.String()
	}
	r.Attrs(func(a slog.Attr) bool {
		attrs[a.Key] = a.Value.String()
		return true
	})
	switch {
	case attrs["object"] != "" && attrs["reason"] != "":
		h.notes.add(fmt.Sprintf("Ignored %s: %s.", attrs["object"], attrs["reason"]))
	case r.Level >= slog.LevelWarn:
		keys := make([]string, 0, len(attrs))
		for k := range attrs {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		msg := "Warning: " + r.Message
		for _, k := range keys {
			msg += " " + k + "=" + attrs[k]
		}
		h.notes.add(msg)
	}
	return nil
}

func (h *indexLog) WithAttrs(as []slog.Attr) slog.Handler {
	return &indexLog{notes: h.notes, attrs: append(slices.Clone(h.attrs), as...)}
}

func (h *indexLog) WithGroup(string) slog.Handler { return h }
