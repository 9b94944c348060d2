// Package fakekube helps tests over client-go's fake clientset — informers
// (Watch) and what only a real API server does (DryRunPods): the one home of
// that job (package testenv stays on the standard library).
package fakekube

import (
	"context"
	"maps"
	"slices"
	"sync"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"
)

// Watches notes when informers begin watching resources of a fake
// clientset. An informer's cache counts as synced once its list is in,
// and its reflector opens the watch after that, on its own goroutine. The
// fake's tracker keeps no history: a delete the test makes in between is
// never delivered, and the informer lists the object for ever (adds and
// updates are delivered, by resource version). On a loaded machine the
// gap is long enough (TestStatCountsOnlyExistingPodsRunningAProxy failed
// so in CI). A test that deletes waits for the watch first.
type Watches struct {
	mu      sync.Mutex
	pending map[string]bool
	done    chan struct{}
}

// Client is a fake clientset: typed (k8s.io/client-go/kubernetes/fake) or
// dynamic (k8s.io/client-go/dynamic/fake).
type Client interface {
	PrependWatchReactor(resource string, reaction clienttesting.WatchReactionFunc)
	Tracker() clienttesting.ObjectTracker
}

var (
	_ Client = (*fake.Clientset)(nil)
	_ Client = (*dynamicfake.FakeDynamicClient)(nil)
)

// Watch registers, before any informer starts, a watch reactor on client
// that serves watches as the fake's own does and notes the first of each
// of resources ("pods", "services", "httproutes", ...). One Watch per
// client: the first reactor that serves a watch ends the chain.
func Watch(client Client, resources ...string) *Watches {
	w := &Watches{pending: map[string]bool{}, done: make(chan struct{})}
	for _, r := range resources {
		w.pending[r] = true
	}
	if len(resources) == 0 {
		close(w.done)
	}
	client.PrependWatchReactor("*", func(action clienttesting.Action) (bool, watch.Interface, error) {
		var opts metav1.ListOptions
		if wa, ok := action.(clienttesting.WatchActionImpl); ok {
			opts = wa.ListOptions
		}
		wi, err := client.Tracker().Watch(action.GetResource(), action.GetNamespace(), opts)
		if err != nil {
			return true, nil, err
		}
		w.mu.Lock()
		if w.pending[action.GetResource().Resource] {
			delete(w.pending, action.GetResource().Resource)
			if len(w.pending) == 0 {
				close(w.done)
			}
		}
		w.mu.Unlock()
		return true, wi, nil
	})
	return w
}

// Wait returns once every resource is watched; the test fails after
// timeout or when ctx ends first.
func (w *Watches) Wait(ctx context.Context, t testing.TB, timeout time.Duration) {
	t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case <-w.done:
	case <-timer.C:
		w.mu.Lock()
		defer w.mu.Unlock()
		t.Fatalf("no informer watched %v within %v", slices.Sorted(maps.Keys(w.pending)), timeout)
	case <-ctx.Done():
		t.Fatalf("waiting for informers' watches: %v", ctx.Err())
	}
}
