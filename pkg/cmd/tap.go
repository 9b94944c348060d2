package cmd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
	ctltap "github.com/conduitmesh/conduit/pkg/controller/tap"
	"github.com/conduitmesh/conduit/pkg/tui"
)

// tapFilter is what tap and top send to the controller.
type tapFilter struct {
	target    targetArg
	path      string
	method    string
	authority string
	maxRPS    float64
}

func tapFilterFlags(defaultRPS float64) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "path", Usage: "show only requests whose path starts with this"},
		&cli.StringFlag{Name: "method", Usage: "show only requests with this HTTP method"},
		&cli.StringFlag{Name: "authority", Usage: "show only requests to this authority (host:port)"},
		&cli.Float64Flag{Name: "max-rps", Value: defaultRPS, Usage: "the most requests per second to sample, across all pods"},
	}
}

func tapFilterFrom(c *cli.Context) (tapFilter, error) {
	res, err := parseTargetArgs(c.Args().Slice()) // flags after it were moved in front by interspersed
	if err != nil {
		return tapFilter{}, err
	}
	if t, _ := stats.CanonicalType(res.typ); t == stats.TypeAuthority {
		return tapFilter{}, fmt.Errorf("resource %q: authorities cannot be tapped; tap a namespace, deployment, pod or service and use --authority", res)
	}
	f := tapFilter{target: res, path: c.String("path"), method: c.String("method"), authority: c.String("authority"), maxRPS: c.Float64("max-rps")}
	if f.maxRPS <= 0 {
		return tapFilter{}, fmt.Errorf("--max-rps %v: must be above 0", f.maxRPS)
	}
	if f.path != "" && !strings.HasPrefix(f.path, "/") {
		return tapFilter{}, fmt.Errorf("--path %q: a path starts with /", f.path)
	}
	return f, nil
}

type tapOptions struct {
	filter      tapFilter
	output      string
	cpNamespace string
}

func tapCommand(g *Globals) *cli.Command {
	return &cli.Command{
		Name:      "tap",
		Usage:     "watch the requests of a meshed resource live",
		ArgsUsage: "TYPE[/NAME] | TYPE NAME",
		Description: "On a terminal, an interactive table (/ filters, space pauses, enter shows details, q quits);\n" +
			"piped, one line per event (req, rsp, end) as key=value pairs, JSON lines with -o json,\n" +
			"or one YAML document per event with -o yaml. Where an inbound policy applies, req events\n" +
			"show its decision (authz=allow:server/web-http, authz=deny:server/web-http).\n" +
			"Example:\n  conduit tap deploy/web -n demo --path /books",
		Flags: append(tapFilterFlags(ctltap.DefaultMaxRPS),
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output format: wide, json or yaml (default: the live view on a terminal, lines otherwise)"}),
		Action: func(c *cli.Context) error {
			f, err := tapFilterFrom(c)
			if err != nil {
				return err
			}
			return runTap(c.Context, g, tapOptions{filter: f, output: c.String("output"), cpNamespace: c.String("conduit-namespace")})
		},
	}
}

// tapStream is an accepted tap.
type tapStream struct {
	conn   *controllerConn
	stream tapv1.TapAPI_TapByResourceClient
}

// openTap starts a tap and waits until the controller accepts it, so bad
// targets fail before any view is drawn.
func openTap(ctx context.Context, g *Globals, f tapFilter, cpNamespace string) (*tapStream, error) {
	var matches []*tapv1.Match
	add := func(h *tapv1.Match_Http) { matches = append(matches, &tapv1.Match{Match: &tapv1.Match_Http_{Http: h}}) }
	if f.method != "" {
		add(&tapv1.Match_Http{Match: &tapv1.Match_Http_Method{Method: strings.ToUpper(f.method)}})
	}
	if f.path != "" {
		add(&tapv1.Match_Http{Match: &tapv1.Match_Http_Path{Path: &tapv1.Match_StringMatch{Match: &tapv1.Match_StringMatch_Prefix{Prefix: f.path}}}})
	}
	if f.authority != "" {
		add(&tapv1.Match_Http{Match: &tapv1.Match_Http_Authority{Authority: &tapv1.Match_StringMatch{Match: &tapv1.Match_StringMatch_Exact{Exact: strings.ToLower(f.authority)}}}})
	}
	req := &tapv1.TapByResourceRequest{
		Target: &tapv1.Resource{Namespace: g.Namespace(), Type: f.target.typ, Name: f.target.name},
		MaxRps: f.maxRPS,
	}
	if len(matches) > 0 {
		req.Match = &tapv1.Match{Match: &tapv1.Match_All{All: &tapv1.Match_Seq{Matches: matches}}}
	}
	conn, err := connectController(ctx, g, cpNamespace)
	if err != nil {
		return nil, err
	}
	if conn.kube != nil {
		if err := checkTapAccess(ctx, conn.kube, req.Target); err != nil {
			conn.Close()
			return nil, err
		}
	}
	if conn.token != "" {
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+conn.token)
	}
	stream, err := tapv1.NewTapAPIClient(conn.cc).TapByResource(ctx, req)
	if err == nil {
		var md metadata.MD
		if md, err = stream.Header(); err == nil && len(md.Get(ctltap.PodsHeader)) == 0 {
			// Refused: the error comes with the (trailers-only) end of the stream.
			_, err = stream.Recv()
			if err == nil || errors.Is(err, io.EOF) {
				err = status.Error(codes.Unknown, "the controller ended the tap without a reason")
			}
		}
	}
	if err != nil {
		conn.Close()
		return nil, conn.explain(err)
	}
	return &tapStream{conn: conn, stream: stream}, nil
}

