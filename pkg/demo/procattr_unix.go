//go:build unix

package demo

import (
	"os/exec"
	"syscall"
)

// setProcAttr puts the child in its own process group (so a terminal's
// Ctrl-C reaches only the demo, which then stops the children in order) and,
// on Linux, has the kernel kill it if the demo dies.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	setParentDeathSignal(cmd.SysProcAttr)
}

// signalGroup sends SIGTERM (or SIGKILL) to the child's process group.
func signalGroup(cmd *exec.Cmd, kill bool) {
	if cmd.Process == nil {
		return
	}
	sig := syscall.SIGTERM
	if kill {
		sig = syscall.SIGKILL
	}
	syscall.Kill(-cmd.Process.Pid, sig)
}
