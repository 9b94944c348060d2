package proxy

import (
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"unsafe"
)

// rawIO reads and writes a TCP socket with raw system calls, through the
// socket's syscall.RawConn (so deadlines, Close and the runtime's poller
// work as for net.TCPConn's Read and Write).
//
// net.TCPConn's Read and Write enter the system call through the
// runtime's entersyscall, which wakes the runtime's sysmon thread when it
// sleeps because every P was idle: a futex wake-up, a context switch to
// sysmon, its 20 µs nap (nanosleep) and a futex wait once the proxy is
// idle again, all for the first read of each request that finds the
// proxy idle. A sidecar at a few thousand requests a second is idle
// between most requests, so that was about 1.7 of the 8 system calls a
// proxy made per gRPC call (perf stat; bench/notes.md, "System calls per
// request, and sysmon"), and sysmon queued
// on the proxy's CPU ahead of the peer its write had woken. A read or
// write of a non-blocking socket never blocks, so it needs none of
// entersyscall's hand-off of the P. sysmon still wakes for the runtime's
// timers (deadlines, idle timeouts), every collection and every other
// system call, and stays awake while any P is busy, so preemption and the
// poller's fallback work as before.
//
// Each direction keeps its own state, under its own mutex (net.Conn's
// methods may be called concurrently; uncontended, as the proxy reads and
// writes each connection from one goroutine at a time, a lock costs tens
// of nanoseconds); the callbacks are bound once so that a call allocates
// nothing.
type rawIO struct {
	rc syscall.RawConn

	rmu    sync.Mutex
	rbuf   []byte
	rn     int
	rerr   syscall.Errno
	readFn func(uintptr) bool

	wmu     sync.Mutex
	wbuf    []byte
	wn      int
	werr    syscall.Errno
	writeFn func(uintptr) bool
}

// newRawIO returns nil when c is not a socket whose descriptor can be
// used that way (then the caller uses c's own Read and Write).
func newRawIO(c net.Conn) *rawIO {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return nil
	}
	r := &rawIO{rc: rc}
	r.readFn = r.readOnce
	r.writeFn = r.writeAll
	return r
}

func (r *rawIO) readOnce(fd uintptr) bool {
	for {
		n, _, e := syscall.RawSyscall(syscall.SYS_READ, fd, uintptr(unsafe.Pointer(&r.rbuf[0])), uintptr(len(r.rbuf)))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // wait for the poller
		case 0:
			r.rn = int(n)
		default:
			r.rn = 0
		}
		r.rerr = e
		return true
	}
}

func (r *rawIO) writeAll(fd uintptr) bool {
	for r.wn < len(r.wbuf) {
		n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(unsafe.Pointer(&r.wbuf[r.wn])), uintptr(len(r.wbuf)-r.wn))
		switch e {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false // the socket's buffer is full: wait for the poller
		case 0:
			r.wn += int(n)
		default:
			r.werr = e
			return true
		}
	}
	return true
}

// read is net.TCPConn's Read: io.EOF at the end, other errors as
// *net.OpError (c gives the addresses).
func (r *rawIO) read(c net.Conn, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.rmu.Lock()
	r.rbuf, r.rn, r.rerr = b, 0, 0
	err := r.rc.Read(r.readFn)
	n, e := r.rn, r.rerr
	r.rbuf = nil
	r.rmu.Unlock()
	if err != nil || e != 0 {
		return 0, ioError("read", c, err, e)
	}
	if n == 0 {
		return 0, io.EOF
	}
	return n, nil
}

// write is net.TCPConn's Write: all of b, or an error with what was
// written.
func (r *rawIO) write(c net.Conn, b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r.wmu.Lock()
	r.wbuf, r.wn, r.werr = b, 0, 0
	err := r.rc.Write(r.writeFn)
	n, e := r.wn, r.werr
	r.wbuf = nil
	r.wmu.Unlock()
	if err != nil || e != 0 {
		return n, ioError("write", c, err, e)
	}
	return n, nil
}

// ioError is the *net.OpError net.TCPConn's Read and Write return for a
// raw read or write that failed: of err, the RawConn's (the connection
// closed, or the deadline passed; RawConn names its own operation
// "raw-read"/"raw-write"), else of the system call's errno e.
func ioError(op string, c net.Conn, err error, e syscall.Errno) error {
	switch oe, ok := err.(*net.OpError); {
	case ok:
		err = oe.Err
	case err == nil:
		err = os.NewSyscallError(op, e)
	}
	return &net.OpError{Op: op, Net: "tcp", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}
