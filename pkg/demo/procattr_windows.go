package demo

import "os/exec"

func setProcAttr(*exec.Cmd) {}

// signalGroup stops the child; Windows has no SIGTERM, so both ask to kill.
func signalGroup(cmd *exec.Cmd, _ bool) {
	if cmd.Process != nil {
		cmd.Process.Kill()
	}
}
