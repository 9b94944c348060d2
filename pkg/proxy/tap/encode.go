package tap

import (
	"net/http"
	"net/netip"
	"slices"
	"sort"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
)

// Redacted replaces the value of a sensitive header.
const Redacted = "[REDACTED]"

// sensitive headers never leave the proxy (their values are redacted).
var sensitive = [...]string{"authorization", "proxy-authorization", "cookie", "set-cookie"}

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

	reqAuthz = 7 // RequestInit.authz
	reqRoute = 8 // RequestInit.route

	// conduit.tap.v1.Authorization
	authzAllowed    = 1
	authzHTTPStatus = 2
	authzServer     = 3
	authzRoute      = 4
	authzAuthz      = 5
	authzReason     = 6
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
	// shared is the encoding of the fields above but the stream ID, made
	// once per request (when encoded is set); only the request's own
	// goroutine touches it.
	shared  []byte
	encoded bool
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

// begin starts field num holding an embedded message; end finishes it.
// The length is written in place (one byte reserved, shifted if longer), so
// nested messages share one buffer.
func begin(b []byte, num protowire.Number) ([]byte, int) {
	b = protowire.AppendTag(b, num, protowire.BytesType)
	b = append(b, 0)
	return b, len(b)
}

func end(b []byte, start int) []byte {
	n := len(b) - start
	sz := protowire.SizeVarint(uint64(n))
	if sz > 1 {
		b = append(b, make([]byte, sz-1)...)
		copy(b[start+sz-1:], b[start:start+n])
	}
	protowire.AppendVarint(b[:start-1], uint64(n))
	return b
}

func appendTimestamp(b []byte, num protowire.Number, t time.Time) []byte {
	b, m := begin(b, num)
	b = appendVarint(b, 1, uint64(t.Unix()))
	b = appendVarint(b, 2, uint64(t.Nanosecond()))
	return end(b, m)
}

func appendDuration(b []byte, num protowire.Number, d time.Duration) []byte {
	d = max(d, 0)
	b, m := begin(b, num)
	b = appendVarint(b, 1, uint64(d/time.Second))
	b = appendVarint(b, 2, uint64(d%time.Second))
	return end(b, m)
}

func appendAddr(b []byte, num protowire.Number, a netip.AddrPort) []byte {
	if !a.IsValid() {
		return b
	}
	b, m := begin(b, num)
	ip := a.Addr().Unmap()
	if ip.Is4() {
		v4 := ip.As4()
		b = appendBytesField(b, 1, v4[:])
	} else {
		v6 := ip.As16()
		b = appendBytesField(b, 1, v6[:])
	}
	b = appendVarint(b, 2, uint64(a.Port()))
	return end(b, m)
}

func appendLabels(b []byte, num protowire.Number, labels map[string]string) []byte {
	keys := make([]string, 0, len(labels))
	for k := range labels {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		var m int
		b, m = begin(b, num)
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendString(b, k)
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, labels[k])
		b = end(b, m)
	}
	return b
}

// appendHeaders appends h as repeated Header fields: names lower-cased and
// sorted, sensitive values redacted, at most maxHeaderBytes in all.
func appendHeaders(b []byte, num protowire.Number, h http.Header) []byte {
	var buf [32]string // no allocation for the usual few headers
	names := buf[:0]
	for k := range h {
		names = append(names, k)
	}
	slices.Sort(names)
	budget := maxHeaderBytes
	for _, k := range names {
		redact := isSensitive(k)
		for _, v := range h[k] {
			if redact {
				v = Redacted
			}
			if budget -= len(k) + len(v); budget < 0 {
				return b
			}
			var m int
			b, m = begin(b, num)
			b = protowire.AppendTag(b, 1, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(len(k)))
			b = appendLower(b, k)
			b = protowire.AppendTag(b, 2, protowire.BytesType)
			b = protowire.AppendString(b, v)
			b = end(b, m)
		}
	}
	return b
}

// appendFields is appendHeaders for fields as received: in their order,
// names lower-cased, sensitive values redacted, at most maxHeaderBytes.
func appendFields(b []byte, num protowire.Number, fs []proxy.Field) []byte {
	budget := maxHeaderBytes
	for _, f := range fs {
		v := f.Value
		if isSensitiveBytes(f.Name) {
			v = redactedBytes
		}
		if budget -= len(f.Name) + len(v); budget < 0 {
			return b
		}
		var m int
		b, m = begin(b, num)
		b = protowire.AppendTag(b, 1, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(f.Name)))
		b = appendLower(b, f.Name)
		b = appendBytesField(b, 2, v)
		b = end(b, m)
	}
	return b
}

var redactedBytes = []byte(Redacted)

func isSensitiveBytes(name []byte) bool {
	for _, s := range sensitive {
		if len(name) == len(s) && strings.EqualFold(string(name), s) {
			return true
		}
	}
	return false
}

func isSensitive(name string) bool {
	for _, s := range sensitive {
		if strings.EqualFold(name, s) {
			return true
		}
	}
	return false
}

