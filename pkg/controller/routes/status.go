package routes

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/leaderelection"
	"k8s.io/client-go/tools/leaderelection/resourcelock"
	"k8s.io/client-go/util/workqueue"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// Condition types of a route's status.parents[] entry.
const (
	ConditionAccepted     = "Accepted"
	ConditionResolvedRefs = "ResolvedRefs"
)

// StatusFieldManager is the field manager of the controller's status
// writes.
const StatusFieldManager = "conduit-controller"

// StatusOptions configure a StatusWriter.
type StatusOptions struct {
	Options
	// Dynamic writes the routes' status subresource.
	Dynamic dynamic.Interface
	// Now is the clock of lastTransitionTime; default time.Now.
	Now func() time.Time
	// Lease, when set, elects the one writer among the controller's
	// replicas; without it the StatusWriter always writes.
	Lease *Lease
}

// Lease configures the leader election of status writes: of the replicas
// running a StatusWriter, only the one holding the Lease writes, so that
// replicas of two versions (a rolling upgrade) do not undo each other's
// statuses, and one replica, not all, makes the writes.
type Lease struct {
	// Client reads and writes the Lease.
	Client kubernetes.Interface
	// Namespace and Name of the Lease (contract.RouteStatusLease).
	Namespace, Name string
	// Identity names this replica; unique (the pod's name and a random
	// suffix: LeaseIdentity).
	Identity string
	// LeaseDuration, RenewDeadline and RetryPeriod are client-go's leader
	// election timings; defaults 15 s, 10 s and 2 s.
	LeaseDuration, RenewDeadline, RetryPeriod time.Duration
}

// LeaseIdentity is a replica's Lease identity: its host name (a pod's
// name) and a random suffix.
func LeaseIdentity() string {
	host, _ := os.Hostname()
	var b [6]byte
	rand.Read(b[:])
	return host + "_" + hex.EncodeToString(b[:])
}

// StatusWriter writes, for every HTTPRoute and GRPCRoute parentRef that
// names a Service, a status.parents[] entry with controllerName
// contract.RouteControllerName and the conditions Accepted and
// ResolvedRefs, as GAMMA implementations do. Other controllers' entries
// are kept as they are; nothing is written when nothing changed.
type StatusWriter struct {
	opts  StatusOptions
	tr    translator
	queue workqueue.TypedRateLimitingInterface[routeKey]

	mu sync.Mutex
	// term is the context of the current leadership term (nil before
	// the first), next is closed when a term begins.
	term context.Context
	next chan struct{}
	// known are the routes seen, enqueued again when a term begins: the
	// replica that led meanwhile may have written other statuses.
	known map[routeKey]struct{}
}

// routeKey names a route.
type routeKey struct {
	gvr             schema.GroupVersionResource
	namespace, name string
}

// NewStatusWriter sets up a StatusWriter and adds its handlers to the
// informers; Run writes.
func NewStatusWriter(opts StatusOptions) (*StatusWriter, error) {
	if err := opts.defaults(); err != nil {
		return nil, err
	}
	if opts.Dynamic == nil {
		return nil, errors.New("route status needs a dynamic client")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if l := opts.Lease; l != nil {
		if err := l.check(); err != nil {
			return nil, err
		}
	}
	w := &StatusWriter{
		next:  make(chan struct{}),
		known: map[routeKey]struct{}{},
		opts:  opts,
		tr:    translator{clusterDomain: opts.ClusterDomain, service: lookup(opts.Services)},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(workqueue.DefaultTypedControllerRateLimiter[routeKey](),
			workqueue.TypedRateLimitingQueueConfig[routeKey]{Name: "route-status"}),
	}
	if err := opts.Routes.AddRouteHandler(changes(func(old, obj any) {
		for _, o := range []any{old, obj} {
			if u, ok := o.(*unstructured.Unstructured); ok {
				w.enqueue(u)
			}
		}
	})); err != nil {
		return nil, err
	}
	if err := opts.Services.AddServiceHandler(changes(func(old, obj any) {
		svc, ok := obj.(*corev1.Service)
		if !ok {
			if svc, ok = old.(*corev1.Service); !ok {
				return
			}
		}
		// Their parent or one of their backends came or went.
		for _, gvr := range policy.RouteResources {
			for _, u := range opts.Routes.RoutesOfService(gvr, svc.Namespace, svc.Name) {
				w.enqueue(u)
			}
			for _, u := range opts.Routes.RoutesWithBackend(gvr, svc.Namespace, svc.Name) {
				w.enqueue(u)
			}
		}
	})); err != nil {
		return nil, err
	}
	return w, nil
}

func (w *StatusWriter) enqueue(u *unstructured.Unstructured) {
	var gvr schema.GroupVersionResource
	switch u.GetKind() {
	case policy.KindHTTPRoute:
		gvr = policy.HTTPRoutesResource
	case policy.KindGRPCRoute:
		gvr = policy.GRPCRoutesResource
	default:
		return
	}
	k := routeKey{gvr: gvr, namespace: u.GetNamespace(), name: u.GetName()}
	w.mu.Lock()
	w.known[k] = struct{}{}
	w.mu.Unlock()
	w.queue.Add(k)
}

// beginTerm starts writing, until term is done.
func (w *StatusWriter) beginTerm(term context.Context) {
	w.mu.Lock()
	w.term = term
	close(w.next)
	w.next = make(chan struct{})
	for k := range w.known {
		w.queue.Add(k)
	}
	w.mu.Unlock()
}

// forget drops a deleted route from those queued again at each term
// (unless it is back: enqueue adds it under the same lock, after the cache
// has it).
func (w *StatusWriter) forget(k routeKey) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.opts.Routes.Route(k.gvr, k.namespace, k.name) == nil {
		delete(w.known, k)
	}
}

