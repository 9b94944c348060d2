package tap

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"
	"testing/iotest"
)

// FuzzReadMessage checks the tap server's reader of the gRPC
// length-prefixed request against the framing rules: it returns exactly the
// framed message when the input holds an uncompressed frame of at most
// maxRequestSize bytes, an error otherwise (never a panic or an allocation
// the prefix asks for beyond the bound), however the body arrives. A frame
// made by appendFrame (the server's writer) reads back as its message.
func FuzzReadMessage(f *testing.F) {
	f.Add(appendFrame(nil, []byte("observe")), false)
	f.Add(appendFrame(nil, nil), true)
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
		msg, err := readMessage(reader(in))
		valid := len(in) >= 5 && in[0] == 0
		var n uint64
		if valid {
			n = uint64(binary.BigEndian.Uint32(in[1:5]))
			valid = n <= maxRequestSize && uint64(len(in)) >= 5+n
		}
		switch {
		case valid && err != nil:
			t.Fatalf("readMessage(%q): %v, want the %d-byte message", in, err, n)
		case !valid && err == nil:
			t.Fatalf("readMessage(%q) = %q, want an error", in, msg)
		case valid && !bytes.Equal(msg, in[5:5+n]):
			t.Fatalf("readMessage(%q) = %q, want %q", in, msg, in[5:5+n])
		}
		if len(in) <= maxRequestSize {
			got, err := readMessage(reader(appendFrame(nil, in)))
			if err != nil || !bytes.Equal(got, in) {
				t.Fatalf("a frame of %q reads back as %q, %v", in, got, err)
			}
		}
	})
}
