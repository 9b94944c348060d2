package sidecar

import (
	"context"
	"errors"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

func TestContainerMemoryLimit(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"cgroup v2 limit", map[string]string{"/sys/fs/cgroup/memory.max": "67108864\n"}, 64 << 20},
		{"cgroup v2 without a limit", map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, 0},
		{"cgroup v1 limit", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "134217728\n"}, 128 << 20},
		{"cgroup v1 without a limit", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0},
		{"no cgroup files", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read := func(path string) ([]byte, error) {
				if v, ok := tt.files[path]; ok {
					return []byte(v), nil
				}
				return nil, os.ErrNotExist
			}
			if got := containerMemoryLimit(read); got != tt.want {
				t.Errorf("containerMemoryLimit = %d, want %d", got, tt.want)
			}
		})
	}
}

// TestCodeReleaser: the executable's pages are released at the proxy's
// first scheduled ages whatever their level, at the later ones if they
// grew by releaseSlack, then only when they have grown by releaseGrowth
// over the level they settled at after the last release.
func TestCodeReleaser(t *testing.T) {
	var got []time.Duration
	var age time.Duration
	r := codeReleaser{release: func() { got = append(got, age) }}
	level := int64(6 << 20)
	tick := func(until time.Duration) {
		for age < until {
			age += releaseCheckEvery
			r.check(age, level)
		}
	}

	// Start-up: released at 0.2, 0.4, 0.8 and 1.6 s though the level
	// never grows; later scheduled ages (3.2 … 25.6 s) only release what
	// grew by releaseSlack since the level settled.
	tick(4 * time.Second)
	want := []time.Duration{200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond, 1600 * time.Millisecond}
	if !slices.Equal(got, want) {
		t.Fatalf("releases at %v, want %v", got, want)
	}
	level += releaseSlack - 4096
	tick(7 * time.Second)
	if !slices.Equal(got, want) {
		t.Fatalf("releases at %v for %d bytes of growth, want %v", got, releaseSlack-4096, want)
	}
	level += 4096
	tick(40 * time.Second)
	if want = append(want, 12800*time.Millisecond); !slices.Equal(got, want) {
		t.Fatalf("releases at %v for %d bytes of growth, want %v", got, releaseSlack, want)
	}

	// Steady state: growth under releaseGrowth is left alone.
	got = nil
	level += releaseGrowth - 4096
	tick(45 * time.Second)
	if len(got) != 0 {
		t.Fatalf("released at %v for %d bytes of growth", got, releaseGrowth-4096)
	}
	// releaseGrowth over the settled level: released once; the working set
	// faulting back in during the settling does not release again.
	level += 4096
	tick(age + releaseCheckEvery)
	if len(got) != 1 {
		t.Fatalf("released at %v, want once for %d bytes of growth", got, releaseGrowth)
	}
	level = 4 << 20 // right after the release
	tick(age + releaseCheckEvery)
	level = 8 << 20 // faulted back in, beyond the level before
	tick(60 * time.Second)
	if len(got) != 1 {
		t.Fatalf("released at %v: the level faulting back in released again", got)
	}

	// At most releaseMax releases for growth, then done.
	for i := 0; i < 2*releaseMax && !r.done(); i++ {
		level += releaseGrowth
		tick(age + 2*releaseSettle)
	}
	if !r.done() || len(got) != releaseMax {
		t.Errorf("%d releases for growth, done %v; want %d and done", len(got), r.done(), releaseMax)
	}
}

// nowResolver is a resolver whose first answer about books:80 is awaited:
// Endpoints waits for it (until ctx ends), EndpointsNow says so.
type nowResolver struct{}

func (nowResolver) Endpoints(ctx context.Context, authority string) ([]resolve.Endpoint, error) {
	if authority != "books:80" {
		return nil, resolve.ErrNotFound
	}
	<-ctx.Done()
	return nil, ctx.Err()
}

func (nowResolver) EndpointsNow(authority string) ([]resolve.Endpoint, error) {
	if authority != "books:80" {
		return nil, resolve.ErrNotFound
	}
	return nil, resolve.ErrPending
}

// TestChainResolverEndpointsNow: the chain answers at once, without
// asking a resolver that would wait to wait; an authority an earlier
// resolver knows does not reach the later ones.
func TestChainResolverEndpointsNow(t *testing.T) {
	var r resolve.Resolver = chainResolver{resolve.Static{"web:80": {{Addr: "127.0.0.1:1"}}}, nowResolver{}}
	nr := r.(resolve.NowResolver)
	for _, tc := range []struct {
		authority string
		want      string
		err       error
	}{
		{"web:80", "127.0.0.1:1", nil},
		{"books:80", "", resolve.ErrPending},
		{"other:80", "", resolve.ErrNotFound},
	} {
		eps, err := nr.EndpointsNow(tc.authority) // would hang on Endpoints' wait
		got := ""
		if len(eps) > 0 {
			got = eps[0].Addr
		}
		if got != tc.want || !errors.Is(err, tc.err) || (tc.err == nil && err != nil) {
			t.Errorf("EndpointsNow(%s) = %q, %v; want %q, %v", tc.authority, got, err, tc.want, tc.err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := r.Endpoints(ctx, "books:80"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Endpoints(books:80) = %v, want the wait to reach the chain's last resolver", err)
	}
}
