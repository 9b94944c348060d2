// Package origdst reads the destination a connection had before an iptables
// REDIRECT rewrote it (SO_ORIGINAL_DST for IPv4, IP6T_SO_ORIGINAL_DST for
// IPv6), which is how a transparent proxy learns where traffic was going.
package origdst

import (
	"errors"
	"net"
	"net/netip"
)

// ErrNotRedirected means the connection carries no original destination
// other than the address it was accepted on: it reached the proxy directly.
var ErrNotRedirected = errors.New("connection was not redirected")

// Get returns the original destination of an accepted TCP connection, or
// ErrNotRedirected when it is the connection's own local address.
func Get(c net.Conn) (netip.AddrPort, error) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return netip.AddrPort{}, ErrNotRedirected
	}
	ap, err := get(tc)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if la, ok := tc.LocalAddr().(*net.TCPAddr); ok && la.AddrPort() == ap {
		return netip.AddrPort{}, ErrNotRedirected
	}
	return ap, nil
}
