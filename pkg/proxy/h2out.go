package proxy

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"net"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The HTTP/2 fast path (h2fast.go, h2up.go) relays streams frame by frame
// between a client's connection and pooled upstream connections. Each
// connection has one reader goroutine; frames are written by whichever
// reader produced them, under the written connection's h2Out lock, and
// flushed once the writing reader has no more input buffered, so that the
// frames one read produced (a response's HEADERS, DATA and trailers) leave
// in one write. A pooled upstream connection is written by many client
// readers, often woken by one network poll: a reader that wrote to one
// yields once before it flushes (h2Flusher.flush), so that the readers
// runnable with it add their requests first and they leave together, in
// one write, as an event loop would send them.

const (
	// h2StreamWindow and h2ConnWindow are the receive windows the proxy
	// advertises on both sides. Credit is returned as the data is passed
	// on, so they bound what a stream and a connection can make the proxy
	// hold.
	h2StreamWindow = 256 << 10
	h2ConnWindow   = 1 << 20
	// h2MaxStreams is the concurrent streams a client connection may open
	// (advertised in SETTINGS); also the default assumed of an upstream
	// before its SETTINGS arrive.
	h2MaxStreams = 100
	// h2MaxFrame is the largest frame the proxy reads (its Framers' bound,
	// SETTINGS_MAX_FRAME_SIZE's default).
	h2MaxFrame = 16 << 10
	h2BufSize  = 4 << 10
)

// h2Out is the writing half of an HTTP/2 connection: the framer, the HPACK
// encoder and the connection's send window, under one lock.
type h2Out struct {
	mu   sync.Mutex
	conn net.Conn
	bw   *bufio.Writer
	fr   *http2.Framer
	enc  *hpack.Encoder
	hbuf bytes.Buffer
	// The peer's settings that shape what is written.
	maxFrame uint32
	initWin  int32 // SETTINGS_INITIAL_WINDOW_SIZE of new streams
	win      int32 // connection-level send window
	// recv is the connection-level window the peer may still send into:
	// what the proxy advertised (windowLocked) less what it received
	// (take).
	recv  atomic.Int64
	dirty bool
	// shared marks a pooled upstream connection, written by many client
	// readers (set before the connection is pooled, then only read).
	shared bool
	err    error // sticky: the first failed write
	// stall bounds each flush (the body idle timeout).
	stall time.Duration
	armed time.Time
}

var h2Writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, h2BufSize) }}

func newH2Out(c net.Conn, stall time.Duration) *h2Out {
	o := &h2Out{conn: c, maxFrame: 16 << 10, initWin: 65535, win: 65535, stall: stall}
	o.recv.Store(65535) // RFC 9113 §6.9.2: every connection starts with it
	o.bw = h2Writers.Get().(*bufio.Writer)
	o.bw.Reset(c)
	o.fr = http2.NewFramer(o.bw, nil)
	o.enc = hpack.NewEncoder(&o.hbuf)
	return o
}

// release returns the buffer once the connection is closed.
func (o *h2Out) release() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.bw != nil {
		o.bw.Reset(nil)
		h2Writers.Put(o.bw)
		o.bw = nil
		if o.err == nil {
			o.err = net.ErrClosed
		}
	}
}

// ok reports whether writes can go on (called with mu held).
func (o *h2Out) ok() bool { return o.err == nil && o.bw != nil }

func (o *h2Out) check(err error) {
	if err != nil && o.err == nil {
		o.err = err
		o.conn.Close()
	}
	o.dirty = true
}

// flushLocked writes what is buffered.
func (o *h2Out) flushLocked() {
	if !o.dirty || !o.ok() {
		return
	}
	o.dirty = false
	if o.stall > 0 {
		if now := time.Now(); now.Sub(o.armed) > o.stall/16 {
			o.armed = now
			o.conn.SetWriteDeadline(now.Add(o.stall))
		}
	}
	o.check(o.bw.Flush())
	o.dirty = false
}

// headersLocked encodes fields and writes them as a HEADERS frame (and
// CONTINUATION frames past the peer's frame size).
func (o *h2Out) headersLocked(id uint32, fields []hpack.HeaderField, end bool) {
	if !o.ok() {
		return
	}
	o.hbuf.Reset()
	for _, f := range fields {
		o.enc.WriteField(f)
	}
	o.blockLocked(id, o.hbuf.Bytes(), end)
}

