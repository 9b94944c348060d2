package stats

import (
	"errors"
	"fmt"
	"math"
	"sort"
	"strings"
	"time"
)

// Window bounds for queries.
const (
	MinWindow     = 10 * time.Second
	MaxWindow     = time.Hour
	DefaultWindow = time.Minute
)

// ErrInvalidQuery marks a query the caller got wrong (unknown type, window
// out of range); the server maps it to INVALID_ARGUMENT.
var ErrInvalidQuery = errors.New("invalid query")

// Ref names a resource in a query; Name "" means all of the type.
type Ref struct {
	Namespace, Type, Name string
}

func (r Ref) String() string {
	if r.Name == "" {
		return r.Type
	}
	return r.Type + "/" + r.Name
}

// StatQuery is a Stat request after validation.
type StatQuery struct {
	Selector      Ref
	AllNamespaces bool
	From, To      *Ref
	Window        time.Duration
	// Existing, when not nil, holds the resources of the selector's type
	// that exist (as Resources gives them): each in scope gets a row, with
	// or without pods and traffic, and no other name does. Nil: the rows
	// come from the pods and the traffic in the window.
	Existing map[Ref]bool
}

// StatResult is one row of a Stat answer.
type StatResult struct {
	Namespace, Name         string
	MeshedPods, RunningPods int
	Successes, Failures     float64
	RPS                     float64
	P50, P95, P99           float64 // milliseconds, 0 without traffic
	TCPOpen                 float64
	ReadBytes, WriteBytes   float64
	Window                  time.Duration
	// Allowed and Denied count the inbound HTTP requests the inbound
	// policy admitted and refused, TCPAllowed and TCPDenied the opaque
	// connections; AuthzApplies is true when the pods report policy
	// decisions at all. Rows of the resource's own inbound traffic only
	// (no From or To, not authorities).
	Allowed, Denied       float64
	TCPAllowed, TCPDenied float64
	AuthzApplies          bool
}

// EdgeResult is one observed src → dst pair.
type EdgeResult struct {
	Src, Dst           Ref
	ClientID, ServerID string
	Secured            bool
	NoTLSReason        string
}

// NormalizeRef checks a resource's type and returns it with the canonical type.
func NormalizeRef(r Ref) (Ref, error) {
	t, ok := CanonicalType(r.Type)
	if !ok {
		return r, fmt.Errorf("%w: unknown resource type %q; use one of %s", ErrInvalidQuery, r.Type, strings.Join(KnownTypes(), ", "))
	}
	r.Type = t
	return r, nil
}

// CheckWindow validates a window; zero means the default.
func CheckWindow(w time.Duration) (time.Duration, error) {
	if w == 0 {
		return DefaultWindow, nil
	}
	if w < MinWindow || w > MaxWindow {
		return 0, fmt.Errorf("%w: window %s is out of range; use 10s to 1h", ErrInvalidQuery, w)
	}
	return w, nil
}

// rowAgg accumulates one row.
type rowAgg struct {
	ns, name     string
	meshed, pods int  // running pods, and those of them running a proxy
	exists       bool // some pod of the row exists (running or not)
	succ, fail   float64
	timeouts     float64             // failures that timed out (outbound only)
	buckets      map[float64]float64 // cumulative, by bound
	tcpOpen      float64
	read, write  float64
	span         time.Duration
	contributed  bool
	// allowed and denied count inbound HTTP authorization decisions,
	// tcpAllowed and tcpDenied those of opaque connections; authz is set
	// when some pod reports them.
	allowed, denied       float64
	tcpAllowed, tcpDenied float64
	authz                 bool
}

// The proxy's counters of inbound authorization decisions: HTTP
// requests, and opaque TCP connections.
const (
	authzAllowMetric    = "inbound_http_authz_allow_total"
	authzDenyMetric     = "inbound_http_authz_deny_total"
	authzTCPAllowMetric = "inbound_tcp_authz_allow_total"
	authzTCPDenyMetric  = "inbound_tcp_authz_deny_total"
)

// addAuthz adds a pod's inbound authorization decisions in the window.
// The series carry no direction label (their name says inbound), so they
// are counted apart from add's.
func (a *rowAgg) addAuthz(w *podWindow) {
	if w.pd.authz {
		a.authz = true
	}
	for i := range w.pd.groups {
		g := &w.pd.groups[i]
		if g.dir != dirAuthz {
			continue
		}
		for _, c := range []struct {
			sl  slot
			sum *float64
		}{{slotAllowed, &a.allowed}, {slotDenied, &a.denied}, {slotTCPAllowed, &a.tcpAllowed}, {slotTCPDenied, &a.tcpDenied}} {
			if v := w.sum(g.ctr[c.sl]); v > 0 {
				*c.sum += v
				a.contributed = true
			}
		}
	}
}

// add adds the pod's groups that pred selects.
func (a *rowAgg) add(w *podWindow, pred func(*group) bool) {
	for i := range w.pd.groups {
		if g := &w.pd.groups[i]; g.present && pred(g) {
			a.addGroup(w, g)
		}
	}
	a.span = max(a.span, w.span)
}

