package proxy

import (
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
)

// podIP is the pod's own, non-loopback address inside the test's network
// namespace (198.18.0.0/15 exists only there).
const podIP = "198.18.0.1"

// TestAdminRefusesRemotePlaintext runs a proxy in a private network
// namespace with an address besides loopback and sends the state-changing
// admin requests from that address, as another pod would: PUT /log-level
// and POST /shutdown get 403 and change nothing, while the same requests
// from loopback, or over mTLS with the controller's identity from the
// non-loopback address, are obeyed. It needs root.
func TestAdminRefusesRemotePlaintext(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace (CI runs as root); TestLoopbackAddr covers the address check")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the ip program is not installed (iproute2)")
	}
	ca := newTestCA(t)
	level := new(slog.LevelVar)
	cfg := Config{
		InboundAddr: "127.0.0.1:0", OutboundAddr: "127.0.0.1:0", AdminAddr: "0.0.0.0:0", InboundTarget: "127.0.0.1:1",
		TLS: newProvider(t, ca, testWebID), ControllerID: testControllerID, LogLevel: level,
	}
	var p *Proxy
	dial := make(chan string) // a source address to connect from
	conns := make(chan net.Conn)
	started := make(chan error)
	go func() {
		// This thread joins a new namespace and is discarded when the
		// goroutine ends (it stays locked). Sockets made here live there.
		runtime.LockOSThread()
		if err := newPodNetns(); err != nil {
			started <- err
			return
		}
		func() {
			defer func() { started <- nil }() // p stays nil if startProxy fails
			p = startProxy(t, cfg)
		}()
		for from := range dial {
			_, port, _ := net.SplitHostPort(p.AdminAddr())
			to := podIP
			if from == "127.0.0.1" {
				to = from
			}
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}}
			c, err := d.Dial("tcp", net.JoinHostPort(to, port))
			if err != nil {
				t.Errorf("dialing the admin port from %s: %v", from, err)
			}
			conns <- c
		}
	}()
	if err := <-started; err != nil {
		t.Fatal(err)
	}
	if p == nil {
		t.FailNow()
	}
	defer close(dial)
	connect := func(from string) net.Conn {
		dial <- from
		c := <-conns
		if c == nil {
			t.FailNow()
		}
		t.Cleanup(func() { c.Close() })
		if got := c.LocalAddr().(*net.TCPAddr).IP.String(); got != from {
			t.Fatalf("connected from %s, want %s", got, from)
		}
		return c
	}

	for _, req := range []struct{ method, path, body string }{{"PUT", "/log-level", "debug"}, {"POST", "/shutdown", ""}} {
		code, body := rawAdminRequest(t, connect(podIP), req.method, req.path, req.body)
		if code != http.StatusForbidden || !strings.Contains(body, "loopback") {
			t.Errorf("%s %s from %s: %d %q, want 403 naming loopback", req.method, req.path, podIP, code, body)
		}
	}
	if level.Level() != slog.LevelInfo || p.draining.Load() {
		t.Fatalf("refused requests changed the proxy: level %v, draining %v", level.Level(), p.draining.Load())
	}
	if code, body := rawAdminRequest(t, connect(podIP), "GET", "/log-level", ""); code != http.StatusOK {
		t.Errorf("GET /log-level from %s: %d %q, want 200 (reading is open)", podIP, code, body)
	}
	if code, body := rawAdminRequest(t, connect("127.0.0.1"), "PUT", "/log-level", "warn"); code != http.StatusOK || level.Level() != slog.LevelWarn {
		t.Errorf("PUT /log-level from loopback: %d %q, level %v; want 200 and warn", code, body, level.Level())
	}
	for id, want := range map[string]int{testControllerID: http.StatusOK, "spiffe://cluster.local/ns/demo/sa/books": http.StatusForbidden} {
		tcfg := newProvider(t, ca, id).ClientConfig(testWebID)
		tcfg.NextProtos = []string{"http/1.1"}
		c := tls.Client(connect(podIP), tcfg)
		if code, body := rawAdminRequest(t, c, "PUT", "/log-level", "error"); code != want {
			t.Errorf("PUT /log-level over mTLS as %s from %s: %d %q, want %d", id, podIP, code, body, want)
		}
	}
	if level.Level() != slog.LevelError {
		t.Errorf("level %v after the controller's PUT error", level.Level())
	}
}

// newPodNetns moves the calling (locked) thread into a new network
// namespace with loopback up and podIP on a veth interface (its peer stays
// in the namespace: nothing leaves it).
func newPodNetns() error {
	if err := syscall.Unshare(syscall.CLONE_NEWNET); err != nil {
		return fmt.Errorf("unshare: %w", err)
	}
	for _, args := range [][]string{
		{"link", "set", "lo", "up"},
		{"link", "add", "eth0", "type", "veth", "peer", "name", "eth1"},
		{"addr", "add", podIP + "/32", "dev", "eth0"},
		{"link", "set", "eth0", "up"},
		{"link", "set", "eth1", "up"},
	} {
		// Children forked from this locked thread share its namespace.
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %v: %v\n%s", args, err, out)
		}
	}
	return nil
}