// checkTapAccess asks the API server whether the kubeconfig user may tap
// target (SelfSubjectAccessReview), so users get RBAC's answer whatever
// their credentials; the controller checks again when it gets a token.
func checkTapAccess(ctx context.Context, kube kubernetes.Interface, target *tapv1.Resource) error {
	ref, err := stats.NormalizeRef(stats.Ref{Namespace: target.GetNamespace(), Type: target.GetType(), Name: target.GetName()})
	if err != nil {
		return err
	}
	ns := ref.Namespace
	if ref.Type == stats.TypeNamespace {
		ns = ref.Name
	}
	review, err := kube.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, &authzv1.SelfSubjectAccessReview{
		Spec: authzv1.SelfSubjectAccessReviewSpec{ResourceAttributes: &authzv1.ResourceAttributes{
			Namespace: ns, Verb: ctltap.TapVerb, Group: ctltap.TapGroup, Resource: ctltap.TapResource,
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("checking your permission to tap %s: %w", ref, err)
	}
	if review.Status.Allowed {
		return nil
	}
	user := "you"
	if who, err := kube.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{}); err == nil {
		user = fmt.Sprintf("user %q", who.Status.UserInfo.Username)
	}
	where := " in namespace " + ns
	if ns == "" {
		where = ""
	}
	return fmt.Errorf("forbidden: %s cannot tap %s%s (needs verb %q on resource %q in API group %q)",
		user, ref, where, ctltap.TapVerb, ctltap.TapResource, ctltap.TapGroup)
}

// next returns the next event; io.EOF when the tap ended normally.
func (t *tapStream) next() (*tapv1.TapEvent, error) {
	ev, err := t.stream.Recv()
	if err != nil {
		if errors.Is(err, io.EOF) || status.Code(err) == codes.Canceled {
			return nil, io.EOF
		}
		return nil, t.conn.explain(err)
	}
	return ev, nil
}

func runTap(ctx context.Context, g *Globals, o tapOptions) error {
	if o.output != "" {
		if err := checkOutputFormat(o.output, "wide", "json", "yaml"); err != nil {
			return err
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ts, err := openTap(ctx, g, o.filter, o.cpNamespace)
	if err != nil {
		return err
	}
	defer ts.conn.Close()
	if o.output == "" && liveView(g.Streams) {
		return runLive(ctx, g, tui.NewTapModel(o.filter.target.String()), ts)
	}
	for {
		ev, err := ts.next()
		if err != nil {
			if errors.Is(err, io.EOF) || ctx.Err() != nil {
				return nil
			}
			return err
		}
		var b []byte
		switch o.output {
		case "json": // one object per line
			b, err = encodeStructured("json", tapEventJSON(ev), false)
		case "yaml": // one document per event
			b, err = encodeStructured("yaml", tapEventJSON(ev), false)
			b = append([]byte("---\n"), b...)
		default:
			b = []byte(tapLine(ev, o.output == "wide") + "\n")
		}
		if err != nil {
			return err
		}
		if _, err := g.Streams.Out.Write(b); err != nil {
			return nil // the reader went away (e.g. `| head`)
		}
	}
}

// runLive runs a live view fed by the tap until q or the end of the tap.
func runLive(ctx context.Context, g *Globals, m tea.Model, ts *tapStream) error {
	p := tea.NewProgram(m, tea.WithContext(ctx), tea.WithAltScreen(),
		tea.WithInput(g.Streams.In), tea.WithOutput(g.Streams.Out))
	feedCtx, stopFeed := context.WithCancel(ctx)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			ev, err := ts.next()
			if feedCtx.Err() != nil {
				return
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				p.Send(tui.StreamEndMsg{Err: err})
				return
			}
			if te, ok := tuiEvent(ev); ok {
				p.Send(tui.TapEventMsg(te))
			}
		}
	}()
	_, err := p.Run()
	stopFeed()
	ts.conn.Close() // ends the feed's Recv
	wg.Wait()
	if err != nil && !errors.Is(err, tea.ErrProgramKilled) && ctx.Err() == nil {
		return fmt.Errorf("running the live view: %w", err)
	}
	return nil
}

func streamID(ev *tapv1.TapEvent) (id *tapv1.TapEvent_Http_StreamId, kind string) {
	h := ev.GetHttp()
	switch {
	case h.GetRequestInit() != nil:
		return h.GetRequestInit().GetId(), "req"
	case h.GetResponseInit() != nil:
		return h.GetResponseInit().GetId(), "rsp"
	case h.GetResponseEnd() != nil:
		return h.GetResponseEnd().GetId(), "end"
	}
	return nil, ""
}

func addrString(a interface {
	GetIp() []byte
	GetPort() uint32
}) string {
	ip, ok := netip.AddrFromSlice(a.GetIp())
	if !ok {
		return "-"
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.GetPort())).String()
}

