// Package tap is the controller's TapAPI: it resolves a resource
// (deploy/web, pod/x, ns/y, svc/z) to its meshed pods, opens Tap.Observe on
// each pod's proxy, merges the streams, samples requests down to max_rps and
// authorizes the caller (Kubernetes RBAC in a cluster; anyone in demo mode).
package tap

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/netip"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/time/rate"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
)

// DefaultMaxRPS is the sampling rate when a request asks for none.
const DefaultMaxRPS = 100

// PodsHeader is the response header carrying the number of proxies tapped;
// it arrives as soon as the tap is accepted, before any event.
const PodsHeader = "conduit-tap-pods"

// mergeBuffer bounds events waiting between the proxies' streams and the caller.
const mergeBuffer = 1024

// Caller is what the server knows about who asks for a tap.
type Caller struct {
	// Token is the bearer token from the request metadata ("" when none).
	Token string
	// Loopback is true when the connection comes from the controller's own
	// network namespace: a Kubernetes port-forward (which the API server
	// authorized: pods/portforward in the control plane namespace) or a
	// local process.
	Loopback bool
}

// Authorizer decides whether the caller may tap target.
type Authorizer interface {
	Authorize(ctx context.Context, caller Caller, target stats.Ref) error
}

// ErrForbidden marks a caller who may not tap the target.
var ErrForbidden = errors.New("forbidden")

// Dialer opens a Tap client to one pod's proxy; close releases it.
type Dialer func(ctx context.Context, pod stats.Pod) (client tapv1.TapClient, close func(), err error)

// InsecureDialer dials proxies' admin ports in plaintext (HTTP/2 without
// TLS): for demo mode, where every proxy listens on loopback.
func InsecureDialer(_ context.Context, pod stats.Pod) (tapv1.TapClient, func(), error) {
	cc, err := grpc.NewClient(pod.AdminAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, nil, fmt.Errorf("dialing proxy %s/%s at %s: %w", pod.Namespace, pod.Name, pod.AdminAddr, err)
	}
	return tapv1.NewTapClient(cc), func() { cc.Close() }, nil
}

// Config configures a Server.
type Config struct {
	Pods stats.Pods
	// Authorizer is nil in demo mode: everyone may tap.
	Authorizer Authorizer
	// Dial defaults to InsecureDialer.
	Dial Dialer
	Log  *slog.Logger
}

// Server serves conduit.tap.v1.TapAPI.
type Server struct {
	tapv1.UnimplementedTapAPIServer
	cfg Config
}

// NewServer returns a TapAPI server.
func NewServer(cfg Config) *Server {
	if cfg.Dial == nil {
		cfg.Dial = InsecureDialer
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	return &Server{cfg: cfg}
}

func callerOf(ctx context.Context) Caller {
	var c Caller
	md, _ := metadata.FromIncomingContext(ctx)
	for _, v := range md.Get("authorization") {
		if t, ok := strings.CutPrefix(v, "Bearer "); ok {
			c.Token = t
		}
	}
	if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
		if ap, err := netip.ParseAddrPort(p.Addr.String()); err == nil {
			c.Loopback = ap.Addr().Unmap().IsLoopback()
		}
	}
	return c
}

// Resolve returns target's pods, meshed or not, and what is known of every
// pod's identity (to name the clients of inbound requests).
func (s *Server) Resolve(ctx context.Context, target stats.Ref) ([]stats.Pod, identities, error) {
	pods, err := s.cfg.Pods.Pods(ctx)
	if err != nil {
		return nil, nil, fmt.Errorf("listing pods: %w", err)
	}
	var out []stats.Pod
	for _, p := range pods {
		if stats.Owns(p, target) {
			out = append(out, p)
		}
	}
	return out, identitiesOf(pods), nil
}

// identities maps a SPIFFE ID to the labels every pod with it shares.
type identities map[string]map[string]string

func identitiesOf(pods []stats.Pod) identities {
	ids := identities{}
	for i := range pods {
		p := &pods[i]
		if p.Identity == "" {
			continue
		}
		l := podLabels(p)
		delete(l, "service")
		prev, seen := ids[p.Identity]
		if !seen {
			ids[p.Identity] = l
			continue
		}
		for k, v := range prev {
			if l[k] != v {
				delete(prev, k) // e.g. two pods of one deployment: keep the deployment, not the pod
			}
		}
	}
	return ids
}