func (o *h2Out) blockLocked(id uint32, block []byte, end bool) {
	max := int(o.maxFrame)
	first := block
	if len(first) > max {
		first = first[:max]
	}
	block = block[len(first):]
	o.check(o.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: first, EndStream: end, EndHeaders: len(block) == 0}))
	for len(block) > 0 && o.ok() {
		n := min(len(block), max)
		o.check(o.fr.WriteContinuation(id, n == len(block), block[:n]))
		block = block[n:]
	}
}

// dataLocked writes data in frames of the peer's size; end marks the last.
func (o *h2Out) dataLocked(id uint32, data []byte, end bool) {
	for o.ok() {
		n := min(len(data), int(o.maxFrame))
		last := n == len(data)
		o.check(o.fr.WriteData(id, end && last, data[:n]))
		data = data[n:]
		if last {
			return
		}
	}
}

func (o *h2Out) rstLocked(id uint32, code http2.ErrCode) {
	if o.ok() {
		o.check(o.fr.WriteRSTStream(id, code))
	}
}

func (o *h2Out) windowLocked(id uint32, n uint32) {
	if o.ok() && n > 0 {
		o.check(o.fr.WriteWindowUpdate(id, n))
		if id == 0 {
			o.recv.Add(int64(n))
		}
	}
}

// take accounts for a flow-controlled frame of n bytes received on the
// connection; false if the peer sent past the window it was given (RFC
// 9113 §6.9.1), a FLOW_CONTROL_ERROR: the proxy holds what a peer sends
// until it is passed on, so an unchecked window would let one peer make
// it hold anything.
func (o *h2Out) take(n uint32) bool { return o.recv.Add(-int64(n)) >= 0 }

// pingAck answers a PING; fl flushes it with the reader's other writes.
func (o *h2Out) pingAck(data [8]byte, fl *h2Flusher) {
	o.mu.Lock()
	if o.ok() {
		o.check(o.fr.WritePing(true, data))
	}
	o.mu.Unlock()
	fl.mark(o)
}

// readH2Frame is one step of a connection's reader: it flushes what the
// reader wrote once its input is drained, then reads the next frame, a
// header block (HEADERS and its CONTINUATIONs) decoded by hr.
func readH2Frame(br *bufio.Reader, fr *http2.Framer, hr *h2HeaderReader, fl *h2Flusher, isRequest bool) (http2.Frame, *h2Headers, error) {
	if br.Buffered() == 0 {
		fl.flush()
	}
	if f, h, err, ok := readCommonH2Frame(br, fr, hr, isRequest); ok {
		return f, h, err
	}
	f, err := fr.ReadFrame()
	if hf, ok := f.(*http2.HeadersFrame); ok && err == nil {
		h, err := hr.read(fr, hf, isRequest)
		return f, h, err
	}
	return f, nil, err
}

// h2FrameHeader decodes a frame's 9-byte header.
func h2FrameHeader(hdr []byte) http2.FrameHeader {
	return http2.FrameHeader{
		Length:   uint32(hdr[0])<<16 | uint32(hdr[1])<<8 | uint32(hdr[2]),
		Type:     http2.FrameType(hdr[3]),
		Flags:    http2.Flags(hdr[4]),
		StreamID: binary.BigEndian.Uint32(hdr[5:]) & (1<<31 - 1),
	}
}