// resourceName names a peer from its labels: deploy/web, else pod/web-0.
func resourceName(l map[string]string) string {
	switch {
	case l["deployment"] != "":
		return "deploy/" + l["deployment"]
	case l["pod"] != "":
		return "pod/" + l["pod"]
	}
	return ""
}

// saName shortens spiffe://td/ns/NS/sa/SA to sa/SA.
func saName(id string) string {
	if i := strings.LastIndex(id, "/sa/"); i >= 0 {
		return "sa/" + id[i+4:]
	}
	return ""
}

func peers(ev *tapv1.TapEvent) (src, dst string) {
	src = resourceName(ev.GetSourceLabels())
	if src == "" {
		src = saName(ev.GetClientId())
	}
	if src == "" {
		src = addrString(ev.GetSource())
	}
	dst = resourceName(ev.GetDestinationLabels())
	if dst == "" {
		dst = saName(ev.GetServerId())
	}
	if dst == "" {
		dst = addrString(ev.GetDestination())
	}
	return src, dst
}

func direction(ev *tapv1.TapEvent) string {
	switch ev.GetDirection() {
	case tapv1.Direction_DIRECTION_INBOUND:
		return "inbound"
	case tapv1.Direction_DIRECTION_OUTBOUND:
		return "outbound"
	}
	return "unknown"
}

