package tap

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
)

var t0 = time.Date(2026, 11, 25, 16, 0, 0, 0, time.UTC)

func info() *proxy.Request {
	return &proxy.Request{
		Direction: "outbound", Method: "GET", Scheme: "http", Authority: "Books.demo:7001", Path: "/books/1",
		Header:      http.Header{"Authorization": {"Bearer x"}, "Cookie": {"a=b"}, "User-Agent": {"demo"}},
		Source:      netip.MustParseAddrPort("127.0.0.1:5000"),
		Destination: netip.MustParseAddrPort("10.1.2.3:7001"),
		TLS:         true, ServerID: "spiffe://cluster.local/ns/demo/sa/books",
		DstLabels: map[string]string{"deployment": "books", "namespace": "demo"},
	}
}

func TestEncodingMatchesAPI(t *testing.T) {
	c := &common{direction: 2, src: info().Source, dst: info().Destination, dstLabels: info().DstLabels,
		tls: true, serverID: "spiffe://cluster.local/ns/demo/sa/books", base: 7, stream: 9}
	var ev tapv1.TapEvent
	if err := proto.Unmarshal(c.requestInit(nil, t0, info()), &ev); err != nil {
		t.Fatal(err)
	}
	ri := ev.GetHttp().GetRequestInit()
	if ri.GetId().GetBase() != 7 || ri.GetId().GetStream() != 9 || ri.GetMethod() != "GET" || ri.GetPath() != "/books/1" ||
		ri.GetAuthority() != "Books.demo:7001" || ev.GetDirection() != tapv1.Direction_DIRECTION_OUTBOUND || !ev.GetTls() ||
		ev.GetDestinationLabels()["deployment"] != "books" || !ev.GetTimestamp().AsTime().Equal(t0) ||
		netip.AddrPortFrom(netip.AddrFrom4([4]byte(ev.GetDestination().GetIp())), uint16(ev.GetDestination().GetPort())) != info().Destination {
		t.Errorf("request init decoded as %v", &ev)
	}
	got := map[string]string{}
	for _, h := range ri.GetHeaders() {
		got[h.GetName()] = string(h.GetValue())
	}
	if got["authorization"] != Redacted || got["cookie"] != Redacted || got["user-agent"] != "demo" {
		t.Errorf("headers = %v", got)
	}

	ev.Reset()
	if err := proto.Unmarshal(c.responseInit(nil, t0, 1500*time.Microsecond, &proxy.Response{Status: 503, Header: http.Header{"Set-Cookie": {"s=1"}}}), &ev); err != nil {
		t.Fatal(err)
	}
	rsp := ev.GetHttp().GetResponseInit()
	if rsp.GetHttpStatus() != 503 || rsp.GetSinceRequestInit().AsDuration() != 1500*time.Microsecond ||
		string(rsp.GetHeaders()[0].GetValue()) != Redacted {
		t.Errorf("response init decoded as %v", &ev)
	}

	ev.Reset()
	if err := proto.Unmarshal(c.responseEnd(nil, t0, 3*time.Second, time.Second, 42, 0, 0, 2), &ev); err != nil {
		t.Fatal(err)
	}
	end := ev.GetHttp().GetResponseEnd()
	if end.GetResponseBytes() != 42 || end.GetSinceRequestInit().AsDuration() != 3*time.Second ||
		end.GetEos() == nil || end.GetEos().GetGrpcStatusCode() != 0 || end.GetRetries() != 2 {
		t.Errorf("response end decoded as %v", &ev)
	}
	ev.Reset()
	_ = proto.Unmarshal(c.responseEnd(nil, t0, 0, 0, 0, -1, 0, 0), &ev)
	if ev.GetHttp().GetResponseEnd().GetEos() != nil {
		t.Errorf("no grpc-status encoded an eos: %v", &ev)
	}
}

