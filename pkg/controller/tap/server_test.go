package tap

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
	conduitproxy "github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	proxytap "github.com/conduitmesh/conduit/pkg/proxy/tap"
)

// proxy is a proxy's tap server on loopback.
func proxy(t *testing.T) (*proxytap.Server, string) {
	t.Helper()
	s := proxytap.NewServer(proxytap.Config{})
	hs := httptest.NewUnstartedServer(s.Handler())
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Config.Protocols.SetHTTP1(true)
	hs.Start()
	t.Cleanup(hs.Close)
	return s, hs.Listener.Addr().String()
}

// controller serves TapAPI on loopback and returns a client.
func controller(t *testing.T, cfg Config) tapv1.TapAPIClient {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	tapv1.RegisterTapAPIServer(gs, NewServer(cfg))
	go gs.Serve(lis)
	t.Cleanup(gs.Stop)
	cc, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return tapv1.NewTapAPIClient(cc)
}

// traffic makes one request through s's tap hook, refused by the inbound
// policy when path is /denied, matching a route (the relay passes it on
// whatever the direction) when it is /a.
func traffic(s *proxytap.Server, path string) {
	req := &conduitproxy.Request{Direction: "inbound", Method: "GET", Authority: "web", Path: path,
		Source: netip.MustParseAddrPort("127.0.0.1:1"), Destination: netip.MustParseAddrPort("127.0.0.1:2")}
	if path == "/a" {
		req.RouteKind, req.RouteName = "httproute", "web-a"
	}
	status := 200
	if path == "/denied" {
		status = 403
		req.Authz = authz.Decision{Status: status, Server: authz.Ref{Kind: "server", Name: "web-http", Namespace: "demo"}, Reason: "unauthorized"}
	}
	ro := s.RequestStarted(req)
	if ro != nil {
		ro.ResponseStarted(&conduitproxy.Response{Status: status})
		ro.Ended(conduitproxy.EndInfo{ResponseBytes: 1})
	}
}

func waitSubscribed(t *testing.T, ss ...*proxytap.Server) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for _, s := range ss {
		for s.Subscribers() == 0 {
			if time.Now().After(deadline) {
				t.Fatal("proxy never subscribed to")
			}
			time.Sleep(5 * time.Millisecond)
		}
	}
}