func headersOf(hs []*tapv1.Header) []tui.Header {
	out := make([]tui.Header, 0, len(hs))
	for _, h := range hs {
		out = append(out, tui.Header{Name: h.GetName(), Value: string(h.GetValue())})
	}
	return out
}

// tuiEvent converts an event for the views.
func tuiEvent(ev *tapv1.TapEvent) (tui.TapEvent, bool) {
	id, kind := streamID(ev)
	if id == nil {
		return tui.TapEvent{}, false
	}
	src, dst := peers(ev)
	te := tui.TapEvent{
		ID: fmt.Sprintf("%d:%d", id.GetBase(), id.GetStream()), Time: ev.GetTimestamp().AsTime().Local(),
		Source: src, Destination: dst, Direction: direction(ev), TLS: ev.GetTls(), GRPCStatus: tui.NoGRPCStatus,
	}
	h := ev.GetHttp()
	switch kind {
	case "req":
		r := h.GetRequestInit()
		te.Kind, te.Method, te.Authority, te.Path, te.Headers = tui.RequestInit, r.GetMethod(), r.GetAuthority(), r.GetPath(), headersOf(r.GetHeaders())
		te.RouteKind, te.RouteName = r.GetRoute().GetKind(), r.GetRoute().GetName()
		if a := r.GetAuthz(); a != nil {
			te.Authz = &tui.Authz{Allowed: a.GetAllowed(), Status: int(a.GetHttpStatus()), Server: policyRefName(a.GetServer()),
				Route: policyRefName(a.GetRoute()), Authorization: policyRefName(a.GetAuthorization()), Reason: a.GetReason()}
		}
	case "rsp":
		r := h.GetResponseInit()
		te.Kind, te.Status, te.Latency, te.ResponseHeaders = tui.ResponseInit, int(r.GetHttpStatus()), r.GetSinceRequestInit().AsDuration(), headersOf(r.GetHeaders())
	case "end":
		r := h.GetResponseEnd()
		te.Kind, te.Duration, te.ResponseBytes = tui.ResponseEnd, r.GetSinceRequestInit().AsDuration(), int64(r.GetResponseBytes())
		if eos, ok := r.GetEos().GetEnd().(*tapv1.Eos_GrpcStatusCode); ok {
			te.GRPCStatus = int(eos.GrpcStatusCode)
		}
	}
	return te, true
}

// policyRefName prints a policy resource as kind/name ("server/web-http"),
// "" when absent.
func policyRefName(r *tapv1.PolicyRef) string {
	switch {
	case r == nil || (r.GetKind() == "" && r.GetName() == ""):
		return ""
	case r.GetKind() == "":
		return r.GetName()
	}
	return r.GetKind() + "/" + r.GetName()
}

// tapAuthzText is the decision as tap lines show it: allow:server/web-http,
// deny:default/deny.
func tapAuthzText(a *tapv1.Authorization) string {
	v := "deny"
	if a.GetAllowed() {
		v = "allow"
	}
	return v + ":" + policyRefName(a.GetServer())
}

