package local

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"

	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

const registryServices = `
services:
- name: books
  namespace: demo
  port: 8080
  authorities: ["localhost:9090"]
  annotations: {retry.conduit.io/grpc: unavailable}
  endpoints: [{address: 127.0.0.1:41001}]
- name: books
  namespace: demo
  port: 9000
  annotations: {retry.conduit.io/grpc: unavailable, timeout.conduit.io/request: 1s}
  endpoints: [{address: 127.0.0.1:41002}]
- name: authors-v1
  namespace: demo
  port: 8080
  endpoints: [{address: 127.0.0.1:41003}]
`

func TestResolve(t *testing.T) {
	b, _ := newBackend(t, registryServices)
	for _, tc := range []struct {
		authority, token string
		want             discovery.Target
	}{
		{"books.demo.svc.cluster.local:8080", "", discovery.Target{Namespace: "demo", Name: "books", Port: 8080}},
		{"books:8080", `{"ns":"demo"}`, discovery.Target{Namespace: "demo", Name: "books", Port: 8080}},
		{"books.demo:9000", "", discovery.Target{Namespace: "demo", Name: "books", Port: 9000}},
		{"localhost:9090", "", discovery.Target{Namespace: "demo", Name: "books", Port: 8080}},
		{"127.0.0.1:41001", "", discovery.Target{IP: netip.MustParseAddr("127.0.0.1"), Port: 41001}},
		{"www.example.com:443", "", discovery.Target{External: "www.example.com", Port: 443}},
	} {
		got, err := b.Resolve(tc.authority, tc.token)
		if err != nil {
			t.Errorf("Resolve(%q): %v", tc.authority, err)
			continue
		}
		if got != tc.want {
			t.Errorf("Resolve(%q, %q) = %+v, want %+v", tc.authority, tc.token, got, tc.want)
		}
	}
	if _, err := b.Resolve("books:notaport", ""); err == nil {
		t.Error("Resolve of a bad authority: no error")
	}
}

func TestService(t *testing.T) {
	b, _ := newBackend(t, registryServices)
	svc := b.Service(discovery.Target{Namespace: "demo", Name: "books", Port: 8080})
	if svc == nil {
		t.Fatal("no Service books")
	}
	want := map[string]string{"retry.conduit.io/grpc": "unavailable", "timeout.conduit.io/request": "1s"}
	if diff := cmp.Diff(want, svc.Annotations); diff != "" {
		t.Errorf("annotations (-want +got):\n%s", diff)
	}
	var ports []int32
	for _, p := range svc.Spec.Ports {
		ports = append(ports, p.Port)
	}
	if diff := cmp.Diff([]int32{8080, 9000}, ports); diff != "" {
		t.Errorf("ports (-want +got):\n%s", diff)
	}
	if svc.Namespace != "demo" || svc.Name != "books" || svc.Spec.Type != corev1.ServiceTypeClusterIP || svc.ResourceVersion == "" {
		t.Errorf("Service = %+v", svc.ObjectMeta)
	}
	for _, tgt := range []discovery.Target{
		{Namespace: "demo", Name: "nope", Port: 8080},
		{Namespace: "other", Name: "books", Port: 8080},
		{IP: netip.MustParseAddr("127.0.0.1"), Port: 41001},
		{External: "www.example.com", Port: 443},
	} {
		if got := b.Service(tgt); got != nil {
			t.Errorf("Service(%+v) = %s/%s, want nil", tgt, got.Namespace, got.Name)
		}
	}
}

func TestServiceAnnotationsDisagree(t *testing.T) {
	_, err := ParseRegistry([]byte(`
services:
- {name: books, namespace: demo, port: 8080, annotations: {timeout.conduit.io/request: 1s}, endpoints: []}
- {name: books, namespace: demo, port: 9000, annotations: {timeout.conduit.io/request: 2s}, endpoints: []}
`))
	if err == nil || !strings.Contains(err.Error(), "services[1]") || !strings.Contains(err.Error(), "services[0]") ||
		!strings.Contains(err.Error(), "timeout.conduit.io/request") {
		t.Errorf("err = %v, want one naming both entries and the annotation", err)
	}
}

// events records a Service handler's calls as "add[initial] ns/name@rv",
// "update ns/name@rv->rv", "delete ns/name@rv".
type events []string

func (e *events) handler() cache.ResourceEventHandler {
	name := func(obj any) string {
		svc := obj.(*corev1.Service)
		return svc.Namespace + "/" + svc.Name + "@" + svc.ResourceVersion
	}
	return cache.ResourceEventHandlerDetailedFuncs{
		AddFunc: func(obj any, initial bool) {
			what := "add"
			if initial {
				what = "add[initial]"
			}
			*e = append(*e, what+" "+name(obj))
		},
		UpdateFunc: func(old, obj any) {
			*e = append(*e, "update "+name(old)+"->"+obj.(*corev1.Service).ResourceVersion)
		},
		DeleteFunc: func(obj any) { *e = append(*e, "delete "+name(obj)) },
	}
}

func TestServiceHandler(t *testing.T) {
	b, path := newBackend(t, registryServices)
	var got events
	b.AddServiceHandler(got.handler())
	check := func(step string, want ...string) {
		t.Helper()
		if diff := cmp.Diff(want, []string(got)); diff != "" {
			t.Errorf("%s: events (-want +got):\n%s", step, diff)
		}
		got = nil
	}
	check("added", "add[initial] demo/authors-v1@1", "add[initial] demo/books@1")

	write := func(content string) {
		t.Helper()
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		b.Reload()
	}
	// An endpoint moves: no Service changed.
	write(strings.Replace(registryServices, "127.0.0.1:41003", "127.0.0.1:41013", 1))
	check("endpoint moved")
	before := b.Service(discovery.Target{Namespace: "demo", Name: "books"})

	// books's timeout changes, authors-v2 comes, authors-v1 goes.
	changed := strings.Replace(registryServices, "timeout.conduit.io/request: 1s", "timeout.conduit.io/request: 2s", 1)
	changed = strings.Replace(changed, "authors-v1", "authors-v2", 1)
	write(changed)
	check("changed", "add demo/authors-v2@3", "update demo/books@1->3", "delete demo/authors-v1@1")
	if after := b.Service(discovery.Target{Namespace: "demo", Name: "books"}); after == before || after.Annotations["timeout.conduit.io/request"] != "2s" {
		t.Errorf("books after the change: %v", after.Annotations)
	}

	// An invalid registry changes nothing.
	write(changed + "\n- {name: Bad}\n")
	check("invalid")

	// A second handler gets the current Services.
	var second events
	b.AddServiceHandler(second.handler())
	if diff := cmp.Diff(events{"add[initial] demo/authors-v2@3", "add[initial] demo/books@3"}, second); diff != "" {
		t.Errorf("second handler (-want +got):\n%s", diff)
	}
	if fmt.Sprint(got) != "[]" {
		t.Errorf("first handler told again: %v", got)
	}
}