// readCommonH2Frame reads, without the Framer, the well-formed frames every
// call brings: PING, WINDOW_UPDATE and a HEADERS frame that holds a whole
// header block, unpadded, with no priority (the Framer allocates each; a
// gRPC call went through seven). It returns ok false, having read nothing,
// for any other frame or anything unusual — not all buffered yet, a bad
// length, stream or increment, flags it does not handle — which the
// Framer then reads with its checks and errors. The Framer's own state
// does not miss these: between frames it tracks only an open header block,
// and these never leave one open. The frames returned are hr's, valid
// until the next read, as the Framer's reused DATA frames are.
func readCommonH2Frame(br *bufio.Reader, fr *http2.Framer, hr *h2HeaderReader, isRequest bool) (f http2.Frame, h *h2Headers, err error, ok bool) {
	hdr, err := br.Peek(9)
	if err != nil {
		return nil, nil, nil, false
	}
	fh := h2FrameHeader(hdr)
	length, typ, flags, stream := int(fh.Length), fh.Type, fh.Flags, fh.StreamID
	if hr.framerBlock {
		// The Framer has a header block open (its HEADERS failed to
		// parse, a stream error): it reads what follows.
		hr.framerBlock = opensBlock(typ, flags)
		return nil, nil, nil, false
	}
	switch {
	case typ == http2.FramePing && length == 8 && stream == 0,
		typ == http2.FrameWindowUpdate && length == 4,
		typ == http2.FrameHeaders && stream != 0 && length <= h2MaxFrame &&
			flags.Has(http2.FlagHeadersEndHeaders) && !flags.Has(http2.FlagHeadersPadded) && !flags.Has(http2.FlagHeadersPriority):
	default:
		hr.framerBlock = opensBlock(typ, flags)
		return nil, nil, nil, false
	}
	b, err := br.Peek(9 + length)
	if err != nil {
		return nil, nil, nil, false // larger than the buffer, or not all here
	}
	payload := b[9:]
	switch typ {
	case http2.FramePing:
		hr.ping = http2.PingFrame{FrameHeader: fh}
		copy(hr.ping.Data[:], payload)
		f = &hr.ping
	case http2.FrameWindowUpdate:
		inc := binary.BigEndian.Uint32(payload) & (1<<31 - 1)
		if inc == 0 {
			return nil, nil, nil, false
		}
		hr.wu = http2.WindowUpdateFrame{FrameHeader: fh, Increment: inc}
		f = &hr.wu
	case http2.FrameHeaders:
		// Decoded before the bytes are released: the fields are
		// strings of their own.
		h, err = hr.readBlock(fr, stream, flags.Has(http2.FlagHeadersEndStream), payload, true, isRequest)
	}
	br.Discard(9 + length)
	return f, h, err, true
}

// opensBlock reports whether a frame leaves a header block open for the
// Framer, which expects CONTINUATION next (it tracks that from the frame
// header, whatever the payload).
func opensBlock(typ http2.FrameType, flags http2.Flags) bool {
	return (typ == http2.FrameHeaders || typ == http2.FrameContinuation) && !flags.Has(http2.FlagHeadersEndHeaders)
}

// h2Flusher is a reader goroutine's list of the connections it wrote to
// and has not flushed yet.
type h2Flusher struct{ outs []*h2Out }

func (f *h2Flusher) mark(o *h2Out) {
	for _, x := range f.outs {
		if x == o {
			return
		}
	}
	f.outs = append(f.outs, o)
}

// flush flushes every marked connection: the others first, then the
// shared ones after yielding once. The goroutines runnable now (the other
// client readers woken by the same poll) write their frames to a shared
// connection meanwhile, and the first of them to flush sends them all.
// Each has read its input by then, but not yet made the read that finds
// nothing, which the request would otherwise wait for; a lone request
// pays one yield and no goroutine switch. What the upstream reader writes
// to clients leaves before it yields for what it owes the upstream (a
// PING or SETTINGS ack, window credit).
func (f *h2Flusher) flush() {
	shared := f.outs[:0] // compacted in place: the shared ones, in order
	for _, o := range f.outs {
		if o.shared {
			shared = append(shared, o)
			continue
		}
		o.flush()
	}
	if len(shared) > 0 {
		runtime.Gosched()
		for _, o := range shared {
			o.flush()
		}
	}
	clear(f.outs) // keep no connection alive through the slice
	f.outs = f.outs[:0]
}

func (o *h2Out) flush() {
	o.mu.Lock()
	o.flushLocked()
	o.mu.Unlock()
}

// settingsLocked applies a peer's SETTINGS frame to what is written to it
// and acknowledges it; it returns the change of the initial stream window.
func (o *h2Out) settingsLocked(f *http2.SettingsFrame) (delta int32, err error) {
	err = f.ForeachSetting(func(s http2.Setting) error {
		if err := s.Valid(); err != nil {
			return err
		}
		switch s.ID {
		case http2.SettingMaxFrameSize:
			o.maxFrame = s.Val
		case http2.SettingInitialWindowSize:
			delta += int32(s.Val) - o.initWin
			o.initWin = int32(s.Val)
		case http2.SettingHeaderTableSize:
			o.enc.SetMaxDynamicTableSize(min(s.Val, 4<<10))
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	if o.ok() {
		o.check(o.fr.WriteSettingsAck())
	}
	return delta, nil
}
