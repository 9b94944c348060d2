// Package healthcheck checks a cluster and a Conduit install the way
// `conduit check` reports them. Checks are data: a Checker has a
// description, a hint that tells the user the exact fix, how bad a failure
// is, and a function. Checkers are grouped in categories, run by one Runner
// and printed by separate printers (basic, short, JSON, JUnit).
package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// CategoryID names a category of checks, as shown in the output.
type CategoryID string

// The categories, in the order they run.
const (
	KubernetesAPI      CategoryID = "kubernetes-api"
	KubernetesVersion  CategoryID = "kubernetes-version"
	PreKubernetesSetup CategoryID = "pre-kubernetes-setup"
	ConduitConfig      CategoryID = "conduit-config"
	ControlPlane       CategoryID = "control-plane"
	Identity           CategoryID = "identity"
	Webhook            CategoryID = "webhook"
	Version            CategoryID = "version"
	GatewayAPI         CategoryID = "gateway-api"
	DataPlane          CategoryID = "data-plane"
	Policy             CategoryID = "policy"
)

// Checker is one check.
type Checker struct {
	// Description says what is true when the check passes ("control plane
	// pods are ready").
	Description string
	// Hint tells the user how to fix a failure: the exact command or change.
	// A check may return a *HintError to give a more specific one.
	Hint string
	// Fatal stops all further checks when this one fails (nothing after it
	// can work, e.g. the API server is unreachable).
	Fatal bool
	// Required skips the rest of its category when this one fails (they
	// read what it could not find).
	Required bool
	// Warning makes a failure a warning: reported, but the run still passes.
	Warning bool
	// RetryDeadline, when set, makes the runner retry a failing check until
	// then (`check --wait`), for states that settle by themselves.
	RetryDeadline time.Time
	// Check returns nil when the check passes.
	Check func(ctx context.Context) error
}

// Category is a named, ordered group of checks.
type Category struct {
	ID       CategoryID
	Checkers []Checker
}

// HintError is a failure with a hint specific to it, replacing the
// checker's own.
type HintError struct {
	Err  error
	Hint string
	// Warning makes this failure a warning, not retried: the check could
	// not decide (it may not make the call it needs).
	Warning bool
}

func (e *HintError) Error() string { return e.Err.Error() }
func (e *HintError) Unwrap() error { return e.Err }

// withHint wraps err with a specific hint.
func withHint(hint string, format string, args ...any) error {
	return &HintError{Err: fmt.Errorf(format, args...), Hint: hint}
}

// Status is the outcome of one check.
type Status string

// The outcomes.
const (
	StatusSuccess Status = "success"
	StatusWarning Status = "warning"
	StatusError   Status = "error"
)

// Result is the outcome of one check.
type Result struct {
	Category    CategoryID
	Description string
	Status      Status
	// Error is why the check failed; empty on success.
	Error string
	// Hint is how to fix the failure; empty on success.
	Hint string
	// Duration is how long the check took, retries included.
	Duration time.Duration
}

// CategoryReport is the results of one category, in run order.
type CategoryReport struct {
	ID      CategoryID
	Results []Result
}

// Report is the outcome of a run.
type Report struct {
	// Success is true when no check failed with StatusError.
	Success    bool
	Categories []CategoryReport
}

// Counts returns the number of results with each status.
func (r *Report) Counts() (success, warning, failed int) {
	for _, c := range r.Categories {
		for _, res := range c.Results {
			switch res.Status {
			case StatusSuccess:
				success++
			case StatusWarning:
				warning++
			case StatusError:
				failed++
			}
		}
	}
	return success, warning, failed
}

// Observer is told about a run as it happens, so a terminal can show
// progress. Nil methods are fine: use ObserverFuncs.
type Observer interface {
	// Retrying is called once per check, when it first fails and will be
	// retried until its deadline.
	Retrying(r Result, deadline time.Time)
	// Done is called with each final result.
	Done(r Result)
}

// ObserverFuncs adapts functions to Observer; nil fields do nothing.
type ObserverFuncs struct {
	RetryingFunc func(Result, time.Time)
	DoneFunc     func(Result)
}

// Retrying implements Observer.
func (o ObserverFuncs) Retrying(r Result, deadline time.Time) {
	if o.RetryingFunc != nil {
		o.RetryingFunc(r, deadline)
	}
}

// Done implements Observer.
func (o ObserverFuncs) Done(r Result) {
	if o.DoneFunc != nil {
		o.DoneFunc(r)
	}
}

// Runner runs categories of checks.
type Runner struct {
	// RetryInterval is the pause between attempts of a retried check;
	// default one second.
	RetryInterval time.Duration
	// AttemptTimeout bounds one attempt of one check; default 30 seconds.
	AttemptTimeout time.Duration
	// Now is the clock; default time.Now.
	Now func() time.Time
}

// Run runs the checks in order and returns the report. A failed Fatal check
// stops the run; a failed Required check skips the rest of its category. obs
// may be nil.
func (rn Runner) Run(ctx context.Context, cats []Category, obs Observer) Report {
	if obs == nil {
		obs = ObserverFuncs{}
	}
	rep := Report{Success: true}
	for _, cat := range cats {
		cr := CategoryReport{ID: cat.ID}
		stop, skipRest := false, false
		for _, c := range cat.Checkers {
			if skipRest {
				break
			}
			res := rn.runOne(ctx, cat.ID, c, obs)
			obs.Done(res)
			cr.Results = append(cr.Results, res)
			if res.Status == StatusError {
				rep.Success = false
				stop = c.Fatal
				skipRest = c.Required || c.Fatal
			}
			if ctx.Err() != nil {
				stop, skipRest = true, true
			}
		}
		rep.Categories = append(rep.Categories, cr)
		if stop {
			break
		}
	}
	return rep
}

func (rn Runner) runOne(ctx context.Context, cat CategoryID, c Checker, obs Observer) Result {
	now := rn.Now
	if now == nil {
		now = time.Now
	}
	interval := rn.RetryInterval
	if interval == 0 {
		interval = time.Second
	}
	timeout := rn.AttemptTimeout
	if timeout == 0 {
		timeout = 30 * time.Second
	}
	start := now()
	var res Result
	announced := false
	for {
		actx, cancel := context.WithTimeout(ctx, timeout)
		err := c.Check(actx)
		cancel()
		if err == nil {
			// Passing after retries: report only the pass.
			return Result{Category: cat, Description: c.Description, Status: StatusSuccess, Duration: now().Sub(start)}
		}
		res = Result{Category: cat, Description: c.Description, Status: StatusError}
		if c.Warning {
			res.Status = StatusWarning
		}
		res.Error = err.Error()
		res.Hint = c.Hint
		var he *HintError
		if errors.As(err, &he) {
			res.Hint = he.Hint
			if he.Warning {
				res.Status, res.Duration = StatusWarning, now().Sub(start)
				return res
			}
		}
		if c.RetryDeadline.IsZero() || !now().Add(interval).Before(c.RetryDeadline) || ctx.Err() != nil {
			res.Duration = now().Sub(start)
			return res
		}
		if !announced {
			obs.Retrying(res, c.RetryDeadline)
			announced = true
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			res.Duration = now().Sub(start)
			return res
		case <-t.C:
		}
	}
}
