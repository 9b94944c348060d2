package grpcwire

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// The server half: a handler on net/http's HTTP/2 server (h2c or TLS)
// answering one call. The proxy serves one method this way (tap's
// Observe); the order of calls is ReadRequest, then either
// WriteTrailersOnly, or StartResponse, messages written with
// AppendMessage, and Finish.

// CheckRequest reports whether r can be a gRPC call at all: a POST over
// HTTP/2. Anything else should be answered with plain HTTP (415), since the
// client does not speak gRPC.
func CheckRequest(r *http.Request) error {
	if r.Method != http.MethodPost || r.ProtoMajor != 2 {
		return fmt.Errorf("%s is a gRPC service: POST over HTTP/2", r.URL.Path)
	}
	return nil
}

// ReadRequest reads the call's single request message (at most limit
// bytes). Its error is a *Status to answer with.
func ReadRequest(r *http.Request, limit uint32) ([]byte, error) {
	msg, err := ReadMessage(r.Body, limit)
	if err == nil {
		return msg, nil
	}
	if st, ok := err.(*Status); ok {
		if st.Code == ResourceExhausted {
			return nil, &Status{Code: InvalidArgument, Message: fmt.Sprintf("request larger than %d bytes", limit)}
		}
		return nil, &Status{Code: InvalidArgument, Message: st.Message}
	}
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return nil, &Status{Code: InvalidArgument, Message: "reading request: " + err.Error()}
}

// WriteTrailersOnly ends a call without a message: the status goes in the
// response headers, as gRPC's trailers-only response.
func WriteTrailersOnly(w http.ResponseWriter, code Code, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	setStatus(h, code, msg)
	w.WriteHeader(http.StatusOK)
}

// StartResponse sends the response headers of a call that will send
// messages, announcing the status trailers, and flushes them.
func StartResponse(w http.ResponseWriter) error {
	h := w.Header()
	h.Set("Content-Type", "application/grpc")
	h.Set("Trailer", "Grpc-Status, Grpc-Message")
	w.WriteHeader(http.StatusOK)
	return http.NewResponseController(w).Flush()
}

// Finish sets the call's status trailers (sent when the handler returns).
func Finish(w http.ResponseWriter, code Code, msg string) {
	setStatus(w.Header(), code, msg)
}

func setStatus(h http.Header, code Code, msg string) {
	h.Set("Grpc-Status", strconv.FormatUint(uint64(code), 10))
	if msg != "" {
		h.Set("Grpc-Message", encodeMessage(msg))
	}
}

// encodeMessage percent-encodes a status message as the gRPC HTTP/2
// protocol requires: bytes outside printable ASCII, and '%'.
func encodeMessage(msg string) string {
	const hex = "0123456789ABCDEF"
	var b strings.Builder
	for i := 0; i < len(msg); i++ {
		c := msg[i]
		if c >= 0x20 && c <= 0x7e && c != '%' {
			b.WriteByte(c)
			continue
		}
		b.WriteByte('%')
		b.WriteByte(hex[c>>4])
		b.WriteByte(hex[c&0xf])
	}
	return b.String()
}
