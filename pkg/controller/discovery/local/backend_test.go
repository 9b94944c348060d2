package local

import (
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// recorder keeps every snapshot it is given.
type recorder struct {
	mu    sync.Mutex
	snaps []discovery.Snapshot
}

func (r *recorder) Update(s discovery.Snapshot) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.snaps = append(r.snaps, s)
}

func (r *recorder) last(t *testing.T) string {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.snaps) == 0 {
		t.Fatal("no snapshot")
	}
	return describe(r.snaps[len(r.snaps)-1])
}

// describe renders a snapshot as "exists addr/identity/pod ..." or "absent".
func describe(s discovery.Snapshot) string {
	if !s.Exists {
		return "absent"
	}
	var eps []string
	for _, e := range s.Endpoints {
		eps = append(eps, e.Addr.String()+"/"+e.Identity+"/"+e.Labels["pod"])
	}
	sort.Strings(eps)
	return strings.TrimSpace("exists " + s.Labels["namespace"] + "/" + s.Labels["service"] + " " + strings.Join(eps, " "))
}

const registryV1 = `
services:
- name: web
  namespace: demo
  port: 80
  authorities: ["localhost:8080"]
  endpoints:
  - address: 127.0.0.1:41001
    identity: spiffe://cluster.local/ns/demo/sa/web
    labels: {pod: web-0}
- name: db
  namespace: demo
  port: 5432
  endpoints: []
proxies:
- namespace: demo
  pod: web-0
  adminAddress: 127.0.0.1:41191
  identity: spiffe://cluster.local/ns/demo/sa/web
  labels: {deployment: web}
`

func newBackend(t *testing.T, content string) (*Backend, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "registry.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	b, err := New(Options{Path: path})
	if err != nil {
		t.Fatal(err)
	}
	return b, path
}

func TestSubscribeResolvesNames(t *testing.T) {
	b, _ := newBackend(t, registryV1)
	web := "exists demo/web 127.0.0.1:41001/spiffe://cluster.local/ns/demo/sa/web/web-0"
	tests := []struct {
		authority, ctxToken, want string
	}{
		{"web.demo.svc.cluster.local:80", "", web},
		{"web.demo.svc.cluster.local.:80", "", web},
		{"WEB.demo.svc:80", "", web},
		{"web.demo:80", "", web},
		{"web.demo", "", web},
		{"web:80", `{"ns":"demo"}`, web},
		{"web:80", "", "absent"},
		{"localhost:8080", "", web},
		{"127.0.0.1:41001", "", web},
		{"web.demo:81", "", "absent"},
		{"db.demo:5432", "", "exists demo/db"},
		{"example.com:443", "", "absent"},
		{"10.0.0.1:80", "", "absent"},
	}
	for _, tt := range tests {
		var r recorder
		cancel, err := b.Subscribe(tt.authority, tt.ctxToken, &r)
		if err != nil {
			t.Errorf("%s: %v", tt.authority, err)
			continue
		}
		if got := r.last(t); got != tt.want {
			t.Errorf("%s (%s): got %q, want %q", tt.authority, tt.ctxToken, got, tt.want)
		}
		cancel()
	}
	if b.hub.Watched() != 0 {
		t.Errorf("%d keys still watched after every cancel", b.hub.Watched())
	}
}

func TestReload(t *testing.T) {
	b, path := newBackend(t, registryV1)
	var r recorder
	cancel, err := b.Subscribe("web.demo:80", "", &r)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()

	v2 := strings.Replace(registryV1, "  endpoints:\n  - address: 127.0.0.1:41001", "  endpoints:\n  - address: 127.0.0.1:41002\n  - address: 127.0.0.1:41001", 1)
	if err := WriteFile(path, mustParse(t, v2)); err != nil {
		t.Fatal(err)
	}
	b.Reload()
	want := "exists demo/web 127.0.0.1:41001/spiffe://cluster.local/ns/demo/sa/web/web-0 127.0.0.1:41002//"
	if got := r.last(t); got != want {
		t.Fatalf("after reload: got %q, want %q", got, want)
	}
	n := len(r.snaps)

	// A broken file is ignored; the subscriber keeps the last good state.
	if err := os.WriteFile(path, []byte("services: [{name: web, bogus: 1}]"), 0o600); err != nil {
		t.Fatal(err)
	}
	b.Reload()
	// An unchanged file notifies nobody.
	if err := WriteFile(path, mustParse(t, v2)); err != nil {
		t.Fatal(err)
	}
	b.Reload()
	if len(r.snaps) != n {
		t.Errorf("got %d more snapshots, want none", len(r.snaps)-n)
	}
}