// tapLine prints an event as grep-friendly key=value pairs, Linkerd style.
func tapLine(ev *tapv1.TapEvent, wide bool) string {
	id, kind := streamID(ev)
	if id == nil {
		return "unknown event"
	}
	proxy := "out"
	if ev.GetDirection() == tapv1.Direction_DIRECTION_INBOUND {
		proxy = "in"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s id=%d:%d proxy=%s src=%s dst=%s tls=%t", kind, id.GetBase(), id.GetStream(), proxy,
		addrString(ev.GetSource()), addrString(ev.GetDestination()), ev.GetTls())
	h := ev.GetHttp()
	switch kind {
	case "req":
		r := h.GetRequestInit()
		fmt.Fprintf(&b, " :method=%s :authority=%s :path=%s", r.GetMethod(), r.GetAuthority(), r.GetPath())
		if rt := policyRefName(r.GetRoute()); rt != "" {
			fmt.Fprintf(&b, " route=%s", rt)
		}
		if a := r.GetAuthz(); a != nil {
			fmt.Fprintf(&b, " authz=%s", tapAuthzText(a))
			if wide {
				if rt := policyRefName(a.GetRoute()); rt != "" {
					fmt.Fprintf(&b, " authz_route=%s", rt)
				}
				if by := policyRefName(a.GetAuthorization()); by != "" {
					fmt.Fprintf(&b, " authz_by=%s", by)
				}
				if a.GetReason() != "" {
					fmt.Fprintf(&b, " authz_reason=%s", strconv.Quote(a.GetReason()))
				}
			}
		}
	case "rsp":
		r := h.GetResponseInit()
		fmt.Fprintf(&b, " :status=%d latency=%dµs", r.GetHttpStatus(), r.GetSinceRequestInit().AsDuration().Microseconds())
	case "end":
		r := h.GetResponseEnd()
		switch e := r.GetEos().GetEnd().(type) {
		case *tapv1.Eos_GrpcStatusCode:
			fmt.Fprintf(&b, " grpc-status=%s", codes.Code(e.GrpcStatusCode))
		case *tapv1.Eos_ResetErrorCode:
			fmt.Fprintf(&b, " reset-error=%d", e.ResetErrorCode)
		}
		fmt.Fprintf(&b, " duration=%dµs response-length=%dB", r.GetSinceRequestInit().AsDuration().Microseconds(), r.GetResponseBytes())
		if n := r.GetRetries(); n > 0 {
			fmt.Fprintf(&b, " retries=%d", n)
		}
	}
	if wide {
		for _, side := range []struct {
			prefix string
			l      map[string]string
		}{{"src", ev.GetSourceLabels()}, {"dst", ev.GetDestinationLabels()}} {
			if r := resourceName(side.l); r != "" {
				fmt.Fprintf(&b, " %s_res=%s", side.prefix, r)
			}
			if ns := side.l["namespace"]; ns != "" {
				fmt.Fprintf(&b, " %s_ns=%s", side.prefix, ns)
			}
		}
		if ev.GetClientId() != "" {
			fmt.Fprintf(&b, " client_id=%s", ev.GetClientId())
		}
		if ev.GetServerId() != "" {
			fmt.Fprintf(&b, " server_id=%s", ev.GetServerId())
		}
	}
	return b.String()
}

// tapJSON is one event of `conduit tap -o json` (one object per line).
type tapJSON struct {
	Type              string            `json:"type"`
	ID                string            `json:"id"`
	Time              time.Time         `json:"time"`
	Direction         string            `json:"direction"`
	Source            string            `json:"source"`
	Destination       string            `json:"destination"`
	SourceLabels      map[string]string `json:"sourceLabels,omitempty"`
	DestinationLabels map[string]string `json:"destinationLabels,omitempty"`
	TLS               bool              `json:"tls"`
	ClientID          string            `json:"clientId,omitempty"`
	ServerID          string            `json:"serverId,omitempty"`
	Method            string            `json:"method,omitempty"`
	Authority         string            `json:"authority,omitempty"`
	Path              string            `json:"path,omitempty"`
	Headers           map[string]string `json:"headers,omitempty"`
	Status            uint32            `json:"status,omitempty"`
	LatencyMicros     *int64            `json:"latencyMicros,omitempty"`
	DurationMicros    *int64            `json:"durationMicros,omitempty"`
	ResponseBytes     *uint64           `json:"responseBytes,omitempty"`
	GRPCStatus        *uint32           `json:"grpcStatus,omitempty"`
	ResetErrorCode    *uint32           `json:"resetErrorCode,omitempty"`
	// Retries are the route's retries before the response ("end" events).
	Retries uint32 `json:"retries,omitempty"`

	// Authz is the inbound policy's decision (req events, when a policy applied).
	Authz *tapAuthzJSON `json:"authz,omitempty"`
	// Route is the outbound route whose rule the request matched ("req"
	// events only; absent when none did).
	Route *tapPolicyJSON `json:"route,omitempty"`
}

