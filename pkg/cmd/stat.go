package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
	"github.com/conduitmesh/conduit/pkg/tui"
)

// statOptions are `conduit stat`'s flags and arguments.
type statOptions struct {
	resource      targetArg
	allNamespaces bool
	from, to      string
	fromNamespace string
	toNamespace   string
	window        time.Duration
	output        string
	cpNamespace   string
	// by is "route" for a row per route and backend (stat_routes.go),
	// "" for a row per resource.
	by string
}

func statCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:      "stat",
		Usage:     "show success rate, requests per second and latency of meshed resources",
		ArgsUsage: "TYPE[/NAME] | TYPE NAME",
		Description: "TYPE is one of namespace (ns), deployment (deploy), pod (po), service (svc), authority (au).\n" +
			"Namespaces, deployments and services are listed as they exist now: one without pods too (0/0), one deleted within the window not.\n" +
			"Where an inbound policy applies, ALLOWED and DENIED count the requests it admitted and refused in the window,\n" +
			"and TCP_ALLOWED and TCP_DENIED the opaque TCP connections (shown when there are any).\n" +
			"With --by route, one resource's outbound HTTP requests per parent authority, route (HTTPRoute or GRPCRoute;\n" +
			"[default] for requests that matched none) and backend (the service the requests went to, else the workload);\n" +
			"TIMEOUTS count responses 504 and grpc-status 4, RETRIES the route's retries (all backends), SHARE the\n" +
			"backend's share of the route's requests.\n" +
			"Examples:\n  conduit stat deploy -n demo\n  conduit stat deploy/web --to deploy/books -n demo\n  conduit stat ns -o json\n  conduit stat deploy -n demo -o yaml\n" +
			"  conduit stat --by route deploy/web -n demo -o wide",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "all-namespaces", Aliases: []string{"A"}, Usage: "show resources in every namespace"},
			&cli.StringFlag{Name: "from", Usage: "count only traffic from this resource (TYPE/NAME)"},
			&cli.StringFlag{Name: "to", Usage: "count only traffic to this resource (TYPE/NAME)"},
			&cli.StringFlag{Name: "from-namespace", Usage: "namespace of --from (default: the -n namespace)"},
			&cli.StringFlag{Name: "to-namespace", Usage: "namespace of --to (default: the -n namespace)"},
			&cli.DurationFlag{Name: "time-window", Aliases: []string{"t"}, Value: time.Minute, Usage: "how far back to aggregate, 10s to 1h"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Value: "table", Usage: "output format: table, wide, json or yaml"},
			&cli.StringFlag{Name: "by", Usage: "group by `route`: one row per parent authority, route and backend of one resource's outbound requests (default: a row per resource)"},
		},
		Action: func(c *cli.Context) error {
			args := c.Args().Slice() // flags after them were moved in front by interspersed
			res, err := parseTargetArgs(args)
			if err != nil {
				return err
			}
			o := statOptions{resource: res, allNamespaces: c.Bool("all-namespaces"), from: c.String("from"), to: c.String("to"),
				fromNamespace: c.String("from-namespace"), toNamespace: c.String("to-namespace"),
				window: c.Duration("time-window"), output: c.String("output"), cpNamespace: c.String("conduit-namespace"), by: c.String("by")}
			return runStat(c.Context, g, o)
		},
	}
}

// targetArg is TYPE[/NAME] from the command line.
type targetArg struct{ typ, name string }

func (r targetArg) String() string {
	if r.name == "" {
		return r.typ
	}
	return r.typ + "/" + r.name
}

// parseTarget parses TYPE[/NAME] and checks the type.
func parseTarget(s string) (targetArg, error) {
	typ, name, _ := strings.Cut(s, "/")
	if _, ok := stats.CanonicalType(typ); !ok || strings.Contains(name, "/") {
		return targetArg{}, fmt.Errorf("resource %q: unknown resource type %q; use TYPE[/NAME] with TYPE one of namespace (ns), deployment (deploy), pod (po), service (svc), authority (au)", s, typ)
	}
	return targetArg{typ: typ, name: name}, nil
}

// parseTargetArgs accepts "TYPE/NAME" or "TYPE NAME" (kubectl style).
func parseTargetArgs(args []string) (targetArg, error) { return parseArgsWith(args, parseTarget) }