// TestEncodingAuthzMatchesAPI: the policy's decision rides on the request
// init event, only when a policy applied.
func TestEncodingAuthzMatchesAPI(t *testing.T) {
	c := &common{direction: 1, src: info().Source, dst: info().Destination, base: 7, stream: 9}
	for _, tc := range []struct {
		name string
		d    authz.Decision
		want *tapv1.Authorization
	}{{
		name: "no policy",
	}, {
		name: "allowed",
		d: authz.Decision{Allowed: true, Server: authz.Ref{Kind: "server", Name: "web-http", Namespace: "demo"},
			Route: authz.Ref{Kind: "httproute", Name: "books", Namespace: "demo"}, Authz: authz.Ref{Kind: "authorizationpolicy", Name: "web-get", Namespace: "demo"}},
		want: &tapv1.Authorization{Allowed: true, Server: &tapv1.PolicyRef{Kind: "server", Name: "web-http", Namespace: "demo"},
			Route: &tapv1.PolicyRef{Kind: "httproute", Name: "books", Namespace: "demo"}, Authorization: &tapv1.PolicyRef{Kind: "authorizationpolicy", Name: "web-get", Namespace: "demo"}},
	}, {
		name: "default policy, default route",
		d:    authz.Decision{Allowed: true, Server: authz.Ref{Kind: "default", Name: "all-unauthenticated"}, Route: authz.Ref{Kind: "default", Name: "default"}, Authz: authz.Ref{Kind: "default", Name: "all-unauthenticated"}},
		want: &tapv1.Authorization{Allowed: true, Server: &tapv1.PolicyRef{Kind: "default", Name: "all-unauthenticated"},
			Route: &tapv1.PolicyRef{Kind: "default", Name: "default"}, Authorization: &tapv1.PolicyRef{Kind: "default", Name: "all-unauthenticated"}},
	}, {
		name: "denied",
		d: authz.Decision{Status: 403, Server: authz.Ref{Kind: "server", Name: "web-http", Namespace: "demo"}, Route: authz.Ref{Kind: "default", Name: "default"},
			Reason: "unauthorized: server web-http requires mesh TLS (client 10.0.0.7 is not meshed)"},
		want: &tapv1.Authorization{HttpStatus: 403, Server: &tapv1.PolicyRef{Kind: "server", Name: "web-http", Namespace: "demo"},
			Route: &tapv1.PolicyRef{Kind: "default", Name: "default"}, Reason: "unauthorized: server web-http requires mesh TLS (client 10.0.0.7 is not meshed)"},
	}, {
		name: "no route, a reason longer than 127 bytes",
		d:    authz.Decision{Status: 404, Server: authz.Ref{Kind: "server", Name: "web-http"}, Reason: "no route: " + strings.Repeat("x", 200)},
		want: &tapv1.Authorization{HttpStatus: 404, Server: &tapv1.PolicyRef{Kind: "server", Name: "web-http"}, Reason: "no route: " + strings.Repeat("x", 200)},
	}} {
		ri := info()
		ri.Direction, ri.Authz = "inbound", tc.d
		var ev tapv1.TapEvent
		if err := proto.Unmarshal(c.requestInit(nil, t0, ri), &ev); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		req := ev.GetHttp().GetRequestInit()
		if got := req.GetAuthz(); !proto.Equal(got, tc.want) || (tc.want == nil) != (got == nil) {
			t.Errorf("%s: authz decoded as %v, want %v", tc.name, got, tc.want)
		}
		if req.GetPath() != "/books/1" || len(req.GetHeaders()) != 3 || req.GetId().GetStream() != 9 {
			t.Errorf("%s: the rest of the event decoded as %v", tc.name, &ev)
		}
		// Field for field what the generated code writes, nothing unknown.
		enc := c.requestInit(nil, t0, ri)
		if want, err := (proto.MarshalOptions{Deterministic: true}).Marshal(&ev); err != nil || !bytes.Equal(enc, want) {
			t.Errorf("%s: encoded\n%x\nthe generated code writes\n%x (%v)", tc.name, enc, want, err)
		}
		if u := req.GetAuthz().ProtoReflect().GetUnknown(); len(u) > 0 {
			t.Errorf("%s: unknown fields %x", tc.name, u)
		}
	}
}

