package proxy

import (
	"context"
	"net/http"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/balance"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
	"github.com/conduitmesh/conduit/pkg/proxy/retry"
	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
)

// RouteSource gives the outbound route table of an authority; nil when it
// has no routes (the request goes to the authority as without a source).
// *route.Store (pkg/proxy/route) is one.
type RouteSource interface {
	Lookup(ctx context.Context, authority string) *routes.Table
}

// routeTable is the route table of an outbound request's authority, or nil
// (inbound, no RouteSource, no routes).
func (p *Proxy) routeTable(ctx context.Context, dir, authority string) *routes.Table {
	if !p.routed(dir, authority) {
		return nil
	}
	return p.cfg.Routes.Lookup(ctx, authority)
}

// NowRouteSource is a RouteSource whose first table of an authority may
// take a while (route.Store waits up to its FirstTableWait). LookupNow is
// Lookup without that wait: ok is false while the table is awaited.
type NowRouteSource interface {
	LookupNow(authority string) (t *routes.Table, ok bool)
}

// routeTableNow is routeTable without waiting for an authority's first
// table (NowRouteSource): ok is false while it is awaited.
func (p *Proxy) routeTableNow(dir, authority string) (*routes.Table, bool) {
	if !p.routed(dir, authority) {
		return nil, true
	}
	if ns, ok := p.cfg.Routes.(NowRouteSource); ok {
		return ns.LookupNow(authority)
	}
	return p.cfg.Routes.Lookup(context.Background(), authority), true
}

// routed reports whether a request has a route table to look up: an
// outbound one with an authority, with a RouteSource.
func (p *Proxy) routed(dir, authority string) bool {
	return p.cfg.Routes != nil && dir == Outbound && authority != ""
}

// outRoute is what an outbound route table decided for one request: no
// rule (the zero value), a redirect, or a backend.
type outRoute struct {
	rule    *routes.Rule
	backend *routes.Backend // nil without a rule and for a redirect
	// redirect, when set, is answered with location; nothing is forwarded.
	redirect *routes.Redirect
	location string
	// timeout bounds the exchange (the rule's policy, else the Service's;
	// 0: none): past it the request is answered 504 (gRPC
	// DEADLINE_EXCEEDED) or, its response begun, reset.
	timeout time.Duration
	// acc is the Service's failure accrual (nil: none), applied when its
	// own endpoints are picked (not a split's other Services').
	acc *balance.Accrual
	// pol is the policy of the rule, else the Service's.
	pol routes.Policy
	// Once retryFor allowed the request retries (pol.Retry is their
	// policy): tryTimeout bounds each attempt (0: none), budget is the
	// route's retry budget and retries its series.
	tryTimeout time.Duration
	budget     *retry.Budget
	retries    *metrics.Retries
}

// accruals caches each authority's failure accrual, one *balance.Accrual
// per table (PickWith wants the same one for the same endpoints).
type accrualEntry struct {
	t   *routes.Table
	acc *balance.Accrual
}

// accrualOf is the failure accrual of authority's table t, or nil.
func (p *Proxy) accrualOf(authority string, t *routes.Table) *balance.Accrual {
	fa, ok := t.FailureAccrual()
	if !ok {
		return nil
	}
	p.accrualMu.RLock()
	e := p.accruals[authority]
	p.accrualMu.RUnlock()
	if e != nil && e.t == t {
		return e.acc
	}
	e = &accrualEntry{t: t, acc: &balance.Accrual{MaxFailures: int(fa.ConsecutiveMaxFailures), MinPenalty: fa.MinPenalty,
		MaxPenalty: fa.MaxPenalty, JitterRatio: fa.JitterRatio}}
	if err := e.acc.Validate(); err != nil {
		p.log.Warn("ignoring the failure accrual of an outbound Service", "authority", authority, "err", err)
		e.acc = nil
	}
	p.accrualMu.Lock()
	if p.accruals == nil {
		p.accruals = map[string]*accrualEntry{}
	}
	p.accruals[authority] = e
	p.accrualMu.Unlock()
	return e.acc
}

// errRequestTimeout answers a request its route's timeout cut short.
var errRequestTimeout = proxyError{http.StatusGatewayTimeout, "request_timeout", "request timeout"}

// policyTimeout is what bounds a request under pol that is not retried:
// its request timeout or, shorter, its backend request timeout (the only
// attempt).
func policyTimeout(pol routes.Policy) time.Duration {
	d := pol.RequestTimeout
	if b := pol.BackendRequestTimeout; b > 0 && (d == 0 || b < d) {
		d = b
	}
	return d
}

// routeRequest routes req (which arrived with scheme and authority) by t.
// perr is the answer for a rule whose backend is invalid.
func (p *Proxy) routeRequest(t *routes.Table, req *httpmatch.Request, scheme, authority string) (or outRoute, perr *proxyError) {
	rule, m := t.Route(req)
	if rule == nil {
		pol := t.ServicePolicy()
		return outRoute{timeout: policyTimeout(pol), acc: p.accrualOf(authority, t), pol: pol}, nil
	}
	or.rule, or.timeout, or.acc, or.pol = rule, policyTimeout(rule.Policy), p.accrualOf(authority, t), rule.Policy
	if rd := rule.Redirect(); rd != nil {
		or.redirect, or.location = rd, rd.Location(req, m, scheme, authority)
		return or, nil
	}
	or.backend = rule.PickBackend(nil)
	if or.backend.Invalid != "" {
		return or, &proxyError{http.StatusInternalServerError, "invalid_backend", "invalid backend: " + or.backend.Invalid}
	}
	return or, nil
}

