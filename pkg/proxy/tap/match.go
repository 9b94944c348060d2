package tap

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/conduitmesh/conduit/pkg/proxy"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
)

// matcher is a decoded conduit.tap.v1.Match.
type matcher func(*proxy.Request) bool

func matchAll(*proxy.Request) bool { return true }

// maxMatchDepth bounds nested matches from a peer.
const maxMatchDepth = 16

var errBadRequest = errors.New("malformed ObserveRequest")

// observeRequest is a decoded conduit.tap.v1.ObserveRequest.
type observeRequest struct {
	limit uint32
	match matcher
}

func decodeObserveRequest(b []byte) (observeRequest, error) {
	req := observeRequest{match: matchAll}
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.VarintType:
			req.limit = uint32(f.Varint)
		case f.Num == 2 && f.Type == protowire.BytesType:
			m, err := decodeMatch(f.Bytes, 0)
			if err != nil {
				return err
			}
			req.match = m
		}
		return nil
	})
	if err != nil {
		return observeRequest{}, fmt.Errorf("%w: %w", errBadRequest, err)
	}
	return req, nil
}

func decodeMatch(b []byte, depth int) (matcher, error) {
	if depth > maxMatchDepth {
		return nil, fmt.Errorf("match nested deeper than %d", maxMatchDepth)
	}
	m := matcher(matchAll)
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		var err error
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType: // all
			m, err = decodeSeq(f.Bytes, depth, true)
		case f.Num == 2 && f.Type == protowire.BytesType: // any
			m, err = decodeSeq(f.Bytes, depth, false)
		case f.Num == 3 && f.Type == protowire.BytesType: // not
			var inner matcher
			if inner, err = decodeMatch(f.Bytes, depth+1); err == nil {
				m = func(r *proxy.Request) bool { return !inner(r) }
			}
		case f.Num == 4 && f.Type == protowire.BytesType:
			m, err = decodeHTTPMatch(f.Bytes)
		case f.Num == 5 && f.Type == protowire.VarintType:
			dir := ""
			switch f.Varint {
			case 1:
				dir = "inbound"
			case 2:
				dir = "outbound"
			}
			m = func(r *proxy.Request) bool { return dir == "" || r.Direction == dir }
		case (f.Num == 6 || f.Num == 7) && f.Type == protowire.BytesType:
			var pfx netip.Prefix
			var port uint32
			if pfx, port, err = decodeNet(f.Bytes); err == nil {
				src := f.Num == 6
				m = func(r *proxy.Request) bool {
					a := r.Destination
					if src {
						a = r.Source
					}
					return pfx.Contains(a.Addr().Unmap()) && (port == 0 || uint32(a.Port()) == port)
				}
			}
		case f.Num == 8 && f.Type == protowire.BytesType:
			var k, v string
			if k, v, err = grpcwire.StringMapEntry(f.Bytes); err == nil {
				m = func(r *proxy.Request) bool { return r.DstLabels[k] == v }
			}
		}
		return err
	})
	return m, err
}

func decodeSeq(b []byte, depth int, all bool) (matcher, error) {
	var ms []matcher
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Num != 1 || f.Type != protowire.BytesType {
			return nil
		}
		m, err := decodeMatch(f.Bytes, depth+1)
		ms = append(ms, m)
		return err
	})
	return func(r *proxy.Request) bool {
		for _, m := range ms {
			if m(r) != all {
				return !all
			}
		}
		return all
	}, err
}

func decodeHTTPMatch(b []byte) (matcher, error) {
	m := matcher(matchAll)
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			method := string(f.Bytes)
			m = func(r *proxy.Request) bool { return strings.EqualFold(r.Method, method) }
		case 2, 3:
			sm, err := decodeStringMatch(f.Bytes)
			if err != nil {
				return err
			}
			if f.Num == 2 {
				m = func(r *proxy.Request) bool { return sm(strings.ToLower(r.Authority)) }
			} else {
				m = func(r *proxy.Request) bool { return sm(r.Path) }
			}
		case 4:
			scheme := string(f.Bytes)
			m = func(r *proxy.Request) bool { return strings.EqualFold(r.Scheme, scheme) }
		}
		return nil
	})
	return m, err
}

func decodeStringMatch(b []byte) (func(string) bool, error) {
	sm := func(string) bool { return true }
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		v := string(f.Bytes)
		switch f.Num {
		case 1:
			sm = func(s string) bool { return s == v }
		case 2:
			sm = func(s string) bool { return strings.HasPrefix(s, v) }
		}
		return nil
	})
	return sm, err
}

func decodeNet(b []byte) (netip.Prefix, uint32, error) {
	var ip []byte
	var bits, port uint32
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType:
			ip = f.Bytes
		case f.Num == 2 && f.Type == protowire.VarintType:
			bits = uint32(f.Varint)
		case f.Num == 3 && f.Type == protowire.VarintType:
			port = uint32(f.Varint)
		}
		return nil
	})
	if err != nil {
		return netip.Prefix{}, 0, err
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Prefix{}, 0, fmt.Errorf("net match: ip of %d bytes", len(ip))
	}
	if bits == 0 && len(ip) > 0 {
		bits = uint32(addr.BitLen())
	}
	pfx, err := addr.Unmap().Prefix(int(min(bits, uint32(addr.Unmap().BitLen()))))
	return pfx, port, err
}
