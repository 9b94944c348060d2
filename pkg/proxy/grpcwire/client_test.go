package grpcwire

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// startHealth serves grpc-go's health service (a unary Check and a
// server-streaming Watch) on a loopback port.
func startHealth(t *testing.T, opts ...grpc.ServerOption) (string, *health.Server) {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(opts...)
	hs := health.NewServer()
	healthpb.RegisterHealthServer(srv, hs)
	go srv.Serve(lis)
	t.Cleanup(srv.Stop)
	return lis.Addr().String(), hs
}

func marshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestUnaryAgainstGRPCGo(t *testing.T) {
	addr, hs := startHealth(t)
	hs.SetServingStatus("books", healthpb.HealthCheckResponse_SERVING)
	c, err := New(addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	resp, err := c.Unary(ctx, "/grpc.health.v1.Health/Check", marshal(t, &healthpb.HealthCheckRequest{Service: "books"}))
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	var got healthpb.HealthCheckResponse
	if err := proto.Unmarshal(resp, &got); err != nil {
		t.Fatal(err)
	}
	if got.Status != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("status = %v, want SERVING", got.Status)
	}

	// An error status with a message that needs percent-decoding.
	_, err = c.Unary(ctx, "/grpc.health.v1.Health/Check", marshal(t, &healthpb.HealthCheckRequest{Service: "no such service"}))
	if CodeOf(err) != NotFound {
		t.Errorf("unknown service: err = %v, want NotFound", err)
	}
	if _, err = c.Unary(ctx, "/grpc.health.v1.Health/Nope", nil); CodeOf(err) != Unimplemented {
		t.Errorf("unknown method: err = %v, want Unimplemented", err)
	}
}

func TestServerStreamAgainstGRPCGo(t *testing.T) {
	addr, hs := startHealth(t)
	hs.SetServingStatus("books", healthpb.HealthCheckResponse_SERVING)
	c, err := New(addr, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	s, err := c.Stream(ctx, "/grpc.health.v1.Health/Watch", marshal(t, &healthpb.HealthCheckRequest{Service: "books"}))
	if err != nil {
		t.Fatal(err)
	}
	next := func() healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		msg, err := s.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		var r healthpb.HealthCheckResponse
		if err := proto.Unmarshal(msg, &r); err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	if got := next(); got != healthpb.HealthCheckResponse_SERVING {
		t.Fatalf("first = %v", got)
	}
	hs.SetServingStatus("books", healthpb.HealthCheckResponse_NOT_SERVING)
	if got := next(); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("second = %v", got)
	}
	// Shutdown ends every Watch with OK... grpc-go's health server sends a
	// final NOT_SERVING; then closing the stream on our side must not hang.
	s.Close()
	if _, err := s.Recv(); err == nil {
		t.Fatal("Recv after Close succeeded")
	}
}

// statusServer ends every call with a fixed status after sending n messages.
type statusServer struct {
	healthpb.UnimplementedHealthServer
	sent int
	err  error
}

func (s statusServer) Watch(_ *healthpb.HealthCheckRequest, stream healthpb.Health_WatchServer) error {
	for range s.sent {
		if err := stream.Send(&healthpb.HealthCheckResponse{Status: healthpb.HealthCheckResponse_SERVING}); err != nil {
			return err
		}
	}
	return s.err
}

func TestStreamEndings(t *testing.T) {
	tests := []struct {
		name     string
		srv      statusServer
		wantMsgs int
		wantCode Code
	}{
		{"ok after messages", statusServer{sent: 2}, 2, OK},
		{"trailers only error", statusServer{err: status.Error(codes.PermissionDenied, "no: 100% sure")}, 0, PermissionDenied},
		{"error after a message", statusServer{sent: 1, err: status.Error(codes.Unavailable, "bye")}, 1, Unavailable},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			lis, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			srv := grpc.NewServer()
			healthpb.RegisterHealthServer(srv, tt.srv)
			go srv.Serve(lis)
			defer srv.Stop()
			c, _ := New(lis.Addr().String(), Options{})
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			s, err := c.Stream(ctx, "/grpc.health.v1.Health/Watch", nil)
			if err == nil {
				for n := 0; ; n++ {
					_, err = s.Recv()
					if err != nil {
						if n != tt.wantMsgs {
							t.Errorf("got %d messages, want %d", n, tt.wantMsgs)
						}
						break
					}
				}
			}
			if tt.wantCode == OK {
				if err != io.EOF {
					t.Fatalf("end = %v, want io.EOF", err)
				}
				return
			}
			if CodeOf(err) != tt.wantCode {
				t.Fatalf("end = %v, want code %d", err, tt.wantCode)
			}
			if tt.name == "trailers only error" && err.(*Status).Message != "no: 100% sure" {
				t.Errorf("message = %q", err.(*Status).Message)
			}
		})
	}
}

func TestUnreachable(t *testing.T) {
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := lis.Addr().String()
	lis.Close()
	c, _ := New(addr, Options{})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Unary(ctx, "/grpc.health.v1.Health/Check", nil); CodeOf(err) != Unavailable {
		t.Fatalf("err = %v, want Unavailable", err)
	}
	if _, err := New("no-port", Options{}); err == nil {
		t.Fatal("New accepted an address without a port")
	}
}

func TestTLSAgainstGRPCGo(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "test"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	addr, hs := startHealth(t, grpc.Creds(credentials.NewServerTLSFromCert(&tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key})))
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	c, _ := New(addr, Options{TLS: &tls.Config{RootCAs: pool, ServerName: "127.0.0.1"}})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Unary(ctx, "/grpc.health.v1.Health/Check", nil); err != nil {
		t.Fatalf("Check over TLS: %v", err)
	}
}

func TestEncodeTimeout(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "1n"},
		{1500 * time.Nanosecond, "1500n"},
		{5 * time.Second, "5000000u"},
		{200 * time.Second, "200000m"},
		{48 * time.Hour, "172800S"},
	}
	for _, tt := range tests {
		if got := encodeTimeout(tt.d); got != tt.want {
			t.Errorf("encodeTimeout(%v) = %q, want %q", tt.d, got, tt.want)
		}
	}
}
