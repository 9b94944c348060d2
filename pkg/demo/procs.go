package demo

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// child is one process the demo started. Each child runs in its own process
// group so that stopping it also stops anything it started, and (on Linux)
// gets SIGKILL if the demo itself dies.
type child struct {
	name    string
	path    string
	args    []string
	logPath string
	// lines, when set, receives the child's stdout line by line (the
	// traffic generator's summaries); otherwise stdout goes to the log.
	lines func(string)

	cmd  *exec.Cmd
	log  *os.File
	done chan struct{} // closed when the process has been waited for
	err  error         // the exit status, once done is closed
	copy sync.WaitGroup
}

// start launches the child; exited receives it when it ends.
func (c *child) start(exited chan<- *child) error {
	f, err := os.OpenFile(c.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return fmt.Errorf("log file for %s: %w", c.name, err)
	}
	cmd := exec.Command(c.path, c.args...)
	cmd.Stdin = nil
	cmd.Stderr = f
	var pipe io.ReadCloser
	if c.lines == nil {
		cmd.Stdout = f
	} else {
		if pipe, err = cmd.StdoutPipe(); err != nil {
			f.Close()
			return err
		}
	}
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("starting %s (%s): %w", c.name, c.path, err)
	}
	c.cmd, c.log, c.done, c.err = cmd, f, make(chan struct{}), nil
	if pipe != nil {
		c.copy.Add(1)
		go func() {
			defer c.copy.Done()
			sc := bufio.NewScanner(pipe)
			for sc.Scan() {
				fmt.Fprintln(f, sc.Text())
				c.lines(sc.Text())
			}
		}()
	}
	go func() {
		c.copy.Wait() // Wait closes the pipe: read it to the end first
		err := cmd.Wait()
		c.err = err
		f.Close()
		close(c.done)
		select {
		case exited <- c:
		default: // nobody is watching any more (the demo is stopping)
		}
	}()
	return nil
}

// running reports whether the child was started and has not exited.
func (c *child) running() bool {
	if c.done == nil {
		return false
	}
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// stop asks the child's process group to terminate, then kills it after
// grace, and waits for it.
func (c *child) stop(grace time.Duration) {
	if !c.running() {
		return
	}
	signalGroup(c.cmd, false)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-c.done:
	case <-t.C:
		signalGroup(c.cmd, true)
		<-c.done
	}
	// Anything the child left in its group goes too.
	signalGroup(c.cmd, true)
}

// tail returns the last n lines of the child's log, for error messages.
func (c *child) tail(n int) string {
	data, err := os.ReadFile(c.logPath)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(bytes.TrimSpace(data)), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// exitError describes how a child ended, with the end of its log.
func (c *child) exitError() error {
	msg := fmt.Sprintf("%s exited unexpectedly", c.name)
	if c.err != nil {
		msg = fmt.Sprintf("%s exited unexpectedly: %v", c.name, c.err)
	}
	if t := c.tail(8); t != "" {
		msg += "; its last log lines:\n" + indent(t)
	}
	return errors.New(msg)
}

func indent(s string) string {
	return "    " + strings.ReplaceAll(s, "\n", "\n    ")
}