// parseArgsWith accepts "TYPE/NAME" or "TYPE NAME" and parses it with
// parse, which checks the type.
func parseArgsWith(args []string, parse func(string) (targetArg, error)) (targetArg, error) {
	switch len(args) {
	case 0:
		return targetArg{}, errors.New("missing resource: give TYPE[/NAME], e.g. deploy/web")
	case 1:
		return parse(args[0])
	case 2:
		if strings.Contains(args[0], "/") {
			break
		}
		return parse(args[0] + "/" + args[1])
	}
	return targetArg{}, fmt.Errorf("too many arguments %q: give one TYPE[/NAME]", strings.Join(args, " "))
}

func runStat(ctx context.Context, g *Globals, o statOptions) error {
	if err := checkOutputFormat(o.output, "table", "wide", "json", "yaml"); err != nil {
		return err
	}
	if o.window < stats.MinWindow || o.window > stats.MaxWindow {
		return fmt.Errorf("time window %s is out of range: use 10s to 1h", o.window)
	}
	if err := checkStatBy(o); err != nil {
		return err
	}
	if o.by == "route" {
		return runStatRoutes(ctx, g, o)
	}
	ns := g.Namespace()
	req := &statsv1.StatRequest{
		Selector:      &statsv1.Resource{Namespace: ns, Type: o.resource.typ, Name: o.resource.name},
		AllNamespaces: o.allNamespaces,
		Window:        durationpb.New(o.window),
	}
	for _, side := range []struct {
		flag, val, ns string
		dst           **statsv1.Resource
	}{{"--from", o.from, o.fromNamespace, &req.From}, {"--to", o.to, o.toNamespace, &req.To}} {
		if side.val == "" {
			continue
		}
		r, err := parseTarget(side.val)
		if err != nil {
			return fmt.Errorf("%s: %w", side.flag, err)
		}
		rns := side.ns
		if rns == "" {
			rns = ns
		}
		*side.dst = &statsv1.Resource{Namespace: rns, Type: r.typ, Name: r.name}
	}
	conn, err := connectController(ctx, g, o.cpNamespace)
	if err != nil {
		return err
	}
	defer conn.Close()
	resp, err := statsv1.NewStatsClient(conn.cc).Stat(ctx, req)
	if err != nil {
		return conn.explain(err)
	}
	out := g.Streams.Out
	if structured(o.output) {
		return writeStructured(out, o.output, statJSON(resp.GetRows()))
	}
	if len(resp.GetRows()) == 0 {
		where := "namespace " + ns
		if o.allNamespaces {
			where = "any namespace"
		}
		fmt.Fprintf(g.Streams.ErrOut, "No %s found in %s.\n", o.resource, where)
		return nil
	}
	return tui.WriteStatTable(out, statTableRows(resp.GetRows()), tui.StatTableOptions{AllNamespaces: o.allNamespaces, Wide: o.output == "wide"})
}

func statTableRows(rows []*statsv1.StatRow) []tui.StatRow {
	out := make([]tui.StatRow, 0, len(rows))
	for _, r := range rows {
		total := r.GetSuccessCount() + r.GetFailureCount()
		row := tui.StatRow{
			Namespace: r.GetResource().GetNamespace(), Name: r.GetResource().GetName(),
			MeshedPods: int(r.GetMeshedPods()), TotalPods: int(r.GetRunningPods()),
			HasTraffic: total > 0, RPS: r.GetRps(),
			P50: r.GetLatencyMsP50(), P95: r.GetLatencyMsP95(), P99: r.GetLatencyMsP99(),
			TCPConns: int64(r.GetTcpOpenConnections()),
			Authz:    r.GetAuthzApplies(), Allowed: r.GetAuthzAllowedCount(), Denied: r.GetAuthzDeniedCount(),
			TCPAllowed: r.GetAuthzTcpAllowedCount(), TCPDenied: r.GetAuthzTcpDeniedCount(),
		}
		if total > 0 {
			row.SuccessRate = float64(r.GetSuccessCount()) / float64(total)
		}
		if w := r.GetWindow().AsDuration().Seconds(); w > 0 {
			row.ReadBPS, row.WriteBPS = float64(r.GetTcpReadBytes())/w, float64(r.GetTcpWriteBytes())/w
		}
		out = append(out, row)
	}
	return out
}