// retryFor decides whether a request routed by or may be retried (see
// routes.Retry.Allows; contentLength is -1 when unknown) and sets its
// retry policy, budget and timeouts: with retries, the request timeout
// bounds the whole exchange and the backend request timeout (or the retry
// timeout, the shorter) each attempt. Every request under a policy with
// retries deposits in the route's budget, retried or not.
func (p *Proxy) retryFor(or *outRoute, authority, method string, grpc bool, contentLength int64) bool {
	r := &or.pol.Retry
	if r.Limit == 0 || or.redirect != nil {
		return false
	}
	l := metrics.RetryLabels{Authority: authority}
	if or.rule != nil {
		l.RouteKind, l.RouteName = or.rule.Route.Kind, or.rule.Route.Name
	}
	b := p.retryBudget(l)
	b.Deposit()
	if !r.Allows(method, grpc, contentLength) {
		return false
	}
	or.budget, or.retries = b, p.metrics.Retries(l)
	or.timeout = or.pol.RequestTimeout
	or.tryTimeout = or.pol.BackendRequestTimeout
	if d := r.Timeout; d > 0 && (or.tryTimeout == 0 || d < or.tryTimeout) {
		or.tryTimeout = d
	}
	return true
}

// maxBudgets bounds the retry budgets kept (one per route with retries).
const maxBudgets = 4096

// retryBudget is the retry budget of a route (Linkerd's defaults: 20 % of
// the requests plus 10 a second, over 10 s).
func (p *Proxy) retryBudget(l metrics.RetryLabels) *retry.Budget {
	p.accrualMu.RLock()
	b := p.budgets[l]
	p.accrualMu.RUnlock()
	if b != nil {
		return b
	}
	p.accrualMu.Lock()
	defer p.accrualMu.Unlock()
	if b = p.budgets[l]; b != nil {
		return b
	}
	if p.budgets == nil || len(p.budgets) >= maxBudgets {
		p.budgets = map[metrics.RetryLabels]*retry.Budget{}
	}
	b = retry.NewBudget(retry.DefaultRatio, retry.DefaultMinPerSecond, retry.DefaultTTL, nil)
	p.budgets[l] = b
	return b
}

// mayRetryResponse decides whether a retryable response (status, and
// grpcStatus of a trailers-only gRPC response) is retried after tries
// attempts, and counts the decision: false for a response the policy does
// not retry, or when the limit or the budget is spent.
func (or *outRoute) mayRetryResponse(tries int, status int, grpcStatus string) bool {
	if !or.pol.Retry.Retryable(status, grpcStatus) {
		if tries > 1 {
			or.retries.Success()
		}
		return false
	}
	return or.anotherTry(tries)
}

// anotherTry reports whether a request that has had tries attempts may
// get one more, and counts it (or why not).
func (or *outRoute) anotherTry(tries int) bool {
	switch {
	case tries > int(or.pol.Retry.Limit):
		or.retries.LimitExceeded()
		return false
	case !or.budget.TryWithdraw():
		or.retries.Overflow()
		return false
	}
	or.retries.Request()
	return true
}

// target is the authority to resolve and balance: the backend's (the
// request's own header is not changed), else the request's.
func (or *outRoute) target(authority string) string {
	if or.backend != nil && or.backend.Authority != "" {
		return or.backend.Authority
	}
	return authority
}

// modifiesRequest reports whether the rule or its backend modify the
// request's header.
func (or *outRoute) modifiesRequest() bool {
	return or.rule != nil && (or.rule.ModifiesRequest() || or.backend != nil && or.backend.ModifiesRequest())
}

// modifiesResponse reports whether the rule or its backend modify the
// response's header.
func (or *outRoute) modifiesResponse() bool {
	return or.rule != nil && (or.rule.ModifiesResponse() || or.backend != nil && or.backend.ModifiesResponse())
}

// modifyRequest applies the rule's request header modifiers, then the
// backend's.
func (or *outRoute) modifyRequest(h routes.Headers) {
	or.rule.ModifyRequest(h)
	if or.backend != nil {
		or.backend.ModifyRequest(h)
	}
}

// modifyResponse applies the rule's response header modifiers, then the
// backend's.
func (or *outRoute) modifyResponse(h routes.Headers) {
	or.rule.ModifyResponse(h)
	if or.backend != nil {
		or.backend.ModifyResponse(h)
	}
}

// label sets the route labels of a request's series.
func (or *outRoute) label(l *metrics.HTTPLabels) {
	if or.rule != nil {
		l.RouteKind, l.RouteName = or.rule.Route.Kind, or.rule.Route.Name
	}
}