// waitTerm waits for a leadership term and returns its context.
func (w *StatusWriter) waitTerm(ctx context.Context) (context.Context, error) {
	for {
		w.mu.Lock()
		term, next := w.term, w.next
		w.mu.Unlock()
		if term != nil && term.Err() == nil {
			return term, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-next:
		}
	}
}

// campaign runs the leader election until ctx is done: each term, from
// acquiring the Lease to losing it, is a term of writes.
func (w *StatusWriter) campaign(ctx context.Context) {
	cfg, log := w.election()
	for ctx.Err() == nil {
		el, err := leaderelection.NewLeaderElector(cfg)
		if err != nil { // (Lease.check agrees)
			log.Error("route status: leader election", "err", err)
			return
		}
		el.Run(ctx) // returns when the term ends (or ctx does)
	}
}

// check fills in the Lease's default timings and checks it as client-go's
// elector will.
func (l *Lease) check() error {
	if l.Client == nil || l.Namespace == "" || l.Name == "" || l.Identity == "" {
		return errors.New("route status: a Lease needs a client, a namespace, a name and an identity")
	}
	l.LeaseDuration = cmp.Or(l.LeaseDuration, 15*time.Second)
	l.RenewDeadline = cmp.Or(l.RenewDeadline, 10*time.Second)
	l.RetryPeriod = cmp.Or(l.RetryPeriod, 2*time.Second)
	if l.LeaseDuration <= l.RenewDeadline || l.RetryPeriod <= 0 ||
		l.RenewDeadline <= time.Duration(leaderelection.JitterFactor*float64(l.RetryPeriod)) {
		return fmt.Errorf("route status: the Lease's timings (duration %v, renew deadline %v, retry period %v) need duration > renew deadline > %v × retry period > 0",
			l.LeaseDuration, l.RenewDeadline, l.RetryPeriod, leaderelection.JitterFactor)
	}
	return nil
}

// election is the leader election of w.opts.Lease, and its log.
func (w *StatusWriter) election() (leaderelection.LeaderElectionConfig, *slog.Logger) {
	l := w.opts.Lease
	log := w.opts.Log.With("lease", l.Namespace+"/"+l.Name, "identity", l.Identity)
	var leading atomic.Bool
	return leaderelection.LeaderElectionConfig{
		Lock: &resourcelock.LeaseLock{
			LeaseMeta:  metav1.ObjectMeta{Namespace: l.Namespace, Name: l.Name},
			Client:     l.Client.CoordinationV1(),
			LockConfig: resourcelock.ResourceLockConfig{Identity: l.Identity},
		},
		LeaseDuration:   l.LeaseDuration,
		RenewDeadline:   l.RenewDeadline,
		RetryPeriod:     l.RetryPeriod,
		ReleaseOnCancel: true,
		Name:            l.Name,
		Callbacks: leaderelection.LeaderCallbacks{
			OnStartedLeading: func(term context.Context) {
				leading.Store(true)
				log.Info("route status: this replica writes")
				w.beginTerm(term)
			},
			OnStoppedLeading: func() {
				if leading.Swap(false) {
					log.Info("route status: this replica no longer writes")
				}
			},
		},
	}, log
}