// addGroup adds one group of the pod (its span is add's to count).
func (a *rowAgg) addGroup(w *podWindow, g *group) {
	// Any growth in the window makes the row worth showing, even of
	// what the row does not show.
	for _, c := range g.ctr {
		if w.sum(c) > 0 {
			a.contributed = true
			break
		}
	}
	a.succ += w.sum(g.ctr[slotSuccess])
	a.fail += w.sum(g.ctr[slotFailure])
	a.timeouts += w.sum(g.ctr[slotTimeout])
	a.read += w.sum(g.ctr[slotRead])
	a.write += w.sum(g.ctr[slotWritten])
	cum := 0.0
	for j, c := range g.bctr {
		if cum += w.sum(c); cum > 0 {
			if a.buckets == nil {
				a.buckets = map[float64]float64{}
			}
			a.buckets[g.les[j]] += cum
			a.contributed = true
		}
	}
	if g.hasGauge {
		a.tcpOpen += g.gauge
		a.contributed = true
	}
}

// quantile estimates the q-quantile from cumulative buckets the way
// Prometheus's histogram_quantile does: linear within the bucket, the
// highest finite bound for the +Inf bucket.
func quantile(q float64, buckets map[float64]float64) float64 {
	if len(buckets) == 0 {
		return 0
	}
	les := make([]float64, 0, len(buckets))
	for le := range buckets {
		les = append(les, le)
	}
	sort.Float64s(les)
	total := buckets[les[len(les)-1]]
	if total <= 0 {
		return 0
	}
	rank := q * total
	prevLe, prevCount := 0.0, 0.0
	for _, le := range les {
		c := buckets[le]
		if c >= rank {
			if math.IsInf(le, 1) {
				return prevLe
			}
			if c == prevCount {
				return le
			}
			return prevLe + (le-prevLe)*(rank-prevCount)/(c-prevCount)
		}
		prevLe, prevCount = le, c
	}
	return prevLe
}

func inbound(g *group) bool  { return g.dir == dirInbound }
func outbound(g *group) bool { return g.dir == dirOutbound }

// dst names the destination of type t of an outbound group: its
// dst_namespace, dst_deployment, dst_pod or dst_service label.
func (g *group) dst(t string) string {
	switch t {
	case TypeNamespace:
		return g.dstNs
	case TypeDeployment:
		return g.dstDeploy
	case TypePod:
		return g.dstPod
	case TypeService:
		return g.dstSvc
	}
	return ""
}

// dstMatches reports whether an outbound group goes to r.
func dstMatches(g *group, r Ref) bool {
	switch r.Type {
	case TypeNamespace:
		return g.dstNs != "" && (r.Name == "" || g.dstNs == r.Name)
	case TypeAuthority:
		return g.authority != "" && (r.Name == "" || g.authority == r.Name || strings.HasPrefix(g.authority, r.Name+":"))
	}
	v := g.dst(r.Type)
	return v != "" && g.dstNs == r.Namespace && (r.Name == "" || v == r.Name)
}

// Owns reports whether p belongs to r (any resource of r's type when r.Name
// is empty), in r's namespace unless r is a namespace.
func Owns(p Pod, r Ref) bool {
	if r.Type != TypeNamespace && p.Namespace != r.Namespace {
		return false
	}
	for _, n := range p.OwnerNames(r.Type) {
		if r.Name == "" || n == r.Name {
			return true
		}
	}
	return false
}