// TapByResource implements tapv1.TapAPIServer.
func (s *Server) TapByResource(req *tapv1.TapByResourceRequest, stream tapv1.TapAPI_TapByResourceServer) error {
	ctx := stream.Context()
	t := req.GetTarget()
	if t == nil || t.GetType() == "" {
		return status.Error(codes.InvalidArgument, "target is required, e.g. deploy/web")
	}
	target, err := stats.NormalizeRef(stats.Ref{Namespace: t.GetNamespace(), Type: t.GetType(), Name: t.GetName()})
	if err != nil || target.Type == stats.TypeAuthority {
		return status.Errorf(codes.InvalidArgument, "cannot tap resource type %q; use one of namespace, deployment, pod, service", t.GetType())
	}
	if target.Namespace == "" {
		target.Namespace = "default"
	}
	if s.cfg.Authorizer != nil {
		if err := s.cfg.Authorizer.Authorize(ctx, callerOf(ctx), target); err != nil {
			if errors.Is(err, ErrForbidden) {
				return status.Error(codes.PermissionDenied, err.Error())
			}
			return status.Errorf(codes.Unavailable, "authorizing the tap: %v", err)
		}
	}
	pods, ids, err := s.Resolve(ctx, target)
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	where := " in namespace " + target.Namespace
	if target.Type == stats.TypeNamespace {
		where = ""
	}
	if len(pods) == 0 {
		return status.Errorf(codes.NotFound, "%s not found%s", target, where)
	}
	var meshed []stats.Pod
	for _, p := range pods {
		if p.Meshed() {
			meshed = append(meshed, p)
		}
	}
	if len(meshed) == 0 {
		return status.Errorf(codes.FailedPrecondition, "%s%s has no meshed pods; inject the proxy first (conduit inject)", target, where)
	}
	maxRPS := req.GetMaxRps()
	if maxRPS <= 0 {
		maxRPS = DefaultMaxRPS
	}
	// Headers now tell the client the tap is accepted before any event.
	if err := stream.SendHeader(metadata.Pairs(PodsHeader, strconv.Itoa(len(meshed)))); err != nil {
		return err
	}
	return s.merge(ctx, meshed, ids, &tapv1.ObserveRequest{Match: req.GetMatch()}, maxRPS, stream.Send)
}

// streamKey identifies one request across its events.
type streamKey struct {
	pod    string
	base   uint32
	stream uint64
}

// maxAdmitted bounds the requests remembered as sampled; a request whose
// end never arrives is forgotten once this many newer ones were sampled.
const maxAdmitted = 8192

// sampler admits up to rps new requests per second and lets the later
// events of admitted requests through.
type sampler struct {
	lim      *rate.Limiter
	admitted map[streamKey]bool
	order    []streamKey
}

func newSampler(rps float64) *sampler {
	return &sampler{lim: rate.NewLimiter(rate.Limit(rps), max(int(rps), 1)), admitted: map[streamKey]bool{}}
}

func idOf(ev *tapv1.TapEvent) (*tapv1.TapEvent_Http_StreamId, int) {
	h := ev.GetHttp()
	switch {
	case h.GetRequestInit() != nil:
		return h.GetRequestInit().GetId(), 0
	case h.GetResponseInit() != nil:
		return h.GetResponseInit().GetId(), 1
	case h.GetResponseEnd() != nil:
		return h.GetResponseEnd().GetId(), 2
	}
	return nil, -1
}

func (s *sampler) admit(pod string, ev *tapv1.TapEvent) bool {
	id, kind := idOf(ev)
	if id == nil {
		return false
	}
	k := streamKey{pod, id.GetBase(), id.GetStream()}
	switch kind {
	case 0:
		if !s.lim.Allow() {
			return false
		}
		s.admitted[k] = true
		s.order = append(s.order, k)
		if len(s.order) > maxAdmitted {
			delete(s.admitted, s.order[0])
			s.order = s.order[1:]
		}
		return true
	case 2:
		ok := s.admitted[k]
		delete(s.admitted, k)
		return ok
	}
	return s.admitted[k]
}

