//go:build !linux

package proxy

import "net"

// rawIO is Linux-only (rawio_linux.go); elsewhere a connection uses its
// own Read and Write.
type rawIO struct{}

func newRawIO(net.Conn) *rawIO { return nil }

func (*rawIO) read(net.Conn, []byte) (int, error)  { panic("unreachable") }
func (*rawIO) write(net.Conn, []byte) (int, error) { panic("unreachable") }
