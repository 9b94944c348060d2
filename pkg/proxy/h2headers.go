package proxy

import (
	"errors"
	"strings"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Headers is a decoded header block (HEADERS and its CONTINUATION
// frames), valid until the reader decodes the next one: its Fields slice
// is reused (callers that keep fields copy them).
type h2Headers struct {
	StreamID  uint32
	Fields    []hpack.HeaderField
	ended     bool
	Truncated bool // past the header list bound: Fields holds a part
}

// StreamEnded reports whether the block ended its stream.
func (h *h2Headers) StreamEnded() bool { return h.ended }

// h2HeaderReader decodes header blocks as x/net's Framer.ReadMetaHeaders
// does — the same validation, bounds and errors (field names and values,
// pseudo-header order and kinds, the header list bound, the CONTINUATION
// flood bound of CVE-2023-45288) — into one reused h2Headers, where the
// Framer allocates a frame and grows a new field slice for every block:
// about 1.5 KB and 20 allocations per proxied gRPC call, a third of the
// proxy's garbage.
type h2HeaderReader struct {
	dec *hpack.Decoder
	max uint32
	h   h2Headers
	// remain and remainTrailer are the Framer's two budgets: Trailer
	// declarations count against their own.
	remain, remainTrailer uint32
	regular               bool
	invalid               error
	// ping and wu are the frames readH2Frame parses itself, reused;
	// framerBlock says the Framer read a frame that left a header block
	// open (readCommonH2Frame).
	ping        http2.PingFrame
	wu          http2.WindowUpdateFrame
	framerBlock bool
}

func newH2HeaderReader(maxList uint32) *h2HeaderReader {
	if maxList == 0 {
		maxList = 16 << 20 // the Framer's default
	}
	r := &h2HeaderReader{max: maxList}
	r.dec = hpack.NewDecoder(4<<10, r.emit)
	r.dec.SetMaxStringLength(int(maxList))
	return r
}

var (
	errPseudoAfterRegular = errors.New("pseudo header field after regular")
	errBadFieldName       = errors.New("invalid header field name")
	errBadFieldValue      = errors.New("invalid header field value")
	errBadPseudo          = errors.New("invalid or duplicate pseudo header fields")
)

func (r *h2HeaderReader) emit(hf hpack.HeaderField) {
	if r.invalid != nil || r.h.Truncated {
		return
	}
	if !httpguts.ValidHeaderFieldValue(hf.Value) {
		r.fail(errBadFieldValue)
		return
	}
	if strings.HasPrefix(hf.Name, ":") {
		if r.regular {
			r.fail(errPseudoAfterRegular)
			return
		}
	} else {
		r.regular = true
		if !validWireName(hf.Name) {
			r.fail(errBadFieldName)
			return
		}
	}
	size, budget := hf.Size(), &r.remain
	if hf.Name == "trailer" {
		// As the Framer counts a Trailer field: per declared name.
		n := uint32(strings.Count(hf.Value, ",") + 1)
		size, budget = uint32(len(hf.Value))-n+1+n*hpack.HeaderField{}.Size(), &r.remainTrailer
	}
	if size > *budget {
		r.h.Truncated = true
		r.remain, r.remainTrailer = 0, 0
		r.dec.SetEmitEnabled(false)
		return
	}
	*budget -= size
	r.h.Fields = append(r.h.Fields, hf)
}

// fail records a bad field; as the Framer does, the rest of the block is
// decoded without emitting (and so without decoding its strings).
func (r *h2HeaderReader) fail(err error) {
	r.invalid = err
	r.dec.SetEmitEnabled(false)
}

func validWireName(v string) bool {
	if v == "" {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if c >= 'A' && c <= 'Z' || !httpguts.IsTokenRune(rune(c)) {
			return false
		}
	}
	return true
}

// read decodes the block that hf starts, reading its CONTINUATION frames
// from fr. Errors are the Framer's: a ConnectionError ends the connection,
// a StreamError (a malformed block, decoded whole) only its stream.
func (r *h2HeaderReader) read(fr *http2.Framer, hf *http2.HeadersFrame, isRequest bool) (*h2Headers, error) {
	return r.readBlock(fr, hf.StreamID, hf.StreamEnded(), hf.HeaderBlockFragment(), hf.HeadersEnded(), isRequest)
}

// readBlock is read for a HEADERS frame given by its fields (readH2Frame
// parses the common ones itself).
func (r *h2HeaderReader) readBlock(fr *http2.Framer, streamID uint32, endStream bool, frag []byte, ended, isRequest bool) (*h2Headers, error) {
	clear(r.h.Fields)
	r.h = h2Headers{StreamID: streamID, Fields: r.h.Fields[:0], ended: endStream}
	r.remain, r.remainTrailer, r.regular, r.invalid = r.max, r.max, false, nil
	r.dec.SetEmitEnabled(true)
	for {
		// A fragment far past what may still be accepted, or any after
		// the bound or a bad field, is refused unread (CONTINUATION
		// flood).
		if int64(len(frag)) > 2*(int64(r.remain)+int64(r.remainTrailer)) || r.invalid != nil {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		if _, err := r.dec.Write(frag); err != nil {
			return nil, http2.ConnectionError(http2.ErrCodeCompression)
		}
		if ended {
			break
		}
		f, err := fr.ReadFrame()
		if err != nil {
			return nil, err
		}
		cf, ok := f.(*http2.ContinuationFrame) // the Framer checks the order
		if !ok {
			return nil, http2.ConnectionError(http2.ErrCodeProtocol)
		}
		frag, ended = cf.HeaderBlockFragment(), cf.HeadersEnded()
	}
	if err := r.dec.Close(); err != nil {
		return nil, http2.ConnectionError(http2.ErrCodeCompression)
	}
	if r.invalid != nil {
		return nil, http2.StreamError{StreamID: streamID, Code: http2.ErrCodeProtocol, Cause: r.invalid}
	}
	if !pseudosOK(r.h.Fields, isRequest) {
		return nil, http2.StreamError{StreamID: streamID, Code: http2.ErrCodeProtocol, Cause: errBadPseudo}
	}
	return &r.h, nil
}

// pseudosOK checks a block's pseudo-header fields (which lead it): known,
// not repeated, and of one kind — a request's, or a response's :status
// (trailers have none).
func pseudosOK(fields []hpack.HeaderField, isRequest bool) bool {
	for i, hf := range fields {
		if !hf.IsPseudo() {
			break
		}
		switch hf.Name {
		case ":method", ":path", ":scheme", ":authority", ":protocol":
			if !isRequest {
				return false
			}
		case ":status":
			if isRequest {
				return false
			}
		default:
			return false
		}
		for _, prev := range fields[:i] {
			if prev.Name == hf.Name {
				return false
			}
		}
	}
	return true
}
