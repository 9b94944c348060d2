package proxy

import (
	"crypto/tls"
	"errors"
	"net"
	"syscall"
)

// peerClosed reports, without blocking, whether an idle connection's peer
// has closed it or sent something (both make it unusable for a new
// request): a non-blocking MSG_PEEK on the socket.
func peerClosed(c net.Conn) bool {
	tc := rawTCP(c)
	if tc == nil {
		return false
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return true
	}
	closed := false
	err = rc.Read(func(fd uintptr) bool {
		var b [1]byte
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		closed = err == nil || !errors.Is(err, syscall.EAGAIN)
		return true // never wait
	})
	return closed || err != nil
}

// rawTCP finds the TCP connection under the proxy's wrappers.
func rawTCP(c net.Conn) *net.TCPConn {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			return v
		case *servedConn:
			c = v.Conn
		case *meteredConn:
			c = v.Conn
		case *tls.Conn:
			c = v.NetConn()
		default:
			return nil
		}
	}
}
