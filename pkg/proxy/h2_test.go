package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

func TestH2C(t *testing.T) {
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Proto", r.Proto)
		w.Header().Set("Trailer", "X-Done")
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
		w.Header().Set("X-Done", "yes")
	}))
	p := startProxy(t, Config{InboundTarget: app})
	c := newH2CClient(t)
	for i := range 3 {
		resp, err := c.Post("http://"+p.InboundAddr()+"/x", "text/plain", strings.NewReader("h2 body"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.Header.Get("X-Proto") != "HTTP/2.0" || string(b) != "h2 body" || resp.Trailer.Get("X-Done") != "yes" {
			t.Errorf("request %d: proto %s, app saw %s, body %q, trailer %v", i, resp.Proto, resp.Header.Get("X-Proto"), b, resp.Trailer)
		}
	}
	wantMetric(t, p, 3, "response_total", `direction="inbound"`, `status_code="200"`)
	wantMetric(t, p, 1, "tcp_open_total", `direction="inbound"`, `peer="src"`)
}

// grpcService implements the interop TestService for the proxy tests.
type grpcService struct {
	testpb.UnimplementedTestServiceServer
	mu       sync.Mutex
	canceled int // calls that saw their context end early
}

func (s *grpcService) UnaryCall(ctx context.Context, req *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if md, _ := metadata.FromIncomingContext(ctx); len(md.Get("sleep")) > 0 {
		<-ctx.Done()
		s.mu.Lock()
		s.canceled++
		s.mu.Unlock()
		return nil, ctx.Err()
	}
	if req.GetResponseStatus() != nil {
		return nil, status.Error(codes.Code(req.GetResponseStatus().GetCode()), req.GetResponseStatus().GetMessage())
	}
	return &testpb.SimpleResponse{Payload: req.GetPayload()}, nil
}

func (s *grpcService) FullDuplexCall(stream testpb.TestService_FullDuplexCallServer) error {
	for {
		req, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			if status.Code(err) == codes.Canceled {
				s.mu.Lock()
				s.canceled++
				s.mu.Unlock()
			}
			return err
		}
		if string(req.GetPayload().GetBody()) == "fail" {
			return status.Error(codes.Aborted, "server gave up mid-stream")
		}
		if err := stream.Send(&testpb.StreamingOutputCallResponse{Payload: req.GetPayload()}); err != nil {
			return err
		}
	}
}

func startGRPCBackend(t testing.TB) (string, *grpcService) {
	t.Helper()
	svc := &grpcService{}
	srv := grpc.NewServer()
	testpb.RegisterTestServiceServer(srv, svc)
	return serveGRPC(t, srv), svc
}

// serveGRPC serves srv on a loopback listener until the test ends.
func serveGRPC(t testing.TB, srv *grpc.Server) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return ln.Addr().String()
}

