package install

import (
	"fmt"
	"io"
)

// StepState is where a step of an install, upgrade or uninstall is.
type StepState int

// Step states.
const (
	StepRunning StepState = iota
	StepDone
	StepFailed
)

// Event reports progress: a step started, changed its detail, or ended.
type Event struct {
	Step   string
	State  StepState
	Detail string
}

// Reporter receives progress events, in order, from one goroutine.
type Reporter func(Event)

// step runs fn as a named step, reporting its start and end.
func step(report Reporter, name string, fn func(detail func(string)) error) error {
	report(Event{Step: name, State: StepRunning})
	err := fn(func(d string) { report(Event{Step: name, State: StepRunning, Detail: d}) })
	if err != nil {
		report(Event{Step: name, State: StepFailed, Detail: err.Error()})
		return err
	}
	report(Event{Step: name, State: StepDone})
	return nil
}

// PlainReporter prints progress as plain lines for logs and CI: one when a
// step starts, one per new detail, one when it ends.
func PlainReporter(w io.Writer) Reporter {
	last := ""
	return func(e Event) {
		switch e.State {
		case StepRunning:
			if e.Detail == "" {
				fmt.Fprintf(w, "• %s\n", e.Step)
			} else if e.Detail != last {
				fmt.Fprintf(w, "  %s\n", e.Detail)
			}
			last = e.Detail
		case StepDone:
			fmt.Fprintf(w, "✓ %s\n", e.Step)
			last = ""
		case StepFailed:
			fmt.Fprintf(w, "✗ %s\n", e.Step)
			last = ""
		}
	}
}
