package grpcwire

import (
	"encoding/binary"
	"fmt"
	"io"
)

// MaxMessageSize bounds one received message; a larger length prefix from a
// peer is an error, never an allocation.
const MaxMessageSize = 4 << 20

// AppendMessage appends msg to b as one uncompressed gRPC message: a zero
// flag byte, the big-endian length, the bytes.
func AppendMessage(b, msg []byte) []byte {
	b = append(b, 0, 0, 0, 0, 0)
	binary.BigEndian.PutUint32(b[len(b)-4:], uint32(len(msg)))
	return append(b, msg...)
}

// ReadMessage reads one length-prefixed message from r. It returns io.EOF
// when r ends cleanly before a message, io.ErrUnexpectedEOF when it ends
// inside one, a *Status for a message this package refuses (compressed, or
// longer than limit) and r's error otherwise. The length is checked before
// anything is allocated.
func ReadMessage(r io.Reader, limit uint32) ([]byte, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return nil, err
	}
	if hdr[0] != 0 {
		return nil, &Status{Code: Internal, Message: "compressed message received but no compression was negotiated"}
	}
	n := binary.BigEndian.Uint32(hdr[1:])
	if n > limit {
		return nil, &Status{Code: ResourceExhausted, Message: fmt.Sprintf("received message of %d bytes, larger than the limit of %d", n, limit)}
	}
	msg := make([]byte, n)
	if _, err := io.ReadFull(r, msg); err != nil {
		if err == io.EOF { // a header without its message
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return msg, nil
}