// appendLower appends s in ASCII lower case (header names are ASCII).
func appendLower[S string | []byte](b []byte, s S) []byte {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
	}
	return b
}

// head encodes the fields every event of the request shares and opens the
// http oneof's field kind, with its StreamId; the caller appends the event's
// own fields and closes both with tail.
func (c *common) head(dst []byte, at time.Time, kind protowire.Number) (b []byte, httpStart, evStart int) {
	if !c.encoded {
		c.encoded = true
		c.shared = appendVarint(c.shared[:0], evDirection, c.direction)
		c.shared = appendAddr(c.shared, evSource, c.src)
		c.shared = appendAddr(c.shared, evDestination, c.dst)
		c.shared = appendLabels(c.shared, evDstLabels, c.dstLabels)
		if c.tls {
			c.shared = protowire.AppendTag(c.shared, evTLS, protowire.VarintType)
			c.shared = protowire.AppendVarint(c.shared, 1)
		}
		c.shared = appendString(c.shared, evClientID, c.clientID)
		c.shared = appendString(c.shared, evServerID, c.serverID)
	}
	b = appendTimestamp(dst[:0], evTimestamp, at)
	b = append(b, c.shared...)
	b, httpStart = begin(b, evHTTP)
	b, evStart = begin(b, kind)
	b, id := begin(b, 1)
	b = appendVarint(b, 1, uint64(c.base))
	b = appendVarint(b, 2, c.stream)
	return end(b, id), httpStart, evStart
}

func tail(b []byte, httpStart, evStart int) []byte {
	return end(end(b, evStart), httpStart)
}

// The encoders append one TapEvent to dst[:0] (nil is fine).

func (c *common) requestInit(dst []byte, at time.Time, info *proxy.Request) []byte {
	b, h, e := c.head(dst, at, httpRequestInit)
	b = appendString(b, 2, info.Method)
	b = appendString(b, 3, info.Scheme)
	b = appendString(b, 4, info.Authority)
	b = appendString(b, 5, info.Path)
	if info.Fields != nil {
		b = appendFields(b, 6, info.Fields)
	} else {
		b = appendHeaders(b, 6, info.Header)
	}
	b = appendAuthz(b, reqAuthz, &info.Authz)
	b = appendRef(b, reqRoute, authz.Ref{Kind: info.RouteKind, Name: info.RouteName})
	return tail(b, h, e)
}

// appendAuthz appends the policy's decision as an Authorization, nothing
// when no policy applied (no server).
func appendAuthz(b []byte, num protowire.Number, d *authz.Decision) []byte {
	if d.Server.Kind == "" {
		return b
	}
	b, m := begin(b, num)
	if d.Allowed {
		b = appendVarint(b, authzAllowed, 1)
	}
	b = appendVarint(b, authzHTTPStatus, uint64(max(d.Status, 0)))
	b = appendRef(b, authzServer, d.Server)
	b = appendRef(b, authzRoute, d.Route)
	b = appendRef(b, authzAuthz, d.Authz)
	b = appendString(b, authzReason, d.Reason)
	return end(b, m)
}

// appendRef appends a PolicyRef, nothing for the zero Ref.
func appendRef(b []byte, num protowire.Number, r authz.Ref) []byte {
	if r == (authz.Ref{}) {
		return b
	}
	b, m := begin(b, num)
	b = appendString(b, 1, r.Kind)
	b = appendString(b, 2, r.Name)
	b = appendString(b, 3, r.Namespace)
	return end(b, m)
}

// responseInit encodes a response's start.
func (c *common) responseInit(dst []byte, at time.Time, sinceReq time.Duration, rsp *proxy.Response) []byte {
	b, h, e := c.head(dst, at, httpResponseInit)
	b = appendDuration(b, 2, sinceReq)
	b = appendVarint(b, 3, uint64(rsp.Status))
	if rsp.Fields != nil {
		b = appendFields(b, 4, rsp.Fields)
	} else {
		b = appendHeaders(b, 4, rsp.Header)
	}
	return tail(b, h, e)
}

func (c *common) responseEnd(dst []byte, at time.Time, sinceReq, sinceRsp time.Duration, bytes int64, grpcStatus int, reset uint32, retries int) []byte {
	b, h, e := c.head(dst, at, httpResponseEnd)
	b = appendDuration(b, 2, sinceReq)
	b = appendDuration(b, 3, sinceRsp)
	b = appendVarint(b, 4, uint64(max(bytes, 0)))
	switch {
	case reset != 0:
		var m int
		b, m = begin(b, 5)
		b = protowire.AppendTag(b, 2, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(reset))
		b = end(b, m)
	case grpcStatus >= 0:
		var m int
		b, m = begin(b, 5)
		b = protowire.AppendTag(b, 1, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(grpcStatus))
		b = end(b, m)
	}
	b = appendVarint(b, 7, uint64(max(retries, 0)))
	return tail(b, h, e)
}