// tapAuthzJSON is an inbound policy's decision in `conduit tap -o json`.
type tapAuthzJSON struct {
	Allowed bool `json:"allowed"`
	// Status is what a denial was answered with (403, 404).
	Status        uint32         `json:"status,omitempty"`
	Server        *tapPolicyJSON `json:"server,omitempty"`
	Route         *tapPolicyJSON `json:"route,omitempty"`
	Authorization *tapPolicyJSON `json:"authorization,omitempty"`
	Reason        string         `json:"reason,omitempty"`
}

// tapPolicyJSON names a policy resource.
type tapPolicyJSON struct {
	Kind      string `json:"kind"`
	Name      string `json:"name"`
	Namespace string `json:"namespace,omitempty"`
}

func tapPolicyOf(r *tapv1.PolicyRef) *tapPolicyJSON {
	if r == nil {
		return nil
	}
	return &tapPolicyJSON{Kind: r.GetKind(), Name: r.GetName(), Namespace: r.GetNamespace()}
}

func headerMap(hs []*tapv1.Header) map[string]string {
	if len(hs) == 0 {
		return nil
	}
	m := map[string]string{}
	for _, h := range hs {
		if _, dup := m[h.GetName()]; dup {
			m[h.GetName()] += ", " + string(h.GetValue())
			continue
		}
		m[h.GetName()] = string(h.GetValue())
	}
	return m
}

func tapEventJSON(ev *tapv1.TapEvent) tapJSON {
	id, kind := streamID(ev)
	j := tapJSON{Type: kind, Time: ev.GetTimestamp().AsTime(), Direction: direction(ev),
		Source: addrString(ev.GetSource()), Destination: addrString(ev.GetDestination()),
		SourceLabels: ev.GetSourceLabels(), DestinationLabels: ev.GetDestinationLabels(),
		TLS: ev.GetTls(), ClientID: ev.GetClientId(), ServerID: ev.GetServerId()}
	if id != nil {
		j.ID = strconv.FormatUint(uint64(id.GetBase()), 10) + ":" + strconv.FormatUint(id.GetStream(), 10)
	}
	h := ev.GetHttp()
	switch kind {
	case "req":
		r := h.GetRequestInit()
		j.Method, j.Authority, j.Path, j.Headers = r.GetMethod(), r.GetAuthority(), r.GetPath(), headerMap(r.GetHeaders())
		if a := r.GetAuthz(); a != nil {
			j.Authz = &tapAuthzJSON{Allowed: a.GetAllowed(), Status: a.GetHttpStatus(), Server: tapPolicyOf(a.GetServer()),
				Route: tapPolicyOf(a.GetRoute()), Authorization: tapPolicyOf(a.GetAuthorization()), Reason: a.GetReason()}
		}
		j.Route = tapPolicyOf(r.GetRoute())
	case "rsp":
		r := h.GetResponseInit()
		lat := r.GetSinceRequestInit().AsDuration().Microseconds()
		j.Status, j.LatencyMicros, j.Headers = r.GetHttpStatus(), &lat, headerMap(r.GetHeaders())
	case "end":
		r := h.GetResponseEnd()
		d, n := r.GetSinceRequestInit().AsDuration().Microseconds(), r.GetResponseBytes()
		j.DurationMicros, j.ResponseBytes, j.Retries = &d, &n, r.GetRetries()
		switch e := r.GetEos().GetEnd().(type) {
		case *tapv1.Eos_GrpcStatusCode:
			j.GRPCStatus = &e.GrpcStatusCode
		case *tapv1.Eos_ResetErrorCode:
			j.ResetErrorCode = &e.ResetErrorCode
		}
	}
	return j
}
