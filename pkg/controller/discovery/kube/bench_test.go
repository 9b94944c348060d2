package kube

import (
	"context"
	"fmt"
	"testing"
	"time"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// BenchmarkServiceSnapshot measures recomputing the state of a service with
// 1,000 meshed endpoints (10 slices of 100) from the caches: what every
// EndpointSlice or pod change of that service costs per watched port.
func BenchmarkServiceSnapshot(b *testing.B) {
	objs := []runtime.Object{service("demo", "web", nil), replicaSet}
	for s := range 10 {
		var eps []discoveryv1.Endpoint
		for i := range 100 {
			ip := fmt.Sprintf("10.1.%d.%d", s, i+1)
			name := fmt.Sprintf("web-%d-%d", s, i)
			eps = append(eps, endpoint(ip, name, true))
			objs = append(objs, pod("demo", name, ip, "web", true))
		}
		objs = append(objs, slice("demo", "web", fmt.Sprintf("web-%d", s), 8080, eps...))
	}
	be, err := New(Options{Client: fake.NewClientset(objs...)})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ready, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		be.Run(ctx, func() { close(ready) })
	}()
	defer func() {
		cancel()
		<-done
	}()
	select {
	case <-ready:
	case <-time.After(time.Minute):
		b.Fatal("caches did not sync")
	}
	k := key{namespace: "demo", service: "web", port: 80}
	if n := len(be.snapshot(k).Endpoints); n != 1000 {
		b.Fatalf("%d endpoints, want 1000", n)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for range b.N {
		be.snapshot(k)
	}
}
