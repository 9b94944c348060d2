package origdst

import (
	"errors"
	"net"
	"testing"
)

// Without an iptables redirect, Get reports ErrNotRedirected (the kernel
// either has no conntrack entry or reports the connection's own address).
// The redirect itself is exercised by the netns interception test.
func TestNotRedirected(t *testing.T) {
	for _, network := range []string{"tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			addr := "127.0.0.1:0"
			if network == "tcp6" {
				addr = "[::1]:0"
			}
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Skipf("no %s loopback: %v", network, err)
			}
			defer ln.Close()
			go func() {
				c, err := net.Dial(network, ln.Addr().String())
				if err == nil {
					defer c.Close()
					c.Read(make([]byte, 1))
				}
			}()
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := Get(c); !errors.Is(err, ErrNotRedirected) {
				t.Errorf("Get = %v, want ErrNotRedirected", err)
			}
			if _, err := Get(&net.UnixConn{}); !errors.Is(err, ErrNotRedirected) {
				t.Errorf("Get(non-TCP) = %v, want ErrNotRedirected", err)
			}
		})
	}
}
