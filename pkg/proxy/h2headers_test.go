package proxy

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// metaOutcome is what a header block read came to, comparable between
// x/net's ReadMetaHeaders and h2HeaderReader.
func metaOutcome(fields []hpack.HeaderField, truncated bool, err error) string {
	var se http2.StreamError
	var ce http2.ConnectionError
	switch {
	case errors.As(err, &se):
		return fmt.Sprintf("stream error %v", se.Code)
	case errors.As(err, &ce):
		return fmt.Sprintf("connection error %v", http2.ErrCode(ce))
	case err != nil:
		return "read error"
	}
	return fmt.Sprintf("fields %q truncated %v", fields, truncated)
}

// readBoth reads the first header block of wire with both decoders.
func readBoth(wire []byte, isRequest bool, maxList uint32) (want, got string) {
	ref := http2.NewFramer(nil, bytes.NewReader(wire))
	ref.ReadMetaHeaders = hpack.NewDecoder(4<<10, nil)
	ref.MaxHeaderListSize = maxList
	f, err := ref.ReadFrame()
	var fields []hpack.HeaderField
	truncated := false
	if mh, ok := f.(*http2.MetaHeadersFrame); ok && err == nil {
		fields, truncated = mh.Fields, mh.Truncated
	} else if err == nil {
		return "", "" // not a header block
	}
	want = metaOutcome(fields, truncated, err)

	// As the proxy's readers read: through readH2Frame, whose own parser
	// takes a whole block in one frame, the Framer the rest.
	br := bufio.NewReaderSize(bytes.NewReader(wire), h2BufSize)
	fr := http2.NewFramer(nil, br)
	r := newH2HeaderReader(maxList)
	_, h, err := readH2Frame(br, fr, r, &h2Flusher{}, isRequest)
	if err != nil {
		return want, metaOutcome(nil, false, err)
	}
	return want, metaOutcome(slices.Clone(h.Fields), h.Truncated, nil)
}

// describeFrames reads up to 32 frames of wire, with x/net's Framer
// (ReadMetaHeaders decoding header blocks) or with the proxy's readH2Frame,
// and describes them, up to the first error.
func describeFrames(wire []byte, proxy bool) []string {
	var out []string
	br := bufio.NewReaderSize(bytes.NewReader(wire), h2BufSize)
	fr := http2.NewFramer(nil, br)
	fr.SetMaxReadFrameSize(h2MaxFrame)
	hr := newH2HeaderReader(16 << 10)
	if !proxy {
		fr.ReadMetaHeaders = hpack.NewDecoder(4<<10, nil)
		fr.MaxHeaderListSize = 16 << 10
	}
	for range 32 {
		var f http2.Frame
		var h *h2Headers
		var err error
		if proxy {
			f, h, err = readH2Frame(br, fr, hr, &h2Flusher{}, true)
		} else {
			f, err = fr.ReadFrame()
			if mh, ok := f.(*http2.MetaHeadersFrame); ok && err == nil {
				h = &h2Headers{StreamID: mh.StreamID, Fields: mh.Fields, ended: mh.StreamEnded(), Truncated: mh.Truncated}
			}
		}
		if err != nil {
			var se http2.StreamError
			out = append(out, metaOutcome(nil, false, err))
			if !errors.As(err, &se) {
				return out
			}
			continue
		}
		if h != nil {
			out = append(out, fmt.Sprintf("HEADERS %d end %v %s", h.StreamID, h.StreamEnded(), metaOutcome(slices.Clone(h.Fields), h.Truncated, nil)))
			continue
		}
		switch f := f.(type) {
		case *http2.PingFrame:
			out = append(out, fmt.Sprintf("PING ack %v %x", f.IsAck(), f.Data))
		case *http2.WindowUpdateFrame:
			out = append(out, fmt.Sprintf("WINDOW_UPDATE %d +%d", f.StreamID, f.Increment))
		default:
			out = append(out, fmt.Sprintf("%v %d %v", f.Header().Type, f.Header().StreamID, f.Header().Flags))
		}
	}
	return out
}

// FuzzReadH2Frame: readH2Frame (which parses PING, WINDOW_UPDATE and
// single-frame header blocks itself) reads any sequence of frames as x/net's
// Framer does.
func FuzzReadH2Frame(f *testing.F) {
	var b bytes.Buffer
	w := http2.NewFramer(&b, nil)
	w.WritePing(false, [8]byte{1, 2, 3})
	w.WriteWindowUpdate(0, 100)
	w.WriteWindowUpdate(3, 5)
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: encodeBlock(hpack.HeaderField{Name: ":method", Value: "GET"},
		hpack.HeaderField{Name: ":path", Value: "/"}, hpack.HeaderField{Name: ":scheme", Value: "http"}), EndHeaders: true, EndStream: true})
	w.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: []byte{0x82}, EndHeaders: true, PadLength: 3,
		Priority: http2.PriorityParam{StreamDep: 1, Weight: 7}})
	w.WriteData(1, true, []byte("x"))
	f.Add(b.Bytes())
	f.Add([]byte{0, 0, 8, 6, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8}) // PING on stream 1
	f.Add([]byte{0, 0, 4, 8, 0, 0, 0, 0, 0, 0, 0, 0, 0})             // WINDOW_UPDATE of 0
	f.Add([]byte{0, 0, 3, 1, 4, 0, 0, 0, 0, 0x82, 0x86, 0x84})       // HEADERS on stream 0
	f.Add([]byte{0, 0, 7, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}) // PING of 7 bytes
	f.Add([]byte{0, 0, 2, 1, 5, 0, 0, 0, 1, 0x82, 0x86, 0, 0, 0, 9}) // HEADERS then CONTINUATION
	f.Fuzz(func(t *testing.T, wire []byte) {
		want, got := describeFrames(wire, false), describeFrames(wire, true)
		if !slices.Equal(want, got) {
			// As in FuzzH2HeaderReader: a response pseudo-header in a
			// request block is the proxy's error, not x/net's.
			for i := range min(len(want), len(got)) {
				if want[i] != got[i] && !(strings.HasSuffix(got[i], "stream error PROTOCOL_ERROR") && strings.Contains(want[i], `\":status\"`)) {
					t.Fatalf("frame %d:\nx/net: %s\nproxy: %s", i, want[i], got[i])
				}
			}
		}
	})
}