func TestTapByResourceMergesPods(t *testing.T) {
	p1, a1 := proxy(t)
	p2, a2 := proxy(t)
	_, a3 := proxy(t)
	pods := []stats.Pod{
		{Namespace: "demo", Name: "web-0", AdminAddr: a1, Labels: map[string]string{"deployment": "web"}},
		{Namespace: "demo", Name: "web-1", AdminAddr: a2, Labels: map[string]string{"deployment": "web"}},
		{Namespace: "demo", Name: "books-0", AdminAddr: a3, Labels: map[string]string{"deployment": "books"}},
	}
	api := controller(t, Config{Pods: stats.PodsFunc(func(context.Context) ([]stats.Pod, error) { return pods, nil })})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := api.TapByResource(ctx, &tapv1.TapByResourceRequest{
		Target: &tapv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"}, MaxRps: 1000})
	if err != nil {
		t.Fatal(err)
	}
	waitSubscribed(t, p1, p2)
	traffic(p1, "/a")
	traffic(p2, "/denied")
	seen := map[string]int{}
	for len(seen) < 2 || seen["web-0"] < 3 || seen["web-1"] < 3 {
		ev, err := st.Recv()
		if err != nil {
			t.Fatalf("Recv after %v: %v", seen, err)
		}
		pod := ev.GetProxyLabels()["pod"]
		if ev.GetDestinationLabels()["deployment"] != "web" || ev.GetProxyLabels()["namespace"] != "demo" {
			t.Errorf("event not labelled with its proxy: %v", ev)
		}
		// The policy's decision passes through.
		if ri := ev.GetHttp().GetRequestInit(); ri != nil {
			a := ri.GetAuthz()
			if denied := ri.GetPath() == "/denied"; (a != nil) != denied ||
				(denied && (a.GetAllowed() || a.GetHttpStatus() != 403 || a.GetServer().GetName() != "web-http" || a.GetReason() != "unauthorized")) {
				t.Errorf("%s: authz %v", ri.GetPath(), a)
			}
			// So does the route.
			if rt := ri.GetRoute(); (rt != nil) != (ri.GetPath() == "/a") || rt != nil && (rt.GetKind() != "httproute" || rt.GetName() != "web-a") {
				t.Errorf("%s: route %v", ri.GetPath(), rt)
			}
		}
		seen[pod]++
	}
}

func reqEvent(stream uint64, kind int) *tapv1.TapEvent {
	id := &tapv1.TapEvent_Http_StreamId{Base: 1, Stream: stream}
	h := &tapv1.TapEvent_Http{}
	switch kind {
	case 0:
		h.Event = &tapv1.TapEvent_Http_RequestInit_{RequestInit: &tapv1.TapEvent_Http_RequestInit{Id: id}}
	case 1:
		h.Event = &tapv1.TapEvent_Http_ResponseInit_{ResponseInit: &tapv1.TapEvent_Http_ResponseInit{Id: id}}
	default:
		h.Event = &tapv1.TapEvent_Http_ResponseEnd_{ResponseEnd: &tapv1.TapEvent_Http_ResponseEnd{Id: id}}
	}
	return &tapv1.TapEvent{Event: &tapv1.TapEvent_Http_{Http: h}}
}

func TestSampler(t *testing.T) {
	// 0.001 rps with a burst of 1: the first request passes, the rest of
	// the burst does not, and only the admitted request's later events do.
	s := newSampler(0.001)
	var got []string
	for i := uint64(1); i <= 20; i++ {
		if s.admit("p", reqEvent(i, 0)) {
			got = append(got, "req")
		}
	}
	for i := uint64(1); i <= 20; i++ {
		if s.admit("p", reqEvent(i, 1)) {
			got = append(got, "rsp")
		}
		if s.admit("p", reqEvent(i, 2)) {
			got = append(got, "end")
		}
	}
	if strings.Join(got, " ") != "req rsp end" {
		t.Errorf("admitted %v, want req rsp end", got)
	}
	if len(s.admitted) != 0 {
		t.Errorf("finished request still remembered")
	}
	if s.admit("q", reqEvent(1, 1)) {
		t.Errorf("an event of another pod's stream 1 passed")
	}
}

func TestTapByResourceErrors(t *testing.T) {
	pods := []stats.Pod{
		{Namespace: "demo", Name: "plain-0", Labels: map[string]string{"deployment": "plain"}},
	}
	deny := authorizerFunc(func(_ context.Context, c Caller, target stats.Ref) error {
		if !c.Loopback {
			return fmt.Errorf("not over loopback")
		}
		if c.Token != "good" {
			return ErrForbidden
		}
		return nil
	})
	api := controller(t, Config{Pods: stats.PodsFunc(func(context.Context) ([]stats.Pod, error) { return pods, nil }), Authorizer: deny})
	tests := []struct {
		name   string
		target *tapv1.Resource
		token  string
		code   codes.Code
		msg    string
	}{
		{"unknown type", &tapv1.Resource{Type: "cronjob", Name: "x"}, "good", codes.InvalidArgument, "cronjob"},
		{"authority", &tapv1.Resource{Type: "au", Name: "x"}, "good", codes.InvalidArgument, ""},
		{"forbidden", &tapv1.Resource{Namespace: "demo", Type: "deploy", Name: "plain"}, "bad", codes.PermissionDenied, ""},
		{"not found", &tapv1.Resource{Namespace: "demo", Type: "deploy", Name: "nope"}, "good", codes.NotFound, "deployment/nope not found in namespace demo"},
		{"unmeshed", &tapv1.Resource{Namespace: "demo", Type: "deploy", Name: "plain"}, "good", codes.FailedPrecondition, "no meshed pods"},
	}
	for _, tc := range tests {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+tc.token)
		st, err := api.TapByResource(ctx, &tapv1.TapByResourceRequest{Target: tc.target})
		if err == nil {
			_, err = st.Recv()
		}
		cancel()
		if status.Code(err) != tc.code || !strings.Contains(err.Error(), tc.msg) {
			t.Errorf("%s: err = %v, want %v containing %q", tc.name, err, tc.code, tc.msg)
		}
	}
}

type authorizerFunc func(ctx context.Context, c Caller, target stats.Ref) error

func (f authorizerFunc) Authorize(ctx context.Context, c Caller, target stats.Ref) error {
	return f(ctx, c, target)
}

func TestKubeAuthorizer(t *testing.T) {
	client := fake.NewClientset()
	client.PrependReactor("create", "tokenreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		tr := a.(k8stesting.CreateAction).GetObject().(*authnv1.TokenReview)
		if tr.Spec.Token == "alice-token" {
			tr.Status = authnv1.TokenReviewStatus{Authenticated: true, User: authnv1.UserInfo{Username: "alice", Groups: []string{"devs"}}}
		}
		return true, tr, nil
	})
	var asked *authzv1.ResourceAttributes
	client.PrependReactor("create", "subjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		sar := a.(k8stesting.CreateAction).GetObject().(*authzv1.SubjectAccessReview)
		asked = sar.Spec.ResourceAttributes
		sar.Status.Allowed = sar.Spec.User == "alice" && asked.Namespace == "demo"
		return true, sar, nil
	})
	az := KubeAuthorizer{Client: client}
	ctx := context.Background()
	web := stats.Ref{Namespace: "demo", Type: stats.TypeDeployment, Name: "web"}
	if err := az.Authorize(ctx, Caller{Token: "alice-token"}, web); err != nil {
		t.Errorf("alice in demo: %v", err)
	}
	if asked.Verb != "watch" || asked.Group != "tap.conduit.io" || asked.Resource != "tap" {
		t.Errorf("asked for %+v", asked)
	}
	err := az.Authorize(ctx, Caller{Token: "alice-token"}, stats.Ref{Namespace: "prod", Type: stats.TypeDeployment, Name: "web"})
	if err == nil || err.Error() != `forbidden: user "alice" cannot tap deployment/web in namespace prod (needs verb "watch" on resource "tap" in API group "tap.conduit.io")` {
		t.Errorf("alice in prod: %v", err)
	}
	for _, c := range []Caller{{}, {Token: "mallory"}, {Token: "mallory", Loopback: true}} {
		if err := az.Authorize(ctx, c, web); err == nil {
			t.Errorf("%+v allowed", c)
		}
	}
	if err := az.Authorize(ctx, Caller{Loopback: true}, web); err != nil {
		t.Errorf("a port-forwarded caller without a token was refused: %v", err)
	}
}

