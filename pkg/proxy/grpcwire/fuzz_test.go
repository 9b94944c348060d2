package grpcwire

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/http"
	"testing"
	"testing/iotest"

	"google.golang.org/protobuf/encoding/protowire"
)

// frame is one gRPC length-prefixed message.
func frame(flag byte, msg []byte) []byte {
	b := []byte{flag, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(len(msg)))
	return append(b, msg...)
}

// FuzzStreamRecv feeds an arbitrary response body (read one byte at a time
// or all at once) and grpc-status trailer to a Stream, the reader of every
// message the proxy gets from the controller. It checks that Recv never
// panics or allocates past MaxMessageSize, returns exactly the messages the
// length prefixes frame, in order, ends with io.EOF only on a clean end and
// status 0, and that the end is sticky.
func FuzzStreamRecv(f *testing.F) {
	f.Add(append(frame(0, []byte("hello")), frame(0, nil)...), "0", false)
	f.Add(frame(0, []byte("x")), "", true)
	f.Add(frame(0, []byte("x"))[:4], "0", false)
	f.Add(frame(1, []byte("compressed")), "0", false)
	f.Add([]byte{0, 0xff, 0xff, 0xff, 0xff}, "0", false)
	f.Add(frame(0, []byte("abc"))[:7], "0", true)
	f.Add([]byte{}, "7", false)
	f.Add(frame(0, []byte("a")), "x", false)
	f.Fuzz(func(t *testing.T, body []byte, status string, oneByte bool) {
		var r io.Reader = bytes.NewReader(body)
		if oneByte {
			r = iotest.OneByteReader(r)
		}
		trailer := http.Header{}
		if status != "" {
			trailer.Set("Grpc-Status", status)
		}
		ctx, cancel := context.WithCancel(context.Background())
		s := &Stream{ctx: ctx, cancel: cancel, resp: &http.Response{Body: io.NopCloser(r), Trailer: trailer}}
		rest := body
		for i := 0; ; i++ {
			msg, err := s.Recv()
			if err != nil {
				if again, err2 := s.Recv(); again != nil || err2 != err {
					t.Fatalf("Recv after the end returned %q, %v; want the same end %v", again, err2, err)
				}
				if want := endOf(rest, trailer); CodeOf(err) != CodeOf(want) || (err == io.EOF) != (want == io.EOF) {
					t.Fatalf("with %q left and grpc-status %q Recv ended with %v, want %v", rest, status, err, want)
				}
				var st *Status
				if err != io.EOF && !errors.As(err, &st) {
					t.Fatalf("error %v (%T) is not a *Status", err, err)
				}
				return
			}
			if len(rest) < 5 || rest[0] != 0 {
				t.Fatalf("message %d (%q) returned from %q, which is no uncompressed frame", i, msg, rest)
			}
			n := binary.BigEndian.Uint32(rest[1:5])
			if n > MaxMessageSize || uint32(len(msg)) != n || !bytes.Equal(msg, rest[5:5+n]) {
				t.Fatalf("message %d is %q, want the %d bytes framed in %q", i, msg, n, rest)
			}
			rest = rest[5+n:]
		}
	})
}

// endOf is how a call must end when rest is what is left of the body at a
// message boundary: the trailers' status after a clean end, else the framing
// error at the start of rest (nil: rest holds a whole message).
func endOf(rest []byte, trailer http.Header) error {
	switch {
	case len(rest) == 0:
		if st := statusFrom(trailer); st != nil {
			return st
		}
		if trailer.Get("Grpc-Status") == "" {
			return &Status{Code: Internal}
		}
		return io.EOF
	case len(rest) < 5, rest[0] != 0:
		return &Status{Code: Internal}
	case binary.BigEndian.Uint32(rest[1:5]) > MaxMessageSize:
		return &Status{Code: ResourceExhausted}
	case uint64(len(rest)) < 5+uint64(binary.BigEndian.Uint32(rest[1:5])):
		return &Status{Code: Internal}
	}
	return nil
}

// FuzzRangeFields checks the proxy's protobuf reader against protowire's
// own field parser: the same fields, in the same order, with the same
// values; a message protowire cannot parse is an error, never a panic.
func FuzzRangeFields(f *testing.F) {
	var seed []byte
	seed = protowire.AppendTag(seed, 1, protowire.BytesType)
	seed = protowire.AppendString(seed, "leaf")
	seed = protowire.AppendTag(seed, 2, protowire.VarintType)
	seed = protowire.AppendVarint(seed, 300)
	seed = protowire.AppendTag(seed, 3, protowire.Fixed32Type)
	seed = protowire.AppendFixed32(seed, 7)
	seed = protowire.AppendTag(seed, 4, protowire.Fixed64Type)
	seed = protowire.AppendFixed64(seed, 9)
	f.Add(seed)
	f.Add([]byte{0x0b, 0x0c}) // a group
	f.Add([]byte{0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		rest := b
		err := RangeFields(b, func(got Field) error {
			num, typ, n := protowire.ConsumeField(rest)
			if n < 0 {
				t.Fatalf("RangeFields yielded %+v where protowire finds no field: %v", got, protowire.ParseError(n))
			}
			field := rest[:n]
			rest = rest[n:]
			_, _, tn := protowire.ConsumeTag(field)
			value := field[tn:]
			var want Field
			want.Num, want.Type = num, typ
			switch typ {
			case protowire.VarintType:
				want.Varint, _ = protowire.ConsumeVarint(value)
			case protowire.Fixed32Type:
				v, _ := protowire.ConsumeFixed32(value)
				want.Varint = uint64(v)
			case protowire.Fixed64Type:
				want.Varint, _ = protowire.ConsumeFixed64(value)
			case protowire.BytesType:
				want.Bytes, _ = protowire.ConsumeBytes(value)
			default:
				t.Fatalf("RangeFields yielded a field of wire type %d", typ)
			}
			if got.Num != want.Num || got.Type != want.Type || got.Varint != want.Varint || !bytes.Equal(got.Bytes, want.Bytes) {
				t.Fatalf("RangeFields yielded %+v, protowire reads %+v", got, want)
			}
			return nil
		})
		if err == nil && len(rest) != 0 {
			t.Fatalf("RangeFields accepted %q but left %q unread", b, rest)
		}
		if err != nil && len(rest) > 0 {
			// protowire reads field numbers up to 2^31-1; protobuf-go, and
			// so RangeFields, refuses those over MaxValidNumber.
			if num, typ, n := protowire.ConsumeField(rest); n >= 0 && typ != protowire.StartGroupType && num <= protowire.MaxValidNumber {
				t.Fatalf("RangeFields refused %q (%v), protowire reads field of type %d", rest, err, typ)
			}
		}
	})
}
