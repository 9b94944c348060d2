package netv1

import (
	"fmt"
	"net/netip"
)

// FromAddrPort converts a netip.AddrPort to its wire form. IPv4-mapped IPv6
// addresses are sent as 4-byte IPv4 addresses.
func FromAddrPort(ap netip.AddrPort) *TcpAddress {
	ip := ap.Addr().Unmap()
	return &TcpAddress{Ip: ip.AsSlice(), Port: uint32(ap.Port())}
}

// AddrPort converts a wire address back. It fails, rather than guessing, on
// an address a peer got wrong: an IP that is neither 4 nor 16 bytes or a port
// out of range.
func (a *TcpAddress) AddrPort() (netip.AddrPort, error) {
	if a == nil {
		return netip.AddrPort{}, fmt.Errorf("missing tcp address")
	}
	ip, ok := netip.AddrFromSlice(a.GetIp())
	if !ok {
		return netip.AddrPort{}, fmt.Errorf("tcp address has a %d-byte ip, want 4 or 16", len(a.GetIp()))
	}
	if a.GetPort() == 0 || a.GetPort() > 65535 {
		return netip.AddrPort{}, fmt.Errorf("tcp address %s has port %d, want 1-65535", ip, a.GetPort())
	}
	return netip.AddrPortFrom(ip.Unmap(), uint16(a.GetPort())), nil
}