func dialGRPC(t testing.TB, addr string, opts ...grpc.DialOption) testpb.TestServiceClient {
	t.Helper()
	cc, err := grpc.NewClient(addr, append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return testpb.NewTestServiceClient(cc)
}

func TestGRPC(t *testing.T) {
	app, svc := startGRPCBackend(t)
	p := startProxy(t, Config{InboundTarget: app})
	client := dialGRPC(t, p.InboundAddr())
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	t.Run("unary", func(t *testing.T) {
		body := strings.Repeat("z", 3<<20) // beyond every flow-control window
		resp, err := client.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte(body)}})
		if err != nil {
			t.Fatal(err)
		}
		if string(resp.GetPayload().GetBody()) != body {
			t.Errorf("payload of %d bytes came back as %d", len(body), len(resp.GetPayload().GetBody()))
		}
	})

	t.Run("status in trailers", func(t *testing.T) {
		_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.NotFound), Message: "no such thing"}})
		if status.Code(err) != codes.NotFound || status.Convert(err).Message() != "no such thing" {
			t.Errorf("err = %v, want NotFound", err)
		}
	})

	t.Run("bidi streaming", func(t *testing.T) {
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Each reply arrives before the next message is sent: nothing is
		// buffered until the end of the stream.
		for i := range 5 {
			msg := strings.Repeat("m", i+1)
			if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte(msg)}}); err != nil {
				t.Fatal(err)
			}
			resp, err := stream.Recv()
			if err != nil || string(resp.GetPayload().GetBody()) != msg {
				t.Fatalf("reply %d: %v %v", i, resp, err)
			}
		}
		stream.CloseSend()
		if _, err := stream.Recv(); !errors.Is(err, io.EOF) {
			t.Errorf("end of stream: %v", err)
		}
	})

	t.Run("server ends the stream with an error", func(t *testing.T) {
		stream, err := client.FullDuplexCall(ctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("ok")}})
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("fail")}})
		_, err = stream.Recv()
		if status.Code(err) != codes.Aborted || status.Convert(err).Message() != "server gave up mid-stream" {
			t.Errorf("err = %v, want Aborted from the server's trailers", err)
		}
	})

	t.Run("deadline propagates", func(t *testing.T) {
		dctx, dcancel := context.WithTimeout(metadata.AppendToOutgoingContext(ctx, "sleep", "1"), 300*time.Millisecond)
		defer dcancel()
		_, err := client.UnaryCall(dctx, &testpb.SimpleRequest{})
		if status.Code(err) != codes.DeadlineExceeded {
			t.Errorf("err = %v, want DeadlineExceeded", err)
		}
	})

	t.Run("cancellation propagates", func(t *testing.T) {
		cctx, ccancel := context.WithCancel(ctx)
		stream, err := client.FullDuplexCall(cctx)
		if err != nil {
			t.Fatal(err)
		}
		stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("a")}})
		if _, err := stream.Recv(); err != nil {
			t.Fatal(err)
		}
		ccancel()
	})

	waitFor(t, "the server to see the deadline and the cancel", func() bool {
		svc.mu.Lock()
		defer svc.mu.Unlock()
		return svc.canceled == 2
	})
	wantMetric(t, p, 1, "response_total", `direction="inbound"`, `grpc_status="5"`, `classification="failure"`)
	wantMetric(t, p, 2, "response_total", `direction="inbound"`, `grpc_status="0"`, `classification="success"`)
	wantMetric(t, p, 1, "response_total", `direction="inbound"`, `grpc_status="10"`, `classification="failure"`)
	wantMetric(t, p, 6, "request_total", `direction="inbound"`)
	wantMetric(t, p, 6, "response_total", `direction="inbound"`)
}

// TestGRPCProxyErrors: errors the proxy makes for gRPC clients are gRPC
// statuses, with the reason in conduit-proxy-error.
func TestGRPCProxyErrors(t *testing.T) {
	p := startProxy(t, Config{Resolver: &fakeResolver{eps: map[string][]resolve.Endpoint{"empty:80": {}}}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	tests := []struct {
		authority string
		code      codes.Code
		reason    string
	}{
		{"unknown:80", codes.Unavailable, "no route for authority"},
		{"empty:80", codes.Unavailable, "no endpoints available"},
	}
	for _, tt := range tests {
		// A trailers-only response: grpc-go reports its headers as trailers.
		var hdr metadata.MD
		_, err := dialGRPC(t, p.OutboundAddr(), grpc.WithAuthority(tt.authority)).UnaryCall(ctx, &testpb.SimpleRequest{}, grpc.Trailer(&hdr))
		if status.Code(err) != tt.code || !strings.Contains(status.Convert(err).Message(), tt.reason) {
			t.Errorf("%s: %v, want %v %q", tt.authority, err, tt.code, tt.reason)
		}
		if got := hdr.Get(ErrorHeader); len(got) != 1 || got[0] != tt.reason {
			t.Errorf("%s: %s = %q", tt.authority, ErrorHeader, got)
		}
	}
	wantMetric(t, p, 2, "response_total", `direction="outbound"`, `grpc_status="14"`, `classification="failure"`)
}
