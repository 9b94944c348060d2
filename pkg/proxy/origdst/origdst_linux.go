package origdst

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"unsafe"
)

const soOriginalDst = 80 // SO_ORIGINAL_DST and IP6T_SO_ORIGINAL_DST

func get(c *net.TCPConn) (netip.AddrPort, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return netip.AddrPort{}, err
	}
	la, _ := c.LocalAddr().(*net.TCPAddr)
	v6 := la != nil && la.IP.To4() == nil
	var (
		buf    [28]byte // sockaddr_in6 is the larger
		sysErr error
	)
	err = rc.Control(func(fd uintptr) {
		level, size := syscall.SOL_IP, uint32(16)
		if v6 {
			level, size = syscall.SOL_IPV6, 28
		}
		_, _, errno := syscall.Syscall6(syscall.SYS_GETSOCKOPT, fd, uintptr(level), soOriginalDst,
			uintptr(unsafe.Pointer(&buf[0])), uintptr(unsafe.Pointer(&size)), 0)
		if errno != 0 {
			sysErr = errno
		}
	})
	if err != nil {
		return netip.AddrPort{}, err
	}
	if sysErr != nil {
		if errors.Is(sysErr, syscall.ENOENT) || errors.Is(sysErr, syscall.ENOPROTOOPT) {
			return netip.AddrPort{}, ErrNotRedirected
		}
		return netip.AddrPort{}, fmt.Errorf("reading SO_ORIGINAL_DST: %w", sysErr)
	}
	// struct sockaddr_in{,6}: family (host order), port (network order), ...
	port := binary.BigEndian.Uint16(buf[2:4])
	switch fam := binary.NativeEndian.Uint16(buf[0:2]); fam {
	case syscall.AF_INET:
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte(buf[4:8])), port), nil
	case syscall.AF_INET6:
		return netip.AddrPortFrom(netip.AddrFrom16([16]byte(buf[8:24])).Unmap(), port), nil
	default:
		return netip.AddrPort{}, fmt.Errorf("reading SO_ORIGINAL_DST: unexpected address family %d", fam)
	}
}