// Run writes statuses once the caches are filled, until ctx is done.
// With a Lease, it writes only while this replica holds it.
func (w *StatusWriter) Run(ctx context.Context) error {
	stop := context.AfterFunc(ctx, w.queue.ShutDown)
	defer stop()
	defer w.queue.ShutDown()
	if err := w.opts.Services.WaitSynced(ctx); err != nil {
		return nil
	}
	if err := w.opts.Routes.WaitSynced(ctx); err != nil {
		return nil
	}
	if w.opts.Lease != nil {
		done := make(chan struct{})
		go func() { defer close(done); w.campaign(ctx) }()
		defer func() { <-done }()
	} else {
		w.beginTerm(ctx)
	}
	for w.writeNext(ctx) {
	}
	return nil
}

// writeNext writes the status of the next route queued, in a term.
func (w *StatusWriter) writeNext(ctx context.Context) bool {
	term, err := w.waitTerm(ctx)
	if err != nil {
		return false
	}
	k, quit := w.queue.Get()
	if quit {
		return false
	}
	defer w.queue.Done(k)
	if term.Err() != nil {
		// The term ended while this waited: the next one writes it.
		w.queue.Add(k)
		return true
	}
	err = w.sync(term, k)
	switch {
	case err == nil:
		w.queue.Forget(k)
	case ctx.Err() != nil:
	case term.Err() != nil:
		w.queue.Add(k)
	default:
		if apierrors.IsConflict(err) {
			w.opts.Log.Debug("route status: conflict, retrying", "route", k.String())
		} else {
			w.opts.Log.Warn("route status: writing", "route", k.String(), "err", err)
		}
		w.queue.AddRateLimited(k)
	}
	return true
}

func (k routeKey) String() string {
	kind := RefKindHTTPRoute
	if k.gvr == policy.GRPCRoutesResource {
		kind = RefKindGRPCRoute
	}
	return kind + " " + k.namespace + "/" + k.name
}

// sync writes a route's status if it differs from the one it should have.
func (w *StatusWriter) sync(ctx context.Context, k routeKey) error {
	u := w.opts.Routes.Route(k.gvr, k.namespace, k.name)
	if u == nil {
		w.forget(k)
		return nil // deleted
	}
	parents, changed, summary := w.desired(k.gvr, u)
	if !changed {
		return nil
	}
	obj := u.DeepCopy()
	if err := unstructured.SetNestedSlice(obj.Object, parents, "status", "parents"); err != nil {
		return err
	}
	_, err := w.opts.Dynamic.Resource(k.gvr).Namespace(k.namespace).UpdateStatus(ctx, obj, metav1.UpdateOptions{FieldManager: StatusFieldManager})
	if apierrors.IsNotFound(err) {
		return nil
	}
	if err != nil {
		return err
	}
	w.opts.Log.Info("route status written", "route", k.String(), "status", summary)
	return nil
}

// desired computes a route's status.parents: the other controllers'
// entries as they are, then the controller's, one per parentRef that names
// a Service. changed says whether that differs from the route's status;
// summary describes the controller's entries for the log.
func (w *StatusWriter) desired(gvr schema.GroupVersionResource, u *unstructured.Unstructured) (parents []any, changed bool, summary string) {
	r, parentRefs := convert(gvr, u)
	if r == nil {
		return nil, false, ""
	}
	rawRefs, _, _ := unstructured.NestedSlice(u.Object, "spec", "parentRefs")

	// The controller's entries by parentRef, for their transition times.
	ours := map[string][]metav1.Condition{}
	parents = []any{}
	var existing []any
	for _, ps := range policy.ParentStatuses(u) {
		existing = append(existing, ps.Raw)
		if ps.ControllerName != contract.RouteControllerName {
			parents = append(parents, ps.Raw)
			continue
		}
		if ps.RefOK {
			ours[refKey(ps.ParentRef, r.namespace)] = ps.Conditions
		}
	}

	var tr *translated
	var problems []refProblem
	var lines []string
	seen := map[string]bool{}
	for i, p := range parentRefs {
		key := refKey(p, r.namespace)
		if !p.IsService() || seen[key] || i >= len(rawRefs) {
			continue
		}
		seen[key] = true
		if tr == nil {
			t := r.translate(&w.tr)
			tr = &t
			problems = w.tr.refProblems(r.namespace, r.refs)
		}
		accepted, resolved := w.conditions(p, r.namespace, tr, problems, u.GetGeneration())
		conds := ours[key]
		meta.SetStatusCondition(&conds, accepted)
		meta.SetStatusCondition(&conds, resolved)
		list := []any{}
		for _, c := range conds {
			if c.Type != ConditionAccepted && c.Type != ConditionResolvedRefs {
				continue
			}
			cm, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&c)
			if err != nil {
				continue
			}
			list = append(list, cm)
		}
		parents = append(parents, map[string]any{
			"parentRef":      runtime.DeepCopyJSONValue(rawRefs[i]),
			"controllerName": contract.RouteControllerName,
			"conditions":     list,
		})
		lines = append(lines, fmt.Sprintf("%s: %s=%s (%s), %s=%s (%s)", key,
			ConditionAccepted, accepted.Status, accepted.Reason, ConditionResolvedRefs, resolved.Status, resolved.Reason))
	}
	changed = !reflect.DeepEqual(parents, existing) && (len(parents) > 0 || len(existing) > 0)
	return parents, changed, strings.Join(lines, "; ")
}