// statJSONRow is one row of `conduit stat -o json`.
type statJSONRow struct {
	Namespace      string   `json:"namespace,omitempty"`
	Type           string   `json:"type"`
	Name           string   `json:"name"`
	Meshed         string   `json:"meshed"`
	MeshedPods     uint32   `json:"meshedPods"`
	RunningPods    uint32   `json:"runningPods"`
	SuccessRate    *float64 `json:"success"`
	SuccessCount   uint64   `json:"successCount"`
	FailureCount   uint64   `json:"failureCount"`
	RPS            float64  `json:"rps"`
	LatencyMsP50   *float64 `json:"latencyMsP50"`
	LatencyMsP95   *float64 `json:"latencyMsP95"`
	LatencyMsP99   *float64 `json:"latencyMsP99"`
	TCPConnections uint64   `json:"tcpConnections"`
	ReadBytes      uint64   `json:"tcpReadBytes"`
	WriteBytes     uint64   `json:"tcpWriteBytes"`
	WindowSeconds  float64  `json:"windowSeconds"`

	// The inbound policy's decisions in the window: HTTP requests, and
	// opaque TCP connections; AuthzApplies is false (and the counts 0)
	// where no policy decides the resource's traffic.
	AuthzApplies    bool   `json:"authzApplies"`
	AllowedCount    uint64 `json:"allowedCount"`
	DeniedCount     uint64 `json:"deniedCount"`
	TCPAllowedCount uint64 `json:"tcpAllowedCount"`
	TCPDeniedCount  uint64 `json:"tcpDeniedCount"`
}

func statJSON(rows []*statsv1.StatRow) []statJSONRow {
	out := make([]statJSONRow, 0, len(rows))
	for _, r := range rows {
		j := statJSONRow{
			Namespace: r.GetResource().GetNamespace(), Type: r.GetResource().GetType(), Name: r.GetResource().GetName(),
			Meshed:     fmt.Sprintf("%d/%d", r.GetMeshedPods(), r.GetRunningPods()),
			MeshedPods: r.GetMeshedPods(), RunningPods: r.GetRunningPods(),
			SuccessCount: r.GetSuccessCount(), FailureCount: r.GetFailureCount(), RPS: r.GetRps(),
			TCPConnections: r.GetTcpOpenConnections(), ReadBytes: r.GetTcpReadBytes(), WriteBytes: r.GetTcpWriteBytes(),
			WindowSeconds: r.GetWindow().AsDuration().Seconds(),
			AuthzApplies:  r.GetAuthzApplies(), AllowedCount: r.GetAuthzAllowedCount(), DeniedCount: r.GetAuthzDeniedCount(),
			TCPAllowedCount: r.GetAuthzTcpAllowedCount(), TCPDeniedCount: r.GetAuthzTcpDeniedCount(),
		}
		j.SuccessRate, j.LatencyMsP50, j.LatencyMsP95, j.LatencyMsP99 = rateAndLatencies(r)
		out = append(out, j)
	}
	return out
}

// rateAndLatencies are a row's success rate and latencies for the JSON
// output: nil (null) when no response fell in the window.
func rateAndLatencies(r interface {
	GetSuccessCount() uint64
	GetFailureCount() uint64
	GetLatencyMsP50() float64
	GetLatencyMsP95() float64
	GetLatencyMsP99() float64
}) (success, p50, p95, p99 *float64) {
	total := r.GetSuccessCount() + r.GetFailureCount()
	if total == 0 {
		return nil, nil, nil, nil
	}
	sr := float64(r.GetSuccessCount()) / float64(total)
	l50, l95, l99 := r.GetLatencyMsP50(), r.GetLatencyMsP95(), r.GetLatencyMsP99()
	return &sr, &l50, &l95, &l99
}

// liveView reports whether a terminal UI may run: input and output are
// terminals and this is not CI.
func liveView(s IOStreams) bool { return interactive(s.In) && interactive(s.Out) }

// controllerConn is a gRPC connection to the controller, direct or through
// a Kubernetes port-forward.
type controllerConn struct {
	cc *grpc.ClientConn
	// where describes how the controller was reached, for errors.
	where string
	// token is the kubeconfig user's bearer token (port-forward only), sent
	// with tap requests for RBAC.
	token string
	// kube is set when the controller was reached through Kubernetes.
	kube      kubernetes.Interface
	stop      func()
	closeOnce sync.Once
}

