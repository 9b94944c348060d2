package destination

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// The proxy encodes and decodes the conduit.destination.v1 messages by hand
// with protowire instead of linking pkg/api's generated code, which would
// pull grpc-go and the protobuf runtime into the proxy (megabytes of RSS).
// codec_test.go checks every field against the generated types.

// getMethod and routesMethod are the full gRPC method names of
// Destination.Get and Destination.GetRoutes (which takes the same
// GetDestination).
const (
	getMethod    = "/conduit.destination.v1.Destination/Get"
	routesMethod = "/conduit.destination.v1.Destination/GetRoutes"
)

// encodeGet encodes a conduit.destination.v1.GetDestination.
func encodeGet(authority, contextToken string) []byte {
	var b []byte
	b = protowire.AppendTag(b, 1, protowire.BytesType)
	b = protowire.AppendString(b, authority)
	if contextToken != "" {
		b = protowire.AppendTag(b, 2, protowire.BytesType)
		b = protowire.AppendString(b, contextToken)
	}
	return b
}

type updateKind int

const (
	updateNone updateKind = iota
	updateAdd
	updateRemove
	updateNoEndpoints
)

// update is a decoded conduit.destination.v1.Update.
type update struct {
	kind   updateKind
	add    []resolve.Endpoint // updateAdd: labels already merged with the set's
	remove []string           // updateRemove: host:port
	exists bool               // updateNoEndpoints
	reason string             // updateNoEndpoints
}

var errMalformed = errors.New("malformed destination update")

func decodeUpdate(b []byte) (update, error) {
	var u update
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		var err error
		switch f.Num {
		case 1:
			u = update{kind: updateAdd}
			u.add, err = decodeWeightedAddrSet(f.Bytes)
		case 2:
			u = update{kind: updateRemove}
			u.remove, err = decodeAddrSet(f.Bytes)
		case 3:
			u = update{kind: updateNoEndpoints}
			err = grpcwire.RangeFields(f.Bytes, func(f grpcwire.Field) error {
				switch {
				case f.Num == 1 && f.Type == protowire.VarintType:
					u.exists = f.Varint != 0
				case f.Num == 2 && f.Type == protowire.BytesType:
					u.reason = string(f.Bytes)
				}
				return nil
			})
		}
		return err
	})
	if err != nil {
		return update{}, fmt.Errorf("%w: %w", errMalformed, err)
	}
	if u.kind == updateNone {
		return update{}, fmt.Errorf("%w: no add, remove or no_endpoints", errMalformed)
	}
	return u, nil
}

func decodeWeightedAddrSet(b []byte) ([]resolve.Endpoint, error) {
	var eps []resolve.Endpoint
	var setLabels map[string]string
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Type != protowire.BytesType {
			return nil
		}
		switch f.Num {
		case 1:
			ep, err := decodeWeightedAddr(f.Bytes)
			if err != nil {
				return err
			}
			eps = append(eps, ep)
		case 2:
			k, v, err := grpcwire.StringMapEntry(f.Bytes)
			if err != nil {
				return err
			}
			if setLabels == nil {
				setLabels = map[string]string{}
			}
			setLabels[k] = v
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	// Labels of the set apply to every address; an address's own win.
	for i := range eps {
		if len(setLabels) == 0 {
			break
		}
		merged := make(map[string]string, len(setLabels)+len(eps[i].Labels))
		for k, v := range setLabels {
			merged[k] = v
		}
		for k, v := range eps[i].Labels {
			merged[k] = v
		}
		eps[i].Labels = merged
	}
	return eps, nil
}

func decodeWeightedAddr(b []byte) (resolve.Endpoint, error) {
	var ep resolve.Endpoint
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType:
			addr, err := decodeTCPAddress(f.Bytes)
			if err != nil {
				return err
			}
			ep.Addr = addr
		case f.Num == 2 && f.Type == protowire.VarintType:
			ep.Weight = uint32(f.Varint)
		case f.Num == 3 && f.Type == protowire.BytesType:
			ep.Identity = string(f.Bytes)
		case f.Num == 4 && f.Type == protowire.BytesType:
			k, v, err := grpcwire.StringMapEntry(f.Bytes)
			if err != nil {
				return err
			}
			if ep.Labels == nil {
				ep.Labels = map[string]string{}
			}
			ep.Labels[k] = v
		}
		return nil
	})
	if err != nil {
		return ep, err
	}
	if ep.Addr == "" {
		return ep, errors.New("weighted address without an address")
	}
	return ep, nil
}

func decodeAddrSet(b []byte) ([]string, error) {
	var addrs []string
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		if f.Num != 1 || f.Type != protowire.BytesType {
			return nil
		}
		a, err := decodeTCPAddress(f.Bytes)
		if err != nil {
			return err
		}
		addrs = append(addrs, a)
		return nil
	})
	return addrs, err
}

// decodeTCPAddress decodes a conduit.net.v1.TcpAddress into host:port.
func decodeTCPAddress(b []byte) (string, error) {
	var ip []byte
	var port uint64
	err := grpcwire.RangeFields(b, func(f grpcwire.Field) error {
		switch {
		case f.Num == 1 && f.Type == protowire.BytesType:
			ip = f.Bytes
		case f.Num == 2 && f.Type == protowire.VarintType:
			port = f.Varint
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	addr, ok := netip.AddrFromSlice(ip)
	if !ok {
		return "", fmt.Errorf("address with an IP of %d bytes, want 4 or 16", len(ip))
	}
	if port == 0 || port > 65535 {
		return "", fmt.Errorf("address %s with port %d out of range", addr, port)
	}
	return net.JoinHostPort(addr.Unmap().String(), strconv.FormatUint(port, 10)), nil
}
