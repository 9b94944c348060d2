//go:build !linux

package origdst

import "net"
import "net/netip"

func get(*net.TCPConn) (netip.AddrPort, error) { return netip.AddrPort{}, ErrNotRedirected }
