// Package grpcwire is gRPC's wire protocol for the proxy, both sides of it,
// without grpc-go: a client for the control-plane calls (Identity.Certify,
// unary; Destination.Get, a server stream), the server half of tap's
// Observe stream, the length-prefixed message framing both use, and
// protobuf field decoding (wire.go).
//
// grpc-go costs about 6 MB of resident memory just by being linked into a
// binary (bench/notes.md), and the proxy must stay under 10 MB; this package
// instead speaks gRPC over net/http's built-in HTTP/2: length-prefixed
// messages in a POST body, the status in the grpc-status/grpc-message
// trailers (or headers, for trailers-only responses). Messages are raw bytes;
// callers encode them (see pkg/proxy/destination, pkg/proxy/identity and
// pkg/proxy/tap).
package grpcwire

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Conn is a lazily connected client for one gRPC server. It multiplexes all
// calls over HTTP/2 connections that net/http's transport manages; it is safe
// for concurrent use.
type Conn struct {
	base      string // scheme://host:port
	transport *http.Transport
	client    *http.Client
}

// Options tune a Conn. The zero value is usable.
type Options struct {
	// TLS, when set, makes the connection HTTP/2 over TLS with this
	// configuration; nil means HTTP/2 without TLS (prior knowledge).
	TLS *tls.Config
	// DialTimeout bounds the TCP connect; 0 means 5 s.
	DialTimeout time.Duration
	// ReadIdleTimeout sends an HTTP/2 PING when nothing was received for
	// this long, to detect a dead connection; 0 means 5m10s, just above
	// grpc-go's default server keepalive enforcement (5 min), which would
	// otherwise answer frequent pings with GOAWAY.
	ReadIdleTimeout time.Duration
}

// New returns a client for the gRPC server at addr (host:port). No
// connection is made until the first call.
func New(addr string, opts Options) (*Conn, error) {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return nil, fmt.Errorf("controller address %q: want host:port: %w", addr, err)
	}
	dialTimeout := opts.DialTimeout
	if dialTimeout <= 0 {
		dialTimeout = 5 * time.Second
	}
	readIdle := opts.ReadIdleTimeout
	if readIdle <= 0 {
		readIdle = 5*time.Minute + 10*time.Second
	}
	var protos http.Protocols
	scheme := "http"
	t := &http.Transport{
		DialContext:         (&net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConnsPerHost: 1,
		IdleConnTimeout:     10 * time.Minute,
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: readIdle,
			PingTimeout:     15 * time.Second,
		},
	}
	if opts.TLS != nil {
		scheme = "https"
		tc := opts.TLS.Clone()
		tc.NextProtos = []string{"h2"}
		t.TLSClientConfig = tc
		t.TLSHandshakeTimeout = dialTimeout
		protos.SetHTTP2(true)
	} else {
		protos.SetUnencryptedHTTP2(true)
	}
	t.Protocols = &protos
	return &Conn{
		base:      scheme + "://" + addr,
		transport: t,
		client:    &http.Client{Transport: t},
	}, nil
}

// Close releases idle connections. Calls in flight are not interrupted:
// cancel their contexts.
func (c *Conn) Close() { c.transport.CloseIdleConnections() }

// Unary calls method ("/package.Service/Method") with one request message
// and returns the single response message.
func (c *Conn) Unary(ctx context.Context, method string, req []byte) ([]byte, error) {
	s, err := c.Stream(ctx, method, req)
	if err != nil {
		return nil, err
	}
	defer s.Close()
	msg, err := s.Recv()
	if err == io.EOF {
		return nil, &Status{Code: Internal, Message: "server sent no response message"}
	}
	if err != nil {
		return nil, err
	}
	if _, err := s.Recv(); err != io.EOF {
		if err == nil {
			return nil, &Status{Code: Internal, Message: "server sent more than one response message to a unary call"}
		}
		return nil, err
	}
	return msg, nil
}