// Stat answers a stat query from the store.
func (s *Store) Stat(now time.Time, q StatQuery) []StatResult {
	sel := q.Selector
	inScope := func(ns, name string) bool {
		if sel.Type != TypeNamespace && !q.AllNamespaces && ns != sel.Namespace {
			return false
		}
		return sel.Name == "" || name == sel.Name
	}
	rows := map[string]*rowAgg{}
	row := func(ns, name string) *rowAgg {
		if sel.Type == TypeNamespace {
			ns = ""
		}
		k := ns + "/" + name
		r := rows[k]
		if r == nil {
			r = &rowAgg{ns: ns, name: name}
			rows[k] = r
		}
		return r
	}
	s.eachWindow(now, q.Window, func(sn *podWindow) {
		p := sn.pod
		for _, name := range p.OwnerNames(sel.Type) {
			// A pod that is gone has no row of its own; its traffic in the
			// window still counts for its deployment, service, namespace.
			if !inScope(p.Namespace, name) || (sel.Type == TypePod && !sn.listed) {
				continue
			}
			r := row(p.Namespace, name)
			// Only pods that exist and run count: not deleted, terminating,
			// pending or finished ones (`stat deploy` said 2/2 for a
			// 1-replica deployment after a rollout).
			r.exists = r.exists || sn.listed
			if sn.listed && p.Running {
				r.pods++
				if p.Meshed() {
					r.meshed++
				}
			}
			switch {
			case q.From != nil:
			case q.To != nil:
				to := *q.To
				r.add(sn, func(g *group) bool { return outbound(g) && dstMatches(g, to) })
			default:
				r.add(sn, inbound)
				r.addAuthz(sn)
			}
		}
		if sel.Type == TypeAuthority && q.From == nil && q.To == nil {
			byAuth := map[string]bool{}
			for i := range sn.pd.groups {
				g := &sn.pd.groups[i]
				if a := g.authority; a != "" && g.present && inbound(g) && inScope(p.Namespace, a) {
					byAuth[a] = true
				}
			}
			for a := range byAuth {
				row(p.Namespace, a).add(sn, func(g *group) bool { return inbound(g) && g.authority == a })
			}
		}
		if q.From != nil && Owns(p, *q.From) {
			// Traffic from this pod, grouped by where it went.
			dests := map[[2]string]bool{}
			for i := range sn.pd.groups {
				g := &sn.pd.groups[i]
				if !g.present || !outbound(g) {
					continue
				}
				ns, name := g.dstNs, g.dst(sel.Type)
				if sel.Type == TypeAuthority {
					name = g.authority
				}
				if name != "" && inScope(ns, name) {
					dests[[2]string{ns, name}] = true
				}
			}
			for d := range dests {
				dst := Ref{Namespace: d[0], Type: sel.Type, Name: d[1]}
				row(d[0], d[1]).add(sn, func(g *group) bool { return outbound(g) && dstMatches(g, dst) })
			}
		}
	})
	for r := range q.Existing {
		if inScope(r.Namespace, r.Name) {
			row(r.Namespace, r.Name).exists = true
		}
	}
	out := make([]StatResult, 0, len(rows))
	for _, r := range rows {
		switch {
		case q.Existing != nil && !q.Existing[Ref{Namespace: r.ns, Type: sel.Type, Name: r.name}]:
			continue // deleted within the window
		case !r.exists && !r.contributed:
			continue
		}
		res := StatResult{Namespace: r.ns, Name: r.name, MeshedPods: r.meshed, RunningPods: r.pods,
			Successes: r.succ, Failures: r.fail, TCPOpen: r.tcpOpen, ReadBytes: r.read, WriteBytes: r.write, Window: r.span,
			Allowed: r.allowed, Denied: r.denied, TCPAllowed: r.tcpAllowed, TCPDenied: r.tcpDenied, AuthzApplies: r.authz}
		if r.span > 0 {
			res.RPS = (r.succ + r.fail) / r.span.Seconds()
		}
		res.P50, res.P95, res.P99 = quantile(0.5, r.buckets), quantile(0.95, r.buckets), quantile(0.99, r.buckets)
		out = append(out, res)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Namespace != out[j].Namespace {
			return out[i].Namespace < out[j].Namespace
		}
		return out[i].Name < out[j].Name
	})
	return out
}

// Edges lists src → dst pairs of resources of type t seen in the window,
// from the sources' outbound metrics. ns "" means every namespace.
func (s *Store) Edges(now time.Time, t, ns, name string, w time.Duration) []EdgeResult {
	type edgeKey struct{ srcNs, src, dstNs, dst string }
	edges := map[edgeKey]*EdgeResult{}
	s.eachWindow(now, w, func(sn *podWindow) {
		p := sn.pod
		for i := range sn.pd.groups {
			g := &sn.pd.groups[i]
			if !outbound(g) || sn.sum(g.ctr[slotSuccess])+sn.sum(g.ctr[slotFailure])+sn.sum(g.ctr[slotOpened]) <= 0 {
				continue
			}
			dstNs, dst := g.dstNs, g.dst(t)
			if dst == "" {
				continue
			}
			for _, src := range p.OwnerNames(t) {
				if ns != "" && p.Namespace != ns && dstNs != ns {
					continue
				}
				if name != "" && src != name && dst != name {
					continue
				}
				ek := edgeKey{p.Namespace, src, dstNs, dst}
				e := edges[ek]
				if e == nil {
					e = &EdgeResult{Src: Ref{p.Namespace, t, src}, Dst: Ref{dstNs, t, dst}, Secured: true, ClientID: p.Identity}
					edges[ek] = e
				}
				if g.tls != "true" {
					e.Secured = false
					e.NoTLSReason = "not mTLS (tls=" + g.tls + ")"
					if g.tls == "" {
						e.NoTLSReason = "not mTLS"
					}
				}
				if id := g.serverID; id != "" {
					e.ServerID = id
				}
				if id := g.clientID; id != "" && e.ClientID == "" {
					e.ClientID = id
				}
			}
		}
	})
	out := make([]EdgeResult, 0, len(edges))
	for _, e := range edges {
		out = append(out, *e)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		return strings.Join([]string{a.Src.Namespace, a.Src.Name, a.Dst.Namespace, a.Dst.Name}, "\x00") <
			strings.Join([]string{b.Src.Namespace, b.Src.Name, b.Dst.Namespace, b.Dst.Name}, "\x00")
	})
	return out
}