// TestEncodingRouteMatchesAPI: the outbound route a request matched rides
// on its request init event, only when it matched one.
func TestEncodingRouteMatchesAPI(t *testing.T) {
	c := &common{direction: 2, src: info().Source, dst: info().Destination, base: 7, stream: 9}
	for _, tc := range []struct {
		kind, name string
		want       *tapv1.PolicyRef
	}{
		{},
		{kind: "grpcroute", name: "books-split", want: &tapv1.PolicyRef{Kind: "grpcroute", Name: "books-split"}},
	} {
		ri := info()
		ri.RouteKind, ri.RouteName = tc.kind, tc.name
		ri.Authz = authz.Decision{Allowed: true, Server: authz.Ref{Kind: "server", Name: "web-http"}}
		enc := c.requestInit(nil, t0, ri)
		var ev tapv1.TapEvent
		if err := proto.Unmarshal(enc, &ev); err != nil {
			t.Fatal(err)
		}
		req := ev.GetHttp().GetRequestInit()
		if got := req.GetRoute(); !proto.Equal(got, tc.want) || (tc.want == nil) != (got == nil) {
			t.Errorf("%q: route decoded as %v, want %v", tc.name, got, tc.want)
		}
		if want, err := (proto.MarshalOptions{Deterministic: true}).Marshal(&ev); err != nil || !bytes.Equal(enc, want) {
			t.Errorf("%q: encoded\n%x\nthe generated code writes\n%x (%v)", tc.name, enc, want, err)
		}
		if u := req.ProtoReflect().GetUnknown(); len(u) > 0 {
			t.Errorf("%q: unknown fields %x", tc.name, u)
		}
	}
}

func matchReq(m *tapv1.Match) *tapv1.ObserveRequest { return &tapv1.ObserveRequest{Match: m} }

func httpMatch(h *tapv1.Match_Http) *tapv1.Match {
	return &tapv1.Match{Match: &tapv1.Match_Http_{Http: h}}
}

func TestMatch(t *testing.T) {
	prefix := func(p string) *tapv1.Match {
		return httpMatch(&tapv1.Match_Http{Match: &tapv1.Match_Http_Path{Path: &tapv1.Match_StringMatch{Match: &tapv1.Match_StringMatch_Prefix{Prefix: p}}}})
	}
	method := func(m string) *tapv1.Match {
		return httpMatch(&tapv1.Match_Http{Match: &tapv1.Match_Http_Method{Method: m}})
	}
	tests := []struct {
		name string
		m    *tapv1.Match
		want bool
	}{
		{"empty", nil, true},
		{"path prefix", prefix("/books"), true},
		{"path prefix miss", prefix("/authors"), false},
		{"method case", method("get"), true},
		{"authority exact lower-cased", httpMatch(&tapv1.Match_Http{Match: &tapv1.Match_Http_Authority{Authority: &tapv1.Match_StringMatch{Match: &tapv1.Match_StringMatch_Exact{Exact: "books.demo:7001"}}}}), true},
		{"direction", &tapv1.Match{Match: &tapv1.Match_Direction{Direction: tapv1.Direction_DIRECTION_INBOUND}}, false},
		{"all", &tapv1.Match{Match: &tapv1.Match_All{All: &tapv1.Match_Seq{Matches: []*tapv1.Match{prefix("/b"), method("POST")}}}}, false},
		{"any", &tapv1.Match{Match: &tapv1.Match_Any{Any: &tapv1.Match_Seq{Matches: []*tapv1.Match{prefix("/x"), method("GET")}}}}, true},
		{"not", &tapv1.Match{Match: &tapv1.Match_Not{Not: prefix("/books")}}, false},
		{"dst net", &tapv1.Match{Match: &tapv1.Match_Destination{Destination: &tapv1.Match_Net{Ip: []byte{10, 1, 0, 0}, PrefixLen: 16, Port: 7001}}}, true},
		{"src net miss", &tapv1.Match{Match: &tapv1.Match_Source{Source: &tapv1.Match_Net{Ip: []byte{10, 0, 0, 0}, PrefixLen: 8}}}, false},
		{"dst label", &tapv1.Match{Match: &tapv1.Match_DestinationLabel{DestinationLabel: &tapv1.Match_Label{Key: "deployment", Value: "books"}}}, true},
	}
	for _, tc := range tests {
		b, err := proto.Marshal(matchReq(tc.m))
		if err != nil {
			t.Fatal(err)
		}
		req, err := decodeObserveRequest(b)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if got := req.match(info()); got != tc.want {
			t.Errorf("%s: match = %v, want %v", tc.name, got, tc.want)
		}
	}
	deep := prefix("/")
	for i := 0; i < maxMatchDepth+2; i++ {
		deep = &tapv1.Match{Match: &tapv1.Match_Not{Not: deep}}
	}
	b, _ := proto.Marshal(matchReq(deep))
	if _, err := decodeObserveRequest(b); err == nil {
		t.Errorf("a match nested too deep was accepted")
	}
	if _, err := decodeObserveRequest([]byte{0x12, 0x05, 0x01}); err == nil {
		t.Errorf("garbage was accepted")
	}
}

