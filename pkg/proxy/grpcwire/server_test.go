package grpcwire

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// serveHalf serves handler on h2c, as the proxy's admin port serves tap.
func serveHalf(t *testing.T, handler http.HandlerFunc) *grpc.ClientConn {
	t.Helper()
	hs := httptest.NewUnstartedServer(handler)
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(hs.Close)
	cc, err := grpc.NewClient(hs.Listener.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestServerHalfAgainstGRPCGo: grpc-go's client reads the messages and the
// status (code and a message needing percent-encoding) the server half
// writes, in both endings: after messages, and trailers-only.
func TestServerHalfAgainstGRPCGo(t *testing.T) {
	const why = "no such service: ünï 100% sure"
	cc := serveHalf(t, func(w http.ResponseWriter, r *http.Request) {
		if err := CheckRequest(r); err != nil {
			t.Errorf("CheckRequest refused grpc-go's call: %v", err)
			return
		}
		msg, err := ReadRequest(r, 1<<10)
		if err != nil {
			WriteTrailersOnly(w, err.(*Status).Code, err.(*Status).Message)
			return
		}
		var req healthpb.HealthCheckRequest
		if err := proto.Unmarshal(msg, &req); err != nil {
			WriteTrailersOnly(w, InvalidArgument, err.Error())
			return
		}
		if req.Service == "refused" {
			WriteTrailersOnly(w, PermissionDenied, why)
			return
		}
		if err := StartResponse(w); err != nil {
			t.Error(err)
			return
		}
		var out []byte
		for _, st := range []healthpb.HealthCheckResponse_ServingStatus{healthpb.HealthCheckResponse_SERVING, healthpb.HealthCheckResponse_NOT_SERVING} {
			b, _ := proto.Marshal(&healthpb.HealthCheckResponse{Status: st})
			out = AppendMessage(out, b)
		}
		w.Write(out)
		Finish(w, NotFound, why)
	})
	client := healthpb.NewHealthClient(cc)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "web"})
	if err != nil {
		t.Fatal(err)
	}
	var got []healthpb.HealthCheckResponse_ServingStatus
	for {
		m, err := stream.Recv()
		if err != nil {
			if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != why {
				t.Fatalf("stream ended with %v, want NotFound %q", err, why)
			}
			break
		}
		got = append(got, m.Status)
	}
	if len(got) != 2 || got[0] != healthpb.HealthCheckResponse_SERVING || got[1] != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("messages = %v, want SERVING, NOT_SERVING", got)
	}

	stream, err = client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "refused"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != why {
		t.Fatalf("trailers-only answer read as %v, want PermissionDenied %q", err, why)
	}
}

// TestReadRequestRefusesOversize: a prefix beyond the limit is refused
// before the body is read, with InvalidArgument.
func TestReadRequestRefusesOversize(t *testing.T) {
	body := AppendMessage(nil, make([]byte, 100))
	r := httptest.NewRequest(http.MethodPost, "/x", bytes.NewReader(body))
	if _, err := ReadRequest(r, 99); CodeOf(err) != InvalidArgument {
		t.Fatalf("ReadRequest of 100 bytes with limit 99: %v, want InvalidArgument", err)
	}
	r = httptest.NewRequest(http.MethodPost, "/x", bytes.NewReader(body[:50]))
	if _, err := ReadRequest(r, 1000); CodeOf(err) != InvalidArgument {
		t.Fatalf("ReadRequest of a cut message: %v, want InvalidArgument", err)
	}
	r = httptest.NewRequest(http.MethodGet, "/x", nil)
	if CheckRequest(r) == nil {
		t.Fatal("CheckRequest accepted a GET over HTTP/1.1")
	}
}
