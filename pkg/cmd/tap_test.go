package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
	ctltap "github.com/conduitmesh/conduit/pkg/controller/tap"
	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	proxytap "github.com/conduitmesh/conduit/pkg/proxy/tap"
)

// tapMesh is one proxy tap server behind a real controller TapAPI.
func tapMesh(t *testing.T) (*proxytap.Server, string) {
	t.Helper()
	px := proxytap.NewServer(proxytap.Config{})
	hs := httptest.NewUnstartedServer(px.Handler())
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(hs.Close)
	pods := []stats.Pod{{Namespace: "demo", Name: "web-0", AdminAddr: hs.Listener.Addr().String(),
		Labels: map[string]string{"deployment": "web"}}}
	addr := serveController(t, nil, ctltap.NewServer(ctltap.Config{
		Pods: stats.PodsFunc(func(context.Context) ([]stats.Pod, error) { return pods, nil })}))
	return px, addr
}

// lineWriter cancels when it has seen n lines.
type lineWriter struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	n      int
	cancel func()
}

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Count(w.buf.String(), "\n") >= w.n {
		w.cancel()
	}
	return len(p), nil
}

// makeTraffic sends requests through the proxy's tap hook until ctx ends;
// those to /books/1 match the HTTPRoute books.
func makeTraffic(ctx context.Context, px *proxytap.Server, path string, status int) {
	for ctx.Err() == nil {
		req := &proxy.Request{Direction: "outbound", Method: "GET", Authority: "books.demo:7001", Path: path,
			Header: http.Header{"Authorization": {"secret"}}, TLS: true,
			Source: netip.MustParseAddrPort("127.0.0.1:5000"), Destination: netip.MustParseAddrPort("127.0.0.1:7001"),
			DstLabels: map[string]string{"deployment": "books", "namespace": "demo"}}
		if path == "/books/1" {
			req.RouteKind, req.RouteName = "httproute", "books"
		}
		ro := px.RequestStarted(req)
		if ro != nil {
			ro.ResponseStarted(&proxy.Response{Status: status})
			ro.Ended(proxy.EndInfo{GRPCStatus: "0", ResponseBytes: 12})
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestTapPiped(t *testing.T) {
	px, addr := tapMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go makeTraffic(ctx, px, "/books/1", 200)
	w := &lineWriter{n: 6, cancel: cancel}
	var errOut bytes.Buffer
	err := Run(ctx, IOStreams{In: strings.NewReader(""), Out: w, ErrOut: &errOut},
		[]string{"conduit", "tap", "deploy/web", "-n", "demo", "--controller-addr", addr, "--path", "/books", "-o", "wide"})
	if err != nil {
		t.Fatalf("%v (stderr %s)", err, errOut.String())
	}
	w.mu.Lock()
	out := w.buf.String()
	w.mu.Unlock()
	for _, re := range []string{
		`(?m)^req id=\d+:\d+ proxy=out src=127\.0\.0\.1:5000 dst=127\.0\.0\.1:7001 tls=true :method=GET :authority=books\.demo:7001 :path=/books/1 route=httproute/books src_res=deploy/web src_ns=demo dst_res=deploy/books dst_ns=demo$`,
		`(?m)^rsp id=\d+:\d+ proxy=out .* :status=200 latency=\d+µs`,
		`(?m)^end id=\d+:\d+ proxy=out .* grpc-status=OK duration=\d+µs response-length=12B`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}
}

func TestTapJSON(t *testing.T) {
	px, addr := tapMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go makeTraffic(ctx, px, "/books/1", 200)
	w := &lineWriter{n: 3, cancel: cancel}
	if err := Run(ctx, IOStreams{In: strings.NewReader(""), Out: w, ErrOut: &bytes.Buffer{}},
		[]string{"conduit", "tap", "deploy/web", "-n", "demo", "--controller-addr", addr, "-o", "json"}); err != nil {
		t.Fatal(err)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	sawReq := false
	for _, line := range strings.Split(strings.TrimSpace(w.buf.String()), "\n") {
		var ev map[string]any
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if ev["type"] == "req" {
			sawReq = true
			if h := ev["headers"].(map[string]any); h["authorization"] != proxytap.Redacted {
				t.Errorf("authorization not redacted: %v", h)
			}
			if rt, _ := ev["route"].(map[string]any); rt["kind"] != "httproute" || rt["name"] != "books" {
				t.Errorf("route = %v, want httproute books", ev["route"])
			}
		}
	}
	if !sawReq {
		t.Errorf("no req event in %s", w.buf.String())
	}
}

func TestTapRefused(t *testing.T) {
	_, addr := tapMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, _, err := runObsCLI(ctx, t, "tap", "deploy/nope", "-n", "demo", "--controller-addr", addr)
	if err == nil || err.Error() != "deployment/nope not found in namespace demo" || out != "" {
		t.Errorf("err = %v, stdout %q", err, out)
	}
}

func TestTopSnapshot(t *testing.T) {
	px, addr := tapMesh(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	go makeTraffic(ctx, px, "/books/1", 200)
	go makeTraffic(ctx, px, "/books/2", 503)
	out, _, err := runObsCLI(ctx, t, "top", "deploy/web", "-n", "demo", "--controller-addr", addr, "--duration", "1s", "-o", "json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []map[string]any
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	byPath := map[string]map[string]any{}
	for _, r := range rows {
		byPath[r["path"].(string)] = r
	}
	ok, bad := byPath["/books/1"], byPath["/books/2"]
	if ok == nil || bad == nil || ok["success"] != 1.0 || bad["success"] != 0.0 || ok["source"] != "deploy/web" || ok["destination"] != "deploy/books" {
		t.Errorf("rows = %v", rows)
	}
	// The route of the requests that matched one.
	if ok["route"] != "books" || ok["routeKind"] != "httproute" || bad["route"] != nil {
		t.Errorf("routes: %v and %v, want books (httproute) and none", ok, bad)
	}

	// Piped without -o: a plain table, ROUTE last.
	out, _, err = runObsCLI(ctx, t, "top", "deploy/web", "-n", "demo", "--controller-addr", addr, "--duration", "1s")
	if err != nil {
		t.Fatal(err)
	}
	for _, re := range []string{
		`(?m)^SOURCE +DESTINATION +METHOD +PATH +COUNT +BEST +WORST +LAST +SUCCESS +ROUTE$`,
		`(?m)^deploy/web +deploy/books +GET +/books/1 +\d+ .* 100\.00% +books$`,
		`(?m)^deploy/web +deploy/books +GET +/books/2 +\d+ .* 0\.00% +-$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("table lacks %s:\n%s", re, out)
		}
	}
}

func TestCheckTapAccess(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authzv1.SelfSubjectAccessReview)
		ra := r.Spec.ResourceAttributes
		r.Status.Allowed = ra.Namespace == "demo" && ra.Verb == "watch" && ra.Group == "tap.conduit.io" && ra.Resource == "tap"
		return true, r, nil
	})
	client.PrependReactor("create", "selfsubjectreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authnv1.SelfSubjectReview)
		r.Status.UserInfo.Username = "alice"
		return true, r, nil
	})
	ctx := context.Background()
	if err := checkTapAccess(ctx, client, &tapv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"}); err != nil {
		t.Errorf("demo: %v", err)
	}
	if err := checkTapAccess(ctx, client, &tapv1.Resource{Type: "ns", Name: "demo"}); err != nil {
		t.Errorf("ns/demo: %v", err)
	}
	err := checkTapAccess(ctx, client, &tapv1.Resource{Namespace: "prod", Type: "deploy", Name: "web"})
	want := `forbidden: user "alice" cannot tap deployment/web in namespace prod (needs verb "watch" on resource "tap" in API group "tap.conduit.io")`
	if err == nil || err.Error() != want {
		t.Errorf("prod: %v\nwant %s", err, want)
	}
}

// authzTraffic sends inbound requests under a policy through the proxy's
// tap hook until ctx ends: one admitted, one refused (answered 403).
func authzTraffic(ctx context.Context, px *proxytap.Server) {
	server := authz.Ref{Kind: "server", Name: "web-http", Namespace: "demo"}
	for ctx.Err() == nil {
		for _, d := range []authz.Decision{
			{Allowed: true, Server: server, Route: authz.Ref{Kind: "default", Name: "default"}, Authz: authz.Ref{Kind: "authorizationpolicy", Name: "web-get", Namespace: "demo"}},
			{Status: 403, Server: server, Route: authz.Ref{Kind: "default", Name: "default"}, Reason: "unauthorized: server web-http requires mesh TLS (client 127.0.0.1 is not meshed)"},
		} {
			ro := px.RequestStarted(&proxy.Request{Direction: "inbound", Method: "GET", Authority: "web.demo:8080", Path: "/books",
				Source: netip.MustParseAddrPort("127.0.0.1:5000"), Destination: netip.MustParseAddrPort("127.0.0.1:8080"), Authz: d})
			if ro != nil {
				ro.ResponseStarted(&proxy.Response{Status: max(d.Status, 200)})
				ro.Ended(proxy.EndInfo{Status: max(d.Status, 200)})
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestTapAuthz: the policy's decision, from the proxy through the
// controller, in lines (plain and wide) and JSON.
func TestTapAuthz(t *testing.T) {
	px, addr := tapMesh(t)
	lines := func(n int, args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		go authzTraffic(ctx, px)
		w := &lineWriter{n: n, cancel: cancel}
		if err := Run(ctx, IOStreams{In: strings.NewReader(""), Out: w, ErrOut: &bytes.Buffer{}},
			append([]string{"conduit", "tap", "deploy/web", "-n", "demo", "--controller-addr", addr}, args...)); err != nil {
			t.Fatal(err)
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.buf.String()
	}
	out := lines(6)
	for _, re := range []string{
		`(?m)^req id=\d+:\d+ proxy=in src=127\.0\.0\.1:5000 dst=127\.0\.0\.1:8080 tls=false :method=GET :authority=web\.demo:8080 :path=/books authz=allow:server/web-http$`,
		`(?m)^req id=\d+:\d+ proxy=in src=127\.0\.0\.1:5000 dst=127\.0\.0\.1:8080 tls=false :method=GET :authority=web\.demo:8080 :path=/books authz=deny:server/web-http$`,
		`(?m)^rsp id=\d+:\d+ proxy=in .* :status=403 `,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}
	out = lines(6, "-o", "wide")
	for _, re := range []string{
		`(?m) :path=/books authz=allow:server/web-http authz_route=default/default authz_by=authorizationpolicy/web-get dst_res=deploy/web dst_ns=demo$`,
		`(?m) :path=/books authz=deny:server/web-http authz_route=default/default authz_reason="unauthorized: server web-http requires mesh TLS \(client 127\.0\.0\.1 is not meshed\)" dst_res=deploy/web dst_ns=demo$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("wide output lacks %s:\n%s", re, out)
		}
	}
	out = lines(6, "-o", "json")
	seen := map[bool]bool{}
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		var ev struct {
			Type  string
			Authz *tapAuthzJSON
		}
		if err := json.Unmarshal([]byte(line), &ev); err != nil {
			t.Fatalf("line %q: %v", line, err)
		}
		if ev.Type != "req" {
			if ev.Authz != nil {
				t.Errorf("authz on a %s event: %s", ev.Type, line)
			}
			continue
		}
		a := ev.Authz
		if a == nil || a.Server == nil || *a.Server != (tapPolicyJSON{Kind: "server", Name: "web-http", Namespace: "demo"}) ||
			a.Route == nil || a.Route.Kind != "default" ||
			(a.Allowed && (a.Status != 0 || a.Authorization == nil || a.Authorization.Name != "web-get" || a.Reason != "")) ||
			(!a.Allowed && (a.Status != 403 || a.Authorization != nil || !strings.HasPrefix(a.Reason, "unauthorized: "))) {
			t.Errorf("req event: %s", line)
		}
		if a != nil {
			seen[a.Allowed] = true
		}
	}
	if !seen[true] || !seen[false] {
		t.Errorf("want an admitted and a refused request in:\n%s", out)
	}
}

// TestTapAuthzText: how lines and the live view name a decision.
func TestTapAuthzText(t *testing.T) {
	for _, tc := range []struct {
		a    *tapv1.Authorization
		want string
	}{
		{&tapv1.Authorization{Allowed: true, Server: &tapv1.PolicyRef{Kind: "server", Name: "web-http"}}, "allow:server/web-http"},
		{&tapv1.Authorization{HttpStatus: 403, Server: &tapv1.PolicyRef{Kind: "default", Name: "deny"}}, "deny:default/deny"},
		{&tapv1.Authorization{HttpStatus: 404, Server: &tapv1.PolicyRef{Name: "web-http"}}, "deny:web-http"},
	} {
		if got := tapAuthzText(tc.a); got != tc.want {
			t.Errorf("tapAuthzText(%v) = %q, want %q", tc.a, got, tc.want)
		}
		ev := &tapv1.TapEvent{Event: &tapv1.TapEvent_Http_{Http: &tapv1.TapEvent_Http{Event: &tapv1.TapEvent_Http_RequestInit_{
			RequestInit: &tapv1.TapEvent_Http_RequestInit{Id: &tapv1.TapEvent_Http_StreamId{}, Authz: tc.a}}}}}
		if te, _ := tuiEvent(ev); te.Authz.Short() != tc.want {
			t.Errorf("live view shows %q, want %q", te.Authz.Short(), tc.want)
		}
	}
}