func TestNoSubscriberIsFree(t *testing.T) {
	s := NewServer(Config{})
	if s.RequestStarted(info()) != nil || s.Active() {
		t.Fatal("Request without subscribers returned an observer")
	}
	ri := info()
	if n := testing.AllocsPerRun(100, func() { s.RequestStarted(ri) }); n != 0 {
		t.Errorf("Request without subscribers allocates %v times", n)
	}
}

func TestSlowSubscriberDrops(t *testing.T) {
	s := NewServer(Config{BufferSize: 2})
	sub := &subscriber{match: matchAll, ch: make(chan *event, 2)}
	s.add(sub)
	for i := 0; i < 5; i++ {
		ro := s.RequestStarted(info()) // must never block
		ro.ResponseStarted(&proxy.Response{Status: 200})
		ro.Ended(proxy.EndInfo{ResponseBytes: 10})
	}
	if s.Dropped() != 13 || len(sub.ch) != 2 {
		t.Errorf("dropped %d, buffered %d; want 13 and 2", s.Dropped(), len(sub.ch))
	}
	if !s.Active() {
		t.Errorf("not active with a subscriber")
	}
	s.remove(sub)
	if s.Subscribers() != 0 || s.Active() {
		t.Errorf("subscriber not removed")
	}
}

// TestSlowSubscriberBufferIsBoundedInBytes: big events fill a subscriber's
// byte budget long before its event count.
func TestSlowSubscriberBufferIsBoundedInBytes(t *testing.T) {
	s := NewServer(Config{BufferSize: 1000, BufferBytes: 8 << 10})
	sub := &subscriber{match: matchAll, ch: make(chan *event, 1000)}
	s.add(sub)
	big := info()
	big.Header = http.Header{"X-Big": {strings.Repeat("x", 1000)}}
	for range 100 {
		s.RequestStarted(big).Ended(proxy.EndInfo{ResponseBytes: 0})
	}
	queued := sub.queued.Load()
	var held int64
	for len(sub.ch) > 0 {
		held += int64(len((<-sub.ch).b))
	}
	if held < 7<<10 || held > 8<<10+2<<10 || held != queued {
		t.Errorf("the subscriber holds %d bytes (counted %d); want the 8 KiB budget, exceeded by at most one event", held, queued)
	}
	if s.Dropped() == 0 {
		t.Error("nothing dropped")
	}
}

func startServer(t *testing.T, s *Server) string {
	t.Helper()
	mux := http.NewServeMux()
	mux.Handle("/conduit.tap.v1.Tap/", s.Handler())
	hs := httptest.NewUnstartedServer(mux)
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetHTTP1(true)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(hs.Close)
	return hs.Listener.Addr().String()
}

func TestObserveWithGRPCClient(t *testing.T) {
	s := NewServer(Config{})
	addr := startServer(t, s)
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	stream, err := tapv1.NewTapClient(cc).Observe(ctx, &tapv1.ObserveRequest{Limit: 3,
		Match: httpMatch(&tapv1.Match_Http{Match: &tapv1.Match_Http_Path{Path: &tapv1.Match_StringMatch{Match: &tapv1.Match_StringMatch_Prefix{Prefix: "/books"}}}})})
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the subscription is registered, then make traffic.
	for s.Subscribers() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("no subscriber")
		case <-time.After(5 * time.Millisecond):
		}
	}
	other := info()
	other.Path = "/authors"
	if s.RequestStarted(other) != nil {
		t.Errorf("a request outside the match was tapped")
	}
	ro := s.RequestStarted(info())
	ro.ResponseStarted(&proxy.Response{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}})
	ro.Ended(proxy.EndInfo{ResponseBytes: 5})
	var kinds []string
	for {
		ev, err := stream.Recv()
		if err != nil {
			if status.Code(err) != codes.OK && err.Error() != "EOF" {
				t.Fatalf("Recv: %v", err)
			}
			break
		}
		switch {
		case ev.GetHttp().GetRequestInit() != nil:
			kinds = append(kinds, "req")
		case ev.GetHttp().GetResponseInit() != nil:
			kinds = append(kinds, "rsp")
		case ev.GetHttp().GetResponseEnd() != nil:
			kinds = append(kinds, "end")
		}
	}
	if len(kinds) != 3 || kinds[0] != "req" || kinds[1] != "rsp" || kinds[2] != "end" {
		t.Errorf("events = %v, want req rsp end", kinds)
	}
}

