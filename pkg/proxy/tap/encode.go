package tap

import (
	"net/http"
	"net/netip"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
)

// Redacted replaces the value of a sensitive header.
const Redacted = "[REDACTED]"

// sensitive headers never leave the proxy.
var sensitive = map[string]bool{
	"authorization":       true,
	"proxy-authorization": true,
	"cookie":              true,
	"set-cookie":          true,
}

// maxHeaderBytes bounds the headers copied into one event.
const maxHeaderBytes = 16 << 10

// Field numbers of conduit.tap.v1.TapEvent and its parts.
const (
	evTimestamp   = 1
	evDirection   = 2
	evSource      = 3
	evDestination = 4
	evSrcLabels   = 5
	evDstLabels   = 6
	evTLS         = 7
	evClientID    = 8
	evServerID    = 9
	evHTTP        = 20

	httpRequestInit  = 1
	httpResponseInit = 2
	httpResponseEnd  = 3
)

// common is the part of every event of one request that does not change.
type common struct {
	direction uint64 // Direction enum
	src, dst  netip.AddrPort
	dstLabels map[string]string
	tls       bool
	clientID  string
	serverID  string
	base      uint32
	stream    uint64
}

func appendBytesField(b []byte, num protowire.Number, v []byte) []byte {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendBytes(b, v)
}

func appendString(b []byte, num protowire.Number, v string) []byte {
	if v == "" {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.BytesType)
	return protowire.AppendString(b, v)
}

func appendVarint(b []byte, num protowire.Number, v uint64) []byte {
	if v == 0 {
		return b
	}
	b = protowire.AppendTag(b, num, protowire.VarintType)
	return protowire.AppendVarint(b, v)
}

// appendMessage appends field num holding the message that fn appends.
func appendMessage(b []byte, num protowire.Number, fn func([]byte) []byte) []byte {
	return appendBytesField(b, num, fn(nil))
}

func appendTimestamp(b []byte, num protowire.Number, t time.Time) []byte {
	return appendMessage(b, num, func(m []byte) []byte {
		m = appendVarint(m, 1, uint64(t.Unix()))
		return appendVarint(m, 2, uint64(t.Nanosecond()))
	})
}

func appendDuration(b []byte, num protowire.Number, d time.Duration) []byte {
	if d < 0 {
		d = 0
	}
	return appendMessage(b, num, func(m []byte) []byte {
		m = appendVarint(m, 1, uint64(d/time.Second))
		return appendVarint(m, 2, uint64(d%time.Second))
	})
}

func appendAddr(b []byte, num protowire.Number, a netip.AddrPort) []byte {
	if !a.IsValid() {
		return b
	}
	return appendMessage(b, num, func(m []byte) []byte {
		m = appendBytesField(m, 1, a.Addr().Unmap().AsSlice())
		return appendVarint(m, 2, uint64(a.Port()))
	})
}

func appendLabels(b []byte, num protowire.Number, labels map[string]string) []byte {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = appendMessage(b, num, func(m []byte) []byte {
			m = protowire.AppendTag(m, 1, protowire.BytesType)
			m = protowire.AppendString(m, k)
			m = protowire.AppendTag(m, 2, protowire.BytesType)
			return protowire.AppendString(m, labels[k])
		})
	}
	return b
}

// appendHeaders appends h as repeated Header fields: names lower-cased and
// sorted, sensitive values redacted, at most maxHeaderBytes in all.
func appendHeaders(b []byte, num protowire.Number, h http.Header) []byte {
	names := make([]string, 0, len(h))
	for k := range h {
		names = append(names, k)
	}
	sort.Strings(names)
	budget := maxHeaderBytes
	for _, k := range names {
		name := strings.ToLower(k)
		for _, v := range h[k] {
			if sensitive[name] {
				v = Redacted
			}
			if budget -= len(name) + len(v); budget < 0 {
				return b
			}
			b = appendMessage(b, num, func(m []byte) []byte {
				m = appendString(m, 1, name)
				return appendBytesField(m, 2, []byte(v))
			})
		}
	}
	return b
}

func (c *common) appendStreamID(b []byte) []byte {
	return appendMessage(b, 1, func(m []byte) []byte {
		m = appendVarint(m, 1, uint64(c.base))
		return appendVarint(m, 2, c.stream)
	})
}

// event encodes a TapEvent whose http oneof holds field kind built by body.
func (c *common) event(at time.Time, kind protowire.Number, body func([]byte) []byte) []byte {
	b := make([]byte, 0, 256)
	b = appendTimestamp(b, evTimestamp, at)
	b = appendVarint(b, evDirection, c.direction)
	b = appendAddr(b, evSource, c.src)
	b = appendAddr(b, evDestination, c.dst)
	b = appendLabels(b, evDstLabels, c.dstLabels)
	if c.tls {
		b = protowire.AppendTag(b, evTLS, protowire.VarintType)
		b = protowire.AppendVarint(b, 1)
	}
	b = appendString(b, evClientID, c.clientID)
	b = appendString(b, evServerID, c.serverID)
	return appendMessage(b, evHTTP, func(m []byte) []byte {
		return appendMessage(m, kind, func(e []byte) []byte {
			return body(c.appendStreamID(e))
		})
	})
}

func (c *common) requestInit(at time.Time, info *RequestInfo) []byte {
	return c.event(at, httpRequestInit, func(b []byte) []byte {
		b = appendString(b, 2, info.Method)
		b = appendString(b, 3, info.Scheme)
		b = appendString(b, 4, info.Authority)
		b = appendString(b, 5, info.Path)
		return appendHeaders(b, 6, info.Header)
	})
}

func (c *common) responseInit(at time.Time, sinceReq time.Duration, status int, h http.Header) []byte {
	return c.event(at, httpResponseInit, func(b []byte) []byte {
		b = appendDuration(b, 2, sinceReq)
		b = appendVarint(b, 3, uint64(status))
		return appendHeaders(b, 4, h)
	})
}

func (c *common) responseEnd(at time.Time, sinceReq, sinceRsp time.Duration, bytes int64, grpcStatus int, reset uint32) []byte {
	return c.event(at, httpResponseEnd, func(b []byte) []byte {
		b = appendDuration(b, 2, sinceReq)
		b = appendDuration(b, 3, sinceRsp)
		b = appendVarint(b, 4, uint64(max(bytes, 0)))
		switch {
		case reset != 0:
			b = appendMessage(b, 5, func(m []byte) []byte {
				m = protowire.AppendTag(m, 2, protowire.VarintType)
				return protowire.AppendVarint(m, uint64(reset))
			})
		case grpcStatus >= 0:
			b = appendMessage(b, 5, func(m []byte) []byte {
				m = protowire.AppendTag(m, 1, protowire.VarintType)
				return protowire.AppendVarint(m, uint64(grpcStatus))
			})
		}
		return b
	})
}