// refKey identifies a parentRef of a route in routeNS, with its defaults.
func refKey(p policy.ParentRef, routeNS string) string {
	group, kind := policy.GatewayGroup, "Gateway"
	if p.Group != nil {
		group = *p.Group
	}
	if p.Kind != nil {
		kind = *p.Kind
	}
	key := kind + "." + group + " " + p.ServiceNamespace(routeNS) + "/" + p.Name
	if p.SectionName != nil && *p.SectionName != "" {
		key += " section " + *p.SectionName
	}
	if p.Port != nil {
		key += fmt.Sprintf(" port %d", *p.Port)
	}
	return key
}

// conditions are a Service parent's Accepted and ResolvedRefs.
func (w *StatusWriter) conditions(p policy.ParentRef, routeNS string, tr *translated, problems []refProblem, generation int64) (accepted, resolved metav1.Condition) {
	now := metav1.NewTime(w.opts.Now().Truncate(time.Second))
	accepted = metav1.Condition{Type: ConditionAccepted, Status: metav1.ConditionTrue, Reason: ReasonAccepted,
		Message: "Route accepted", ObservedGeneration: generation, LastTransitionTime: now}
	ns := p.ServiceNamespace(routeNS)
	svc := w.tr.service(ns, p.Name)
	switch {
	case svc == nil:
		accepted.Status, accepted.Reason = metav1.ConditionFalse, ReasonNoMatchingParent
		accepted.Message = fmt.Sprintf("Service %s/%s not found", ns, p.Name)
	case p.Port != nil && !hasPort(svc, *p.Port):
		accepted.Status, accepted.Reason = metav1.ConditionFalse, ReasonNoMatchingParent
		accepted.Message = fmt.Sprintf("Service %s/%s has no port %d", ns, p.Name, *p.Port)
	case p.SectionName != nil && *p.SectionName != "" && !hasPortNamed(svc, *p.SectionName):
		accepted.Status, accepted.Reason = metav1.ConditionFalse, ReasonNoMatchingParent
		accepted.Message = fmt.Sprintf("Service %s/%s has no port named %s", ns, p.Name, *p.SectionName)
	case tr.unsupported != nil:
		accepted.Status, accepted.Reason = metav1.ConditionFalse, ReasonUnsupportedValue
		accepted.Message = tr.unsupported.Error()
	case len(tr.ignored) > 0:
		accepted.Message = "Route accepted; annotations ignored: " + strings.Join(tr.ignored, "; ")
	}
	resolved = metav1.Condition{Type: ConditionResolvedRefs, Status: metav1.ConditionTrue, Reason: ReasonResolvedRefs,
		Message: "All backendRefs resolved", ObservedGeneration: generation, LastTransitionTime: now}
	if len(problems) > 0 {
		msgs := make([]string, len(problems))
		for i, pr := range problems {
			msgs[i] = pr.message
		}
		resolved.Status, resolved.Reason, resolved.Message = metav1.ConditionFalse, problems[0].reason, strings.Join(msgs, "; ")
	}
	return accepted, resolved
}

func hasPortNamed(svc *corev1.Service, name string) bool {
	for _, p := range svc.Spec.Ports {
		if p.Name == name {
			return true
		}
	}
	return false
}