// Close closes the connection and any port-forward. It may be called more
// than once (top and tap close early to end a feed, then again on return).
func (c *controllerConn) Close() {
	c.closeOnce.Do(func() {
		c.cc.Close()
		if c.stop != nil {
			c.stop()
		}
	})
}

// explain turns an RPC error into one line for the user.
func (c *controllerConn) explain(err error) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	switch st.Code() {
	case codes.Unavailable, codes.DeadlineExceeded:
		return fmt.Errorf("cannot reach the conduit controller %s: %s; start a local mesh with `conduit demo` and export the CONDUIT_CONTROLLER_ADDR it prints, or check the installation with `conduit check`", c.where, st.Message())
	case codes.Unimplemented:
		return fmt.Errorf("the conduit controller %s does not serve this API (%s); upgrade it with `conduit upgrade`", c.where, st.Message())
	}
	return errors.New(st.Message())
}

const controllerPort = 8086

// connectController reaches the controller: --controller-addr /
// CONDUIT_CONTROLLER_ADDR when set, else a port-forward to a running
// conduit-controller pod in cpNamespace.
func connectController(ctx context.Context, g *Globals, cpNamespace string) (*controllerConn, error) {
	if addr := g.ControllerAddr; addr != "" {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, fmt.Errorf("controller address %q: %w", addr, err)
		}
		return &controllerConn{cc: cc, where: "at " + addr}, nil
	}
	const noController = "no controller to talk to: start a local mesh with `conduit demo` and export the CONDUIT_CONTROLLER_ADDR it prints (or pass --controller-addr), or point --kubeconfig at a cluster with Conduit installed"
	if raw, err := g.Kube.ToRawKubeConfigLoader().RawConfig(); err == nil && len(raw.Clusters) == 0 && os.Getenv("KUBERNETES_SERVICE_HOST") == "" {
		return nil, errors.New(noController)
	}
	cfg, err := g.Kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("%s (%v)", noController, err)
	}
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("connecting to Kubernetes: %w", err)
	}
	pods, err := client.CoreV1().Pods(cpNamespace).List(ctx, metav1.ListOptions{
		LabelSelector: "conduit.io/control-plane-component=controller",
	})
	if err != nil {
		return nil, fmt.Errorf("finding the conduit controller in namespace %s: %w; is Conduit installed? run `conduit check`", cpNamespace, err)
	}
	var pod *corev1.Pod
	for i := range pods.Items {
		if p := &pods.Items[i]; p.Status.Phase == corev1.PodRunning && p.DeletionTimestamp == nil {
			pod = p
			break
		}
	}
	if pod == nil {
		return nil, fmt.Errorf("no running conduit-controller pod in namespace %s; install Conduit with `conduit install` or check it with `conduit check`", cpNamespace)
	}
	transport, upgrader, err := spdy.RoundTripperFor(cfg)
	if err != nil {
		return nil, fmt.Errorf("port-forwarding to the controller: %w", err)
	}
	url := client.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL()
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, url)
	stopCh, readyCh := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{fmt.Sprintf("0:%d", controllerPort)}, stopCh, readyCh, io.Discard, io.Discard)
	if err != nil {
		return nil, fmt.Errorf("port-forwarding to pod %s/%s: %w", pod.Namespace, pod.Name, err)
	}
	errCh := make(chan error, 1)
	go func() { errCh <- fw.ForwardPorts() }()
	stop := func() { close(stopCh); <-errCh }
	select {
	case <-readyCh:
	case err := <-errCh:
		return nil, fmt.Errorf("port-forwarding to pod %s/%s: %w", pod.Namespace, pod.Name, err)
	case <-ctx.Done():
		stop()
		return nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		stop()
		return nil, fmt.Errorf("port-forwarding to pod %s/%s: no local port", pod.Namespace, pod.Name)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", ports[0].Local)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		stop()
		return nil, fmt.Errorf("connecting through the port-forward: %w", err)
	}
	token := cfg.BearerToken
	if token == "" && cfg.BearerTokenFile != "" {
		if b, err := os.ReadFile(cfg.BearerTokenFile); err == nil {
			token = strings.TrimSpace(string(b))
		}
	}
	return &controllerConn{cc: cc, where: "in pod " + pod.Namespace + "/" + pod.Name, token: token, kube: client, stop: stop}, nil
}
