package cluster

import "syscall"

// sysProcAttr makes the kernel kill a component if the test binary dies
// without calling Stop, so crashed test runs leave no stray API servers.
func sysProcAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
