package routes

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/conduitmesh/conduit/pkg/controller/discovery/local"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// localRegistry is `conduit demo`'s shape: authors split 90/10 between
// authors-v1 and authors-v2 by an HTTPRoute, books's GRPCRoute with a
// request timeout and retries, the Service books with a timeout of its own.
const localRegistry = `
services:
- {name: authors, namespace: demo, port: 8080, endpoints: [{address: 127.0.0.1:41001}]}
- {name: authors-v1, namespace: demo, port: 8080, endpoints: [{address: 127.0.0.1:41001}]}
- {name: authors-v2, namespace: demo, port: 8080, endpoints: [{address: 127.0.0.1:41002}]}
- name: books
  namespace: demo
  port: 8080
  annotations: {timeout.conduit.io/request: 5s}
  endpoints: [{address: 127.0.0.1:41003}]
policies:
- apiVersion: gateway.networking.k8s.io/v1
  kind: HTTPRoute
  metadata: {name: authors-split, namespace: demo}
  spec:
    parentRefs: [{group: "", kind: Service, name: authors, port: 8080}]
    rules:
    - backendRefs:
      - {name: authors-v1, port: 8080, weight: 90}
      - {name: authors-v2, port: 8080, weight: 10}
- apiVersion: gateway.networking.k8s.io/v1
  kind: GRPCRoute
  metadata:
    name: books
    namespace: demo
    annotations: {retry.conduit.io/grpc: unavailable, retry.conduit.io/limit: "2", timeout.conduit.io/request: 1s}
  spec:
    parentRefs: [{group: "", kind: Service, name: books, port: 8080}]
    rules: [{backendRefs: [{name: books, port: 8080}]}]
`

// startLocal serves outbound routes as the controller does in local mode:
// a Source over the local backend and policy.Local, kept in step with the
// registry file (returned; rewrite it and call Reload).
func startLocal(t *testing.T, registry string) (*fixture, *local.Backend, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registry.yaml")
	if err := os.WriteFile(path, []byte(registry), 0o600); err != nil {
		t.Fatal(err)
	}
	index, err := policy.NewLocal(policy.LocalOptions{Cluster: policy.Cluster{TrustDomain: "cluster.local"}})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := local.New(local.Options{Path: path, OnLoad: index.Apply})
	if err != nil {
		t.Fatal(err)
	}
	src, err := New(Options{Services: lb, Routes: index})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { index.Run(ctx); close(done) }()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &fixture{client: serve(t, lb, src)}, lb, path
}

func TestLocalRoutes(t *testing.T) {
	f, lb, path := startLocal(t, localRegistry)

	authors := f.getRoutes(t, "authors.demo.svc.cluster.local:8080", "")
	const split = "authors-split:authors-v1.demo.svc.cluster.local:8080=90,authors-v2.demo.svc.cluster.local:8080=10"
	if got := backends(authors.next(t)); got != split {
		t.Errorf("authors: %q, want %q", got, split)
	}

	books := f.getRoutes(t, "books:8080", `{"ns":"demo"}`)
	table := books.next(t)
	if got, want := backends(table), "books:books.demo.svc.cluster.local:8080=1"; got != want {
		t.Errorf("books: %q, want %q", got, want)
	}
	if sp := table.GetServicePolicy(); sp.GetRequestTimeoutMs() != 5000 {
		t.Errorf("books's Service policy %v, want its annotation's 5s timeout", sp)
	}
	p := table.GetRoutes()[0].GetRules()[0].GetPolicy()
	if p.GetRequestTimeoutMs() != 1000 || p.GetRetry().GetLimit() != 2 || len(p.GetRetry().GetGrpcCodes()) != 1 || p.GetRetry().GetGrpcCodes()[0] != 14 {
		t.Errorf("books's rule policy %v, want a 1s timeout and 2 retries of UNAVAILABLE", p)
	}

	// The registry changes: books's Service annotation, and the split
	// goes. Each stream gets its new table.
	changed := strings.Replace(localRegistry, "timeout.conduit.io/request: 5s", "timeout.conduit.io/request: 3s", 1)
	changed = changed[:strings.Index(changed, "- apiVersion: gateway.networking.k8s.io/v1\n  kind: HTTPRoute")] +
		changed[strings.Index(changed, "- apiVersion: gateway.networking.k8s.io/v1\n  kind: GRPCRoute"):]
	if err := os.WriteFile(path, []byte(changed), 0o600); err != nil {
		t.Fatal(err)
	}
	lb.Reload()
	if got := books.next(t).GetServicePolicy().GetRequestTimeoutMs(); got != 3000 {
		t.Errorf("books's Service timeout after the change: %d ms, want 3000", got)
	}
	if table := authors.next(t); !table.GetFound() || len(table.GetRoutes()) != 0 {
		t.Errorf("authors without its route: %v, want found and no routes", table)
	}

	// Services the registry does not have are not found.
	if table := f.getRoutes(t, "nope.demo.svc.cluster.local:8080", "").next(t); table.GetFound() {
		t.Errorf("an unknown Service: %v, want found=false", table)
	}
}
