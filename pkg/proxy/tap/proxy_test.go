package tap

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
)

// startTapped runs a proxy whose inbound side forwards to target, with a
// subscriber to all its requests' events.
func startTapped(t *testing.T, target string) (*proxy.Proxy, *subscriber) {
	t.Helper()
	return startTappedWithPolicy(t, target, nil)
}

// startTappedWithPolicy is startTapped for a proxy enforcing policy.
func startTappedWithPolicy(t *testing.T, target string, policy *authz.Store) (*proxy.Proxy, *subscriber) {
	t.Helper()
	ts := NewServer(Config{})
	p, err := proxy.New(proxy.Config{InboundAddr: "127.0.0.1:0", InboundTarget: target, Observer: ts, Policy: policy})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	sub := &subscriber{match: matchAll, ch: make(chan *event, 16)}
	ts.add(sub)
	return p, sub
}

// nextEvent decodes sub's next event.
func nextEvent(t *testing.T, sub *subscriber) *tapv1.TapEvent {
	t.Helper()
	var ev tapv1.TapEvent
	select {
	case e := <-sub.ch:
		if err := proto.Unmarshal(e.b, &ev); err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no event within 10s")
	}
	return &ev
}

// TestThroughProxy taps requests carried by a real proxy's inbound side.
func TestThroughProxy(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/fail":
			http.Error(w, "nope", http.StatusServiceUnavailable)
		case "/chunked":
			// No Content-Length: the response is chunked.
			io.WriteString(w, "chun")
			http.NewResponseController(w).Flush()
			io.WriteString(w, "ked")
		default:
			w.Header().Set("Content-Length", "5")
			io.WriteString(w, "hello")
		}
	}))
	defer backend.Close()
	p, sub := startTapped(t, strings.TrimPrefix(backend.URL, "http://"))
	client := &http.Client{Timeout: 10 * time.Second}
	for _, path := range []string{"/ok?q=1", "/fail", "/chunked"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.InboundAddr()+path, nil)
		req.Header.Set("Cookie", "session=secret")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var got []string
	redacted := 0
	for len(got) < 9 {
		ev := nextEvent(t, sub)
		h := ev.GetHttp()
		switch {
		case h.GetRequestInit() != nil:
			ri := h.GetRequestInit()
			for _, hd := range ri.GetHeaders() {
				if hd.GetName() == "cookie" {
					if string(hd.GetValue()) != Redacted {
						t.Errorf("cookie leaked: %s", hd.GetValue())
					}
					redacted++
				}
			}
			if ev.GetDirection() != tapv1.Direction_DIRECTION_INBOUND {
				t.Errorf("direction %v", ev.GetDirection())
			}
			got = append(got, "req "+ri.GetMethod()+" "+ri.GetPath())
		case h.GetResponseInit() != nil:
			got = append(got, "rsp "+http.StatusText(int(h.GetResponseInit().GetHttpStatus())))
		case h.GetResponseEnd() != nil:
			e := h.GetResponseEnd()
			got = append(got, "end "+strings.Repeat("x", int(e.GetResponseBytes())))
		}
	}
	// The error body is "nope\n" (5 bytes); the chunked body's length is
	// its decoded length.
	want := "req GET /ok|rsp OK|end xxxxx|req GET /fail|rsp Service Unavailable|end xxxxx|req GET /chunked|rsp OK|end xxxxxxx"
	if g := strings.Join(got, "|"); g != want {
		t.Errorf("events:\n%s\nwant:\n%s", g, want)
	}
	if redacted != 3 {
		t.Errorf("%d requests showed a redacted cookie header, want 3", redacted)
	}
}

// TestThroughProxyAuthz: a real proxy's policy decision reaches the
// request's event, for admitted and refused requests on both HTTP paths.
func TestThroughProxyAuthz(t *testing.T) {
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	backend.Config.Protocols = new(http.Protocols)
	backend.Config.Protocols.SetHTTP1(true)
	backend.Config.Protocols.SetUnencryptedHTTP2(true)
	backend.Start()
	defer backend.Close()
	target := strings.TrimPrefix(backend.URL, "http://")
	h2c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: new(http.Protocols)}}
	h2c.Transport.(*http.Transport).Protocols.SetUnencryptedHTTP2(true)
	for _, tc := range []struct {
		name, defaultPolicy string
		want                *tapv1.Authorization
		status              uint32
	}{
		{"admitted", "all-unauthenticated", &tapv1.Authorization{Allowed: true,
			Server: &tapv1.PolicyRef{Kind: "default", Name: "all-unauthenticated"}, Route: &tapv1.PolicyRef{Kind: "default", Name: "default"},
			Authorization: &tapv1.PolicyRef{Kind: "default", Name: "all-unauthenticated"}}, 200},
		{"refused", "deny", &tapv1.Authorization{HttpStatus: 403, Server: &tapv1.PolicyRef{Kind: "default", Name: "deny"},
			Route: &tapv1.PolicyRef{Kind: "default", Name: "default"}}, 403},
	} {
		for _, client := range []struct {
			name string
			c    *http.Client
		}{{"HTTP/1.1", &http.Client{Timeout: 10 * time.Second}}, {"h2c", h2c}} {
			t.Run(tc.name+" "+client.name, func(t *testing.T) {
				p, sub := startTappedWithPolicy(t, target, authz.NewStore(authz.Pending(tc.defaultPolicy)))
				resp, err := client.c.Get("http://" + p.InboundAddr() + "/books")
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				ev := nextEvent(t, sub)
				got := ev.GetHttp().GetRequestInit().GetAuthz()
				if got == nil {
					t.Fatalf("no authz on %v", ev)
				}
				if tc.want.Allowed || got.GetReason() != "" { // a denial's reason is the proxy's to word
					tc.want.Reason = got.GetReason()
				}
				if !proto.Equal(got, tc.want) || (!tc.want.Allowed && got.GetReason() == "") {
					t.Errorf("authz = %v, want %v (and a reason when denied)", got, tc.want)
				}
				if rsp := nextEvent(t, sub).GetHttp().GetResponseInit(); rsp.GetHttpStatus() != tc.status {
					t.Errorf("response status %d, want %d", rsp.GetHttpStatus(), tc.status)
				}
			})
		}
	}
}

type echoService struct {
	testpb.UnimplementedTestServiceServer
}

func (echoService) UnaryCall(_ context.Context, r *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: &testpb.Payload{Body: make([]byte, r.GetResponseSize())}}, nil
}

// TestThroughProxyGRPC: the end event of a gRPC call counts the response
// messages' bytes (gRPC responses have no Content-Length).
func TestThroughProxyGRPC(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, echoService{})
	go gs.Serve(lis)
	defer gs.Stop()
	p, sub := startTapped(t, lis.Addr().String())
	cc, err := grpc.NewClient(p.InboundAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	resp, err := testpb.NewTestServiceClient(cc).UnaryCall(cctx, &testpb.SimpleRequest{ResponseSize: 1000})
	if err != nil {
		t.Fatal(err)
	}
	want := int64(5 + proto.Size(resp)) // one length-prefixed message
	for {
		ev := nextEvent(t, sub)
		if e := ev.GetHttp().GetResponseEnd(); e != nil {
			if got := int64(e.GetResponseBytes()); got != want {
				t.Errorf("response bytes = %d, want %d", got, want)
			}
			if e.GetEos().GetGrpcStatusCode() != 0 {
				t.Errorf("end = %v, want grpc-status 0", e)
			}
			return
		}
	}
}