// headerWire frames an encoded block as HEADERS plus CONTINUATION frames of
// at most split bytes each.
func headerWire(block []byte, split int) []byte {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	first := block[:min(split, len(block))]
	rest := block[len(first):]
	fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: first, EndHeaders: len(rest) == 0, EndStream: true})
	for len(rest) > 0 {
		n := min(split, len(rest))
		fr.WriteContinuation(1, n == len(rest), rest[:n])
		rest = rest[n:]
	}
	return b.Bytes()
}

func encodeBlock(fields ...hpack.HeaderField) []byte {
	var b bytes.Buffer
	e := hpack.NewEncoder(&b)
	for _, f := range fields {
		e.WriteField(f)
	}
	return b.Bytes()
}

// TestH2HeaderReaderMatchesXNet: the proxy's header block decoder agrees
// with x/net's ReadMetaHeaders on valid, invalid, oversized and split
// blocks (FuzzH2HeaderReader explores the rest).
func TestH2HeaderReaderMatchesXNet(t *testing.T) {
	hf := func(n, v string) hpack.HeaderField { return hpack.HeaderField{Name: n, Value: v} }
	req := []hpack.HeaderField{hf(":method", "GET"), hf(":scheme", "http"), hf(":path", "/x"), hf(":authority", "a"), hf("x-a", "1")}
	big := append(slices.Clone(req), hf("x-big", string(bytes.Repeat([]byte("v"), 3000))))
	cases := map[string]struct {
		block []byte
		split int
		max   uint32
	}{
		"request":             {encodeBlock(req...), 1 << 14, 16 << 10},
		"split in 3 bytes":    {encodeBlock(req...), 3, 16 << 10},
		"over the list bound": {encodeBlock(big...), 1 << 14, 1024},
		"over, split":         {encodeBlock(big...), 100, 1024},
		"pseudo after":        {encodeBlock(hf("x-a", "1"), hf(":path", "/")), 1 << 14, 16 << 10},
		"upper-case name":     {encodeBlock(hf(":method", "GET"), hf("X-A", "1")), 1 << 14, 16 << 10},
		"bad value":           {encodeBlock(hf(":method", "GET"), hf("x-a", "a\x00b")), 1 << 14, 16 << 10},
		"duplicate pseudo":    {encodeBlock(hf(":method", "GET"), hf(":method", "PUT")), 1 << 14, 16 << 10},
		"unknown pseudo":      {encodeBlock(hf(":nope", "GET")), 1 << 14, 16 << 10},
		"mixed pseudo":        {encodeBlock(hf(":method", "GET"), hf(":status", "200")), 1 << 14, 16 << 10},
		"bad hpack":           {[]byte{0xff, 0xff, 0xff, 0xff}, 1 << 14, 16 << 10},
		"trailer declaration": {encodeBlock(hf(":method", "GET"), hf("trailer", "a, b, c")), 1 << 14, 16 << 10},
	}
	for name, c := range cases {
		t.Run(name, func(t *testing.T) {
			want, got := readBoth(headerWire(c.block, c.split), true, c.max)
			if got != want {
				t.Errorf("x/net: %s\nproxy: %s", want, got)
			}
		})
	}
}

// FuzzH2HeaderReader compares the proxy's header block decoder with x/net's
// ReadMetaHeaders on arbitrary blocks, split arbitrarily.
func FuzzH2HeaderReader(f *testing.F) {
	f.Add(encodeBlock(hpack.HeaderField{Name: ":method", Value: "GET"}, hpack.HeaderField{Name: "x", Value: "y"}), uint8(5), uint16(4096))
	f.Add([]byte{0x82, 0x86, 0x84, 0x41, 0x01, 'a'}, uint8(2), uint16(64))
	f.Fuzz(func(t *testing.T, block []byte, split uint8, maxList uint16) {
		if len(block) == 0 || len(block) > 1<<14 {
			return
		}
		want, got := readBoth(headerWire(block, int(split)+1), true, uint32(maxList))
		// x/net checks pseudo-header kinds for requests and responses
		// alike; the proxy also rejects a response pseudo-header in a
		// request block, which x/net leaves to its server.
		if got != want && !(got == "stream error PROTOCOL_ERROR" && strings.Contains(want, `\":status\"`)) {
			t.Errorf("x/net: %s\nproxy: %s", want, got)
		}
	})
}