func mustParse(t *testing.T, s string) Registry {
	t.Helper()
	r, err := ParseRegistry([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestParseRegistryRejects(t *testing.T) {
	for name, content := range map[string]string{
		"unknown field": "services: [{name: web, namespace: demo, port: 80, endpoint: []}]",
		"bad address":   "services: [{name: web, namespace: demo, port: 80, endpoints: [{address: web-0}]}]",
		"missing port":  "services: [{name: web, namespace: demo, endpoints: []}]",
		"bad name":      "services: [{name: Web_1, namespace: demo, port: 80}]",
		"dotted name":   "services: [{name: web.x, namespace: demo, port: 80}]",
		"twice":         "services: [{name: web, namespace: demo, port: 80}, {name: web, namespace: demo, port: 80}]",
		"bad identity":  "services: [{name: web, namespace: demo, port: 80, endpoints: [{address: '127.0.0.1:1', identity: web}]}]",
		"bad authority": "services: [{name: web, namespace: demo, port: 80, authorities: ['x:y']}]",
		"not yaml":      "{{{",
		"port unnamed":  "proxies: [{namespace: demo, pod: web-0, adminAddress: '127.0.0.1:1', ports: [{port: 80}]}]",
		"port twice":    "proxies: [{namespace: demo, pod: web-0, adminAddress: '127.0.0.1:1', ports: [{name: http, port: 80}, {name: http, port: 81}]}]",
		"namespace":     "namespaces: [{annotations: {a: b}}]",
		"ns twice":      "namespaces: [{name: demo}, {name: demo}]",
		"policy kind":   "policies: [{apiVersion: policy.conduit.io/v1beta1, metadata: {name: x, namespace: demo}, spec: {}}]",
		"policy ns":     "policies: [{apiVersion: policy.conduit.io/v1beta1, kind: Server, metadata: {name: x}, spec: {}}]",
		"policy spec":   "policies: [{apiVersion: policy.conduit.io/v1beta1, kind: Server, metadata: {name: x, namespace: demo}, spec: 1}]",
	} {
		if _, err := ParseRegistry([]byte(content)); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if _, err := New(Options{Path: filepath.Join(t.TempDir(), "missing.yaml")}); err == nil {
		t.Error("missing file: no error")
	}
}

func TestJSONRegistry(t *testing.T) {
	b, _ := newBackend(t, `{"services": [{"name": "web", "namespace": "demo", "port": 80,
		"endpoints": [{"address": "127.0.0.1:41001", "identity": "spiffe://cluster.local/ns/demo/sa/web", "labels": {"pod": "web-0"}}]}]}`)
	var r recorder
	cancel, err := b.Subscribe("web.demo:80", "", &r)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	if got, want := r.last(t), "exists demo/web 127.0.0.1:41001/spiffe://cluster.local/ns/demo/sa/web/web-0"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

// TestOnLoad: OnLoad gets the first registry and each changed one, and
// its error rejects a registry as an invalid file would be.
func TestOnLoad(t *testing.T) {
	path := filepath.Join(t.TempDir(), "registry.yaml")
	withPolicy := registryV1 + `namespaces:
- name: demo
  annotations: {config.conduit.io/default-inbound-policy: deny}
policies:
- apiVersion: policy.conduit.io/v1beta1
  kind: Server
  metadata: {name: web-http, namespace: demo}
  spec: {podSelector: {matchLabels: {deployment: web}}, port: http}
`
	withPolicy = strings.Replace(withPolicy, "  labels: {deployment: web}\n", "  labels: {deployment: web}\n  ports: [{name: http, port: 41001}]\n", 1)
	if err := os.WriteFile(path, []byte(withPolicy), 0o600); err != nil {
		t.Fatal(err)
	}
	var loaded []Registry
	reject := false
	b, err := New(Options{Path: path, OnLoad: func(r Registry) error {
		if reject {
			return errors.New("no thanks")
		}
		loaded = append(loaded, r)
		return nil
	}})
	if err != nil {
		t.Fatal(err)
	}
	if len(loaded) != 1 || len(loaded[0].Policies) != 1 || loaded[0].Policies[0]["kind"] != "Server" ||
		loaded[0].Namespaces[0].Annotations["config.conduit.io/default-inbound-policy"] != "deny" ||
		loaded[0].Proxies[0].Ports[0] != (Port{Name: "http", Port: 41001}) {
		t.Fatalf("OnLoad got %+v", loaded)
	}
	b.Reload() // unchanged: not loaded again
	if len(loaded) != 1 {
		t.Errorf("an unchanged file was loaded again")
	}

	// Rejected: the subscribers keep the last good registry.
	var r recorder
	cancel, err := b.Subscribe("web.demo:80", "", &r)
	if err != nil {
		t.Fatal(err)
	}
	defer cancel()
	reject = true
	if err := os.WriteFile(path, []byte(strings.Replace(withPolicy, "41001", "41009", -1)), 0o600); err != nil {
		t.Fatal(err)
	}
	b.Reload()
	if got := r.last(t); !strings.Contains(got, "41001") {
		t.Errorf("a registry OnLoad rejected was used: %s", got)
	}
	reject = false
	b.Reload()
	if got := r.last(t); !strings.Contains(got, "41009") || len(loaded) != 2 {
		t.Errorf("the registry OnLoad accepted was not used: %s (%d loads)", got, len(loaded))
	}

	reject = true
	if _, err := New(Options{Path: path, OnLoad: func(Registry) error { return errors.New("no thanks") }}); err == nil || !strings.Contains(err.Error(), "no thanks") {
		t.Errorf("New with OnLoad failing: %v", err)
	}
}
