package healthcheck

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func pass(context.Context) error { return nil }
func fail(context.Context) error { return errors.New("broken") }

func TestRunnerOutcomes(t *testing.T) {
	cats := []Category{
		{ID: "a", Checkers: []Checker{
			{Description: "passes", Check: pass},
			{Description: "warns", Hint: "h-warn", Warning: true, Check: fail},
			{Description: "specific hint", Hint: "generic", Check: func(context.Context) error {
				return withHint("specific", "broken %d", 2)
			}},
			{Description: "required fails", Hint: "h-req", Required: true, Check: fail},
			{Description: "skipped: same category", Check: pass},
		}},
		{ID: "b", Checkers: []Checker{
			{Description: "still runs", Check: pass},
			{Description: "fatal", Hint: "h-fatal", Fatal: true, Check: fail},
			{Description: "skipped: after fatal", Check: pass},
		}},
		{ID: "c", Checkers: []Checker{{Description: "skipped: category after fatal", Check: pass}}},
	}
	var done []string
	rep := Runner{}.Run(context.Background(), cats, ObserverFuncs{DoneFunc: func(r Result) { done = append(done, r.Description) }})
	want := Report{Success: false, Categories: []CategoryReport{
		{ID: "a", Results: []Result{
			{Category: "a", Description: "passes", Status: StatusSuccess},
			{Category: "a", Description: "warns", Status: StatusWarning, Error: "broken", Hint: "h-warn"},
			{Category: "a", Description: "specific hint", Status: StatusError, Error: "broken 2", Hint: "specific"},
			{Category: "a", Description: "required fails", Status: StatusError, Error: "broken", Hint: "h-req"},
		}},
		{ID: "b", Results: []Result{
			{Category: "b", Description: "still runs", Status: StatusSuccess},
			{Category: "b", Description: "fatal", Status: StatusError, Error: "broken", Hint: "h-fatal"},
		}},
	}}
	if diff := cmp.Diff(want, rep, cmpopts.IgnoreFields(Result{}, "Duration")); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{"passes", "warns", "specific hint", "required fails", "still runs", "fatal"}, done); diff != "" {
		t.Errorf("observed (-want +got):\n%s", diff)
	}
}

func TestWarningsAloneSucceed(t *testing.T) {
	rep := Runner{}.Run(context.Background(), []Category{{ID: "a", Checkers: []Checker{{Description: "w", Warning: true, Check: fail}}}}, nil)
	if !rep.Success {
		t.Error("a run with only a warning failed")
	}
}

// fakeClock advances by step every time it is read.
type fakeClock struct {
	t    time.Time
	step time.Duration
}

func (c *fakeClock) now() time.Time { c.t = c.t.Add(c.step); return c.t }

// TestWarningHintErrorIsNotRetried: a check that could not decide says
// so as a warning with its own hint, at once, even with a retry deadline.
func TestWarningHintErrorIsNotRetried(t *testing.T) {
	calls := 0
	c := Checker{Description: "probe", Hint: "generic", RetryDeadline: time.Now().Add(time.Minute), Check: func(context.Context) error {
		calls++
		return &HintError{Warning: true, Err: errors.New("may not probe"), Hint: "specific"}
	}}
	rep := Runner{RetryInterval: time.Millisecond}.Run(context.Background(), []Category{{ID: "a", Checkers: []Checker{c}}}, nil)
	want := []Result{{Category: "a", Description: "probe", Status: StatusWarning, Error: "may not probe", Hint: "specific"}}
	if diff := cmp.Diff(want, rep.Categories[0].Results, cmpopts.IgnoreFields(Result{}, "Duration")); diff != "" || !rep.Success || calls != 1 {
		t.Errorf("success %v, %d calls, results (-want +got):\n%s", rep.Success, calls, diff)
	}
}

func TestRetryUntilTheDeadline(t *testing.T) {
	clock := &fakeClock{t: testNow, step: time.Second}
	attempts := 0
	var retrying []time.Time
	deadline := testNow.Add(10 * time.Second)
	rep := Runner{RetryInterval: time.Microsecond, Now: clock.now}.Run(context.Background(),
		[]Category{{ID: "a", Checkers: []Checker{{Description: "never ready", Hint: "h", RetryDeadline: deadline, Check: func(context.Context) error {
			attempts++
			return errors.New("not yet")
		}}}}},
		ObserverFuncs{RetryingFunc: func(_ Result, d time.Time) { retrying = append(retrying, d) }})
	if rep.Success {
		t.Fatal("a check that never passes passed")
	}
	if attempts < 3 || attempts > 10 {
		t.Errorf("%d attempts before a deadline 10 clock reads away", attempts)
	}
	if len(retrying) != 1 || !retrying[0].Equal(deadline) {
		t.Errorf("Retrying called %v; want once with the deadline", retrying)
	}
	if r := rep.Categories[0].Results[0]; r.Error != "not yet" || r.Hint != "h" || r.Duration <= 0 {
		t.Errorf("result %+v", r)
	}
}

func TestCancelStopsRetrying(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	attempts := 0
	rep := Runner{RetryInterval: time.Millisecond}.Run(ctx, []Category{
		{ID: "a", Checkers: []Checker{{Description: "x", RetryDeadline: time.Now().Add(time.Hour), Check: func(context.Context) error {
			attempts++
			if attempts == 3 {
				cancel()
			}
			return errors.New("not yet")
		}}}},
		{ID: "b", Checkers: []Checker{{Description: "y", Check: pass}}},
	}, nil)
	if attempts != 3 || len(rep.Categories) != 1 || rep.Success {
		t.Errorf("after cancel: %d attempts, %d categories, success %v", attempts, len(rep.Categories), rep.Success)
	}
}