type podEvent struct {
	pod *stats.Pod
	ev  *tapv1.TapEvent
}

// merge observes every pod and sends sampled, labelled events until ctx
// ends or every proxy stream ended.
func (s *Server) merge(ctx context.Context, pods []stats.Pod, ids identities, req *tapv1.ObserveRequest, maxRPS float64, send func(*tapv1.TapEvent) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	events := make(chan podEvent, mergeBuffer)
	errs := make(chan error, len(pods))
	var wg sync.WaitGroup
	for i := range pods {
		wg.Add(1)
		go func(p *stats.Pod) {
			defer wg.Done()
			errs <- s.observe(ctx, p, req, events)
		}(&pods[i])
	}
	go func() { wg.Wait(); close(events) }()

	smp := newSampler(maxRPS)
	for pe := range events {
		if !smp.admit(pe.pod.Namespace+"/"+pe.pod.Name, pe.ev) {
			continue
		}
		decorate(pe.ev, pe.pod, ids)
		if err := send(pe.ev); err != nil {
			return err
		}
	}
	if ctx.Err() != nil {
		return nil
	}
	var first error
	failed := 0
	for range pods {
		if err := <-errs; err != nil {
			failed++
			first = cmpOr(first, err)
		}
	}
	if failed == len(pods) {
		// The controller is fine; its proxies are not reachable (or do not
		// serve tap): not Unavailable, which clients read as "no controller".
		return status.Errorf(codes.FailedPrecondition, "no proxy could be tapped: %v", first)
	}
	return nil
}

func cmpOr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// observe copies one proxy's events into out until its stream ends.
func (s *Server) observe(ctx context.Context, p *stats.Pod, req *tapv1.ObserveRequest, out chan<- podEvent) error {
	client, closeFn, err := s.cfg.Dial(ctx, *p)
	if err != nil {
		s.cfg.Log.Warn("tap: dialing proxy", "pod", p.Namespace+"/"+p.Name, "err", err)
		return err
	}
	defer closeFn()
	st, err := client.Observe(ctx, req)
	if err != nil {
		return fmt.Errorf("pod %s/%s at %s: %s", p.Namespace, p.Name, p.AdminAddr, status.Convert(err).Message())
	}
	for {
		ev, err := st.Recv()
		if err != nil {
			if ctx.Err() != nil || status.Code(err) == codes.Canceled {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return nil
			}
			s.cfg.Log.Warn("tap: proxy stream ended", "pod", p.Namespace+"/"+p.Name, "err", err)
			return fmt.Errorf("pod %s/%s at %s: %s", p.Namespace, p.Name, p.AdminAddr, status.Convert(err).Message())
		}
		select {
		case out <- podEvent{pod: p, ev: ev}:
		case <-ctx.Done():
			return nil
		}
	}
}

// podLabels are the labels describing a pod on events.
func podLabels(p *stats.Pod) map[string]string {
	l := map[string]string{"namespace": p.Namespace, "pod": p.Name}
	for _, k := range []string{"deployment", "serviceaccount", "service"} {
		if v := p.Labels[k]; v != "" {
			l[k] = v
		}
	}
	return l
}

// decorate labels an event with the proxy that saw it (the source of
// outbound requests, the destination of inbound ones) and, for inbound
// mTLS requests, the client's pod as far as its identity tells.
func decorate(ev *tapv1.TapEvent, p *stats.Pod, ids identities) {
	l := podLabels(p)
	ev.ProxyLabels = l
	switch ev.GetDirection() {
	case tapv1.Direction_DIRECTION_OUTBOUND:
		if len(ev.SourceLabels) == 0 {
			ev.SourceLabels = l
		}
	case tapv1.Direction_DIRECTION_INBOUND:
		if len(ev.DestinationLabels) == 0 {
			ev.DestinationLabels = l
		}
		if len(ev.SourceLabels) == 0 && ev.GetClientId() != "" {
			if src := ids[ev.GetClientId()]; src != nil {
				ev.SourceLabels = src
			}
		}
	}
}