func TestAuthorize(t *testing.T) {
	s := NewServer(Config{ControllerID: "spiffe://cluster.local/ns/conduit/sa/conduit-controller"})
	cert := func(id string) *x509.Certificate {
		u, _ := url.Parse(id)
		return &x509.Certificate{URIs: []*url.URL{u}}
	}
	tests := []struct {
		name string
		r    *http.Request
		ok   bool
	}{
		{"loopback plaintext", &http.Request{RemoteAddr: "127.0.0.1:4000"}, true},
		{"ipv6 loopback", &http.Request{RemoteAddr: "[::1]:4000"}, true},
		{"remote plaintext", &http.Request{RemoteAddr: "10.0.0.1:4000"}, false},
		{"controller over TLS", &http.Request{RemoteAddr: "10.0.0.1:4000", TLS: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert("spiffe://cluster.local/ns/conduit/sa/conduit-controller")}}}, true},
		{"other identity", &http.Request{RemoteAddr: "127.0.0.1:4000", TLS: &tls.ConnectionState{PeerCertificates: []*x509.Certificate{cert("spiffe://cluster.local/ns/demo/sa/web")}}}, false},
		{"TLS without cert", &http.Request{RemoteAddr: "127.0.0.1:4000", TLS: &tls.ConnectionState{}}, false},
	}
	for _, tc := range tests {
		if err := s.authorize(tc.r); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v", tc.name, err)
		}
	}
}

func TestObserveRejectsRemotePlaintext(t *testing.T) {
	// The Observe handler itself answers PERMISSION_DENIED.
	s := NewServer(Config{})
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, ObservePath, nil)
	req.ProtoMajor, req.RemoteAddr = 2, net.JoinHostPort("192.0.2.1", "1")
	s.Handler().ServeHTTP(rec, req)
	if rec.Header().Get("Grpc-Status") != "7" {
		t.Errorf("grpc-status = %q, want 7", rec.Header().Get("Grpc-Status"))
	}
}

// BenchmarkRequest measures the hot path: without a subscriber, and with one
// that matches every request and never reads (the lossy case).
func BenchmarkRequest(b *testing.B) {
	ri := info()
	b.Run("no-subscriber", func(b *testing.B) {
		s := NewServer(Config{})
		for b.Loop() {
			if ro := s.RequestStarted(ri); ro != nil {
				b.Fatal("tapped")
			}
		}
	})
	b.Run("full-subscriber", func(b *testing.B) {
		s := NewServer(Config{BufferSize: 1})
		s.add(&subscriber{match: matchAll, ch: make(chan *event, 1)})
		for b.Loop() {
			ro := s.RequestStarted(ri)
			ro.ResponseStarted(&proxy.Response{Status: 200, Header: ri.Header})
			ro.Ended(proxy.EndInfo{ResponseBytes: 100})
		}
	})
}

// FuzzObserveRequest: a caller's garbage is an error, never a panic.
func FuzzObserveRequest(f *testing.F) {
	b, _ := proto.Marshal(&tapv1.ObserveRequest{Limit: 3, Match: &tapv1.Match{Match: &tapv1.Match_Not{Not: &tapv1.Match{
		Match: &tapv1.Match_Destination{Destination: &tapv1.Match_Net{Ip: []byte{10, 0, 0, 0}, PrefixLen: 8}}}}}})
	f.Add(b)
	f.Add([]byte{0x12, 0x02, 0x32, 0x00})
	f.Fuzz(func(t *testing.T, in []byte) {
		req, err := decodeObserveRequest(in)
		if err == nil {
			req.match(info())
		}
	})
}