// Stream calls a server-streaming method with one request message. The
// returned Stream yields response messages until the call ends; cancel ctx
// or call Close to end it early.
func (c *Conn) Stream(ctx context.Context, method string, req []byte) (*Stream, error) {
	body := AppendMessage(make([]byte, 0, 5+len(req)), req)
	ctx, cancel := context.WithCancel(ctx)
	hreq, err := http.NewRequestWithContext(ctx, http.MethodPost, c.base+method, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, fmt.Errorf("building request for %s: %w", method, err)
	}
	hreq.Header.Set("Content-Type", "application/grpc+proto")
	hreq.Header.Set("Te", "trailers")
	hreq.Header.Set("User-Agent", "conduit-proxy grpcwire")
	if dl, ok := ctx.Deadline(); ok {
		hreq.Header.Set("Grpc-Timeout", encodeTimeout(time.Until(dl)))
	}
	resp, err := c.client.Do(hreq)
	if err != nil {
		ctxErr := ctx.Err()
		cancel()
		if ctxErr != nil {
			return nil, contextStatus(ctxErr)
		}
		return nil, &Status{Code: Unavailable, Message: err.Error()}
	}
	s := &Stream{resp: resp, cancel: cancel, ctx: ctx}
	if err := s.checkHeaders(); err != nil {
		s.Close()
		return nil, err
	}
	return s, nil
}

// Stream is one call's response side.
type Stream struct {
	ctx    context.Context
	resp   *http.Response
	cancel context.CancelFunc
	done   error // sticky result once the call ended
}

// checkHeaders validates the response headers; a trailers-only response
// (the status in the headers) ends the call at once.
func (s *Stream) checkHeaders() error {
	r := s.resp
	if r.StatusCode != http.StatusOK {
		return &Status{Code: httpStatusCode(r.StatusCode), Message: "unexpected HTTP status " + r.Status}
	}
	ct := r.Header.Get("Content-Type")
	if ct != "application/grpc" && !strings.HasPrefix(ct, "application/grpc+") && !strings.HasPrefix(ct, "application/grpc;") {
		return &Status{Code: Unknown, Message: fmt.Sprintf("unexpected content-type %q", ct)}
	}
	if r.Header.Get("Grpc-Status") != "" {
		// Trailers-only response.
		s.done = statusFrom(r.Header)
		if s.done == nil {
			s.done = io.EOF
		}
	}
	if enc := r.Header.Get("Grpc-Encoding"); enc != "" && enc != "identity" {
		return &Status{Code: Internal, Message: fmt.Sprintf("unsupported grpc-encoding %q", enc)}
	}
	return nil
}

// Recv returns the next response message, io.EOF when the call ended with
// status OK, or a *Status error.
func (s *Stream) Recv() ([]byte, error) {
	if s.done != nil {
		return nil, s.done
	}
	msg, err := s.recv()
	if err != nil {
		s.done = err
		s.Close()
	}
	return msg, err
}

func (s *Stream) recv() ([]byte, error) {
	msg, err := ReadMessage(s.resp.Body, MaxMessageSize)
	switch {
	case err == io.EOF:
		// The body ended between messages: the trailers carry the status.
		if st := statusFrom(s.resp.Trailer); st != nil {
			return nil, st
		}
		if s.resp.Trailer.Get("Grpc-Status") == "" {
			return nil, &Status{Code: Internal, Message: "server closed the stream without a grpc-status"}
		}
		return nil, io.EOF
	case err != nil:
		var st *Status
		if errors.As(err, &st) {
			return nil, st
		}
		return nil, s.readError(err)
	}
	return msg, nil
}

func (s *Stream) readError(err error) error {
	if ctxErr := s.ctx.Err(); ctxErr != nil {
		return contextStatus(ctxErr)
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &Status{Code: Internal, Message: "stream ended in the middle of a message"}
	}
	return &Status{Code: Unavailable, Message: err.Error()}
}

// Close ends the call (resetting the HTTP/2 stream if it is still open).
func (s *Stream) Close() {
	s.cancel()
	s.resp.Body.Close()
}

// encodeTimeout formats d as a grpc-timeout value (at most 8 digits).
func encodeTimeout(d time.Duration) string {
	if d <= 0 {
		return "1n"
	}
	const max = 99999999
	units := []struct {
		unit string
		d    time.Duration
	}{{"n", time.Nanosecond}, {"u", time.Microsecond}, {"m", time.Millisecond}, {"S", time.Second}, {"M", time.Minute}, {"H", time.Hour}}
	for _, u := range units {
		if v := d / u.d; v <= max {
			if d%u.d != 0 {
				v++
			}
			return strconv.FormatInt(int64(v), 10) + u.unit
		}
	}
	return strconv.Itoa(max) + "H"
}
