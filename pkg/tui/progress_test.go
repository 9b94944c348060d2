package tui

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestProgressModelSteps(t *testing.T) {
	m := NewProgressModel("Installing Conduit")
	for _, msg := range []ProgressMsg{
		{Step: "Checking the cluster", State: StepRunning},
		{Step: "Checking the cluster", State: StepDone},
		{Step: "Applying 3 objects", State: StepRunning, Detail: "1/3 Namespace conduit"},
		{Step: "Applying 3 objects", State: StepRunning, Detail: "2/3 ConfigMap conduit/x"},
	} {
		m.Update(msg)
	}
	v := m.View()
	for _, want := range []string{"Installing Conduit", "✓ Checking the cluster", "Applying 3 objects", "2/3 ConfigMap conduit/x"} {
		if !strings.Contains(v, want) {
			t.Errorf("view lacks %q:\n%s", want, v)
		}
	}
	if strings.Contains(v, "1/3") {
		t.Errorf("view still shows the old detail:\n%s", v)
	}
	m.Update(ProgressMsg{Step: "Applying 3 objects", State: StepFailed, Detail: "applying ConfigMap conduit/x: forbidden"})
	v = m.View()
	if !strings.Contains(v, "✗ Applying 3 objects") || !strings.Contains(v, "forbidden") {
		t.Errorf("failed step not shown:\n%s", v)
	}
	if n := strings.Count(v, "Applying 3 objects"); n != 1 {
		t.Errorf("step listed %d times, want once", n)
	}
}

func TestRunProgressReturnsWorkError(t *testing.T) {
	var out bytes.Buffer
	want := errors.New("boom")
	err := RunProgress(context.Background(), &out, "Upgrading", func(_ context.Context, send func(ProgressMsg)) error {
		send(ProgressMsg{Step: "step one", State: StepRunning})
		send(ProgressMsg{Step: "step one", State: StepDone})
		return want
	})
	if !errors.Is(err, want) {
		t.Fatalf("err = %v, want %v", err, want)
	}
	if !strings.Contains(out.String(), "step one") {
		t.Errorf("output lacks the step:\n%q", out.String())
	}
}

func TestRunProgressCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	var out bytes.Buffer
	err := RunProgress(ctx, &out, "Waiting", func(ctx context.Context, send func(ProgressMsg)) error {
		send(ProgressMsg{Step: "waiting", State: StepRunning})
		cancel()
		<-ctx.Done()
		return ctx.Err()
	})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
