package grpcwire

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzReadMessage checks ReadMessage, the reader of gRPC's length-prefixed
// messages that the client and the server half share, against the framing
// rules: it returns exactly the framed message when the input holds an
// uncompressed frame of at most limit bytes, an error otherwise (never a
// panic or an allocation the prefix asks for beyond the bound), however the
// body arrives. A frame made by AppendMessage reads back as its message.
func FuzzReadMessage(f *testing.F) {
	const limit = 64 << 10
	f.Add(AppendMessage(nil, []byte("observe")), false)
	f.Add(AppendMessage(nil, nil), true)
	f.Add([]byte{0, 0, 0, 0}, false)
	f.Add([]byte{1, 0, 0, 0, 1, 'x'}, false)
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff}, false)
	f.Add([]byte{0, 0, 1, 0, 1}, true)
	f.Fuzz(func(t *testing.T, in []byte, oneByte bool) {
		reader := func(b []byte) io.Reader {
			if oneByte {
				return iotest.OneByteReader(bytes.NewReader(b))
			}
			return bytes.NewReader(b)
		}
		msg, err := ReadMessage(reader(in), limit)
		valid := len(in) >= 5 && in[0] == 0
		var n uint64
		if valid {
			n = uint64(binary.BigEndian.Uint32(in[1:5]))
			valid = n <= limit && uint64(len(in)) >= 5+n
		}
		switch {
		case valid && err != nil:
			t.Fatalf("ReadMessage(%q): %v, want the %d-byte message", in, err, n)
		case !valid && err == nil:
			t.Fatalf("ReadMessage(%q) = %q, want an error", in, msg)
		case valid && !bytes.Equal(msg, in[5:5+n]):
			t.Fatalf("ReadMessage(%q) = %q, want %q", in, msg, in[5:5+n])
		}
		if len(in) <= limit {
			got, err := ReadMessage(reader(AppendMessage(nil, in)), limit)
			if err != nil || !bytes.Equal(got, in) {
				t.Fatalf("a frame of %q reads back as %q, %v", in, got, err)
			}
		}
	})
}
