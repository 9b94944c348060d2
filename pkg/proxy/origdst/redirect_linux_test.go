package origdst

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"syscall"
	"testing"
)

// TestRedirected installs a real REDIRECT rule (iptables and ip6tables) in
// a private network namespace and checks that Get recovers the address the
// client dialed. It needs root and the iptables tools.
func TestRedirected(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and install iptables rules")
	}
	for _, tool := range []string{"iptables", "ip6tables", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	tests := []struct {
		family, tool, loopback string
	}{
		{"tcp4", "iptables", "127.0.0.1"},
		{"tcp6", "ip6tables", "::1"},
	}
	for _, tt := range tests {
		t.Run(tt.family, func(t *testing.T) {
			// The namespace belongs to this locked thread, which is thrown
			// away when the test goroutine ends (it stays locked).
			done := make(chan error, 1)
			go func() {
				runtime.LockOSThread()
				done <- redirectInNewNetns(tt.family, tt.tool, tt.loopback)
			}()
			if err := <-done; err != nil {
				t.Fatal(err)
			}
		})
	}
}

func redirectInNewNetns(family, tool, loopback string) error {
	if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	run := func(name string, args ...string) error {
		// Children forked from this locked thread share its namespace.
		if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
			return fmt.Errorf("%s %v: %v\n%s", name, args, err, out)
		}
		return nil
	}
	if err := run("ip", "link", "set", "lo", "up"); err != nil {
		return err
	}
	ln, err := net.Listen(family, net.JoinHostPort(loopback, "0"))
	if err != nil {
		return err
	}
	defer ln.Close()
	proxyPort := ln.Addr().(*net.TCPAddr).Port
	const dialPort = 9 // nobody listens there: only the redirect makes it work
	if err := run(tool, "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "-d", loopback, "--dport", strconv.Itoa(dialPort),
		"-j", "REDIRECT", "--to-ports", strconv.Itoa(proxyPort)); err != nil {
		return err
	}
	c, err := net.Dial(family, net.JoinHostPort(loopback, strconv.Itoa(dialPort)))
	if err != nil {
		return fmt.Errorf("dialing through the redirect: %w", err)
	}
	defer c.Close()
	s, err := ln.Accept()
	if err != nil {
		return err
	}
	defer s.Close()
	got, err := Get(s)
	if err != nil {
		return fmt.Errorf("Get: %w", err)
	}
	want := netip.AddrPortFrom(netip.MustParseAddr(loopback), dialPort)
	if got != want {
		return fmt.Errorf("original destination %v, want %v", got, want)
	}
	return nil
}