func TestTapByResourceProxiesDown(t *testing.T) {
	// An admin server that speaks only HTTP/1.1, like a proxy without tap.
	old := httptest.NewServer(http.NotFoundHandler())
	defer old.Close()
	pods := []stats.Pod{{Namespace: "demo", Name: "web-0", AdminAddr: old.Listener.Addr().String(), Labels: map[string]string{"deployment": "web"}}}
	api := controller(t, Config{Pods: stats.PodsFunc(func(context.Context) ([]stats.Pod, error) { return pods, nil })})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	st, err := api.TapByResource(ctx, &tapv1.TapByResourceRequest{Target: &tapv1.Resource{Namespace: "demo", Type: "deploy", Name: "web"}})
	if err == nil {
		_, err = st.Recv()
	}
	if status.Code(err) != codes.FailedPrecondition || !strings.Contains(err.Error(), "no proxy could be tapped: pod demo/web-0 at "+pods[0].AdminAddr) {
		t.Errorf("err = %v", err)
	}
}

func TestDecorateNamesInboundClients(t *testing.T) {
	pods := []stats.Pod{
		{Namespace: "demo", Name: "web-0", Identity: "spiffe://td/ns/demo/sa/web", Labels: map[string]string{"deployment": "web", "serviceaccount": "web"}},
		{Namespace: "demo", Name: "web-1", Identity: "spiffe://td/ns/demo/sa/web", Labels: map[string]string{"deployment": "web", "serviceaccount": "web"}},
		{Namespace: "demo", Name: "books-0", Identity: "spiffe://td/ns/demo/sa/books", Labels: map[string]string{"deployment": "books", "service": "books"}},
	}
	ids := identitiesOf(pods)
	ev := &tapv1.TapEvent{Direction: tapv1.Direction_DIRECTION_INBOUND, ClientId: "spiffe://td/ns/demo/sa/web"}
	decorate(ev, &pods[2], ids)
	if got := ev.GetSourceLabels(); got["deployment"] != "web" || got["pod"] != "" || got["namespace"] != "demo" {
		t.Errorf("source labels = %v, want deployment web without a pod", got)
	}
	if got := ev.GetDestinationLabels(); got["pod"] != "books-0" || got["service"] != "books" {
		t.Errorf("destination labels = %v", got)
	}
	unknown := &tapv1.TapEvent{Direction: tapv1.Direction_DIRECTION_INBOUND, ClientId: "spiffe://td/ns/x/sa/y"}
	decorate(unknown, &pods[2], ids)
	if len(unknown.GetSourceLabels()) != 0 {
		t.Errorf("an unknown client got labels %v", unknown.GetSourceLabels())
	}
}
