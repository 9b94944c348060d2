//go:build unix

package demo

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/internal/testenv"
)

// TestChildStopKillsItsGroup: stopping a child also stops what it started,
// and a child that ignores SIGTERM is killed after the grace period.
func TestChildStopKillsItsGroup(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "grandchild.pid")
	exited := make(chan *child, 4)
	c := &child{
		name: "shell",
		path: "/bin/sh",
		// The shell ignores SIGTERM and leaves a grandchild behind.
		args:    []string{"-c", `trap "" TERM; sleep 300 & echo $! > ` + pidFile + `; wait`},
		logPath: filepath.Join(dir, "shell.log"),
	}
	if err := c.start(exited); err != nil {
		t.Fatal(err)
	}
	var grandchild int
	testenv.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		b, _ := os.ReadFile(pidFile)
		if grandchild, _ = strconv.Atoi(strings.TrimSpace(string(b))); grandchild == 0 {
			return errors.New("the shell did not start its grandchild")
		}
		return nil
	})
	if !c.running() {
		t.Fatal("child not running")
	}
	c.stop(200 * time.Millisecond)
	if c.running() {
		t.Fatal("child still running after stop")
	}
	if got := <-exited; got != c {
		t.Fatal("exit not reported")
	}
	// The grandchild was in the child's group: it is gone (or a zombie
	// about to be reaped by init).
	for deadline := time.Now().Add(5 * time.Second); ; {
		stat, err := os.ReadFile("/proc/" + strconv.Itoa(grandchild) + "/stat")
		if err != nil || strings.Contains(string(stat), ") Z ") {
			break
		}
		if syscall.Kill(grandchild, 0) != nil {
			break
		}
		if time.Now().After(deadline) {
			syscall.Kill(grandchild, syscall.SIGKILL)
			t.Fatalf("grandchild %d survived its group being stopped", grandchild)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestChildExitErrorShowsLog(t *testing.T) {
	dir := t.TempDir()
	exited := make(chan *child, 1)
	c := &child{name: "failing", path: "/bin/sh", args: []string{"-c", "echo 'listen tcp: address already in use' >&2; exit 3"}, logPath: filepath.Join(dir, "f.log")}
	if err := c.start(exited); err != nil {
		t.Fatal(err)
	}
	<-exited
	err := c.exitError()
	if !strings.Contains(err.Error(), "failing exited unexpectedly: exit status 3") || !strings.Contains(err.Error(), "address already in use") {
		t.Fatalf("exitError = %v", err)
	}
}
