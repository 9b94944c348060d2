package proxy

import (
	"bufio"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	testWebID        = "spiffe://cluster.local/ns/demo/sa/web"
	testControllerID = "spiffe://cluster.local/ns/conduit/sa/conduit-controller"
)

func TestLoopbackAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:4191":         true,
		"127.9.8.7:1":            true,
		"[::1]:1":                true,
		"[::ffff:127.0.0.1]:1":   true,
		"198.18.0.1:4191":        false,
		"10.0.0.1:1":             false,
		"[2001:db8::1]:1":        false,
		"[::ffff:198.18.0.1]:1":  false,
		"localhost:1":            false, // never a name: RemoteAddr is an address
		"127.0.0.1":              false,
		"":                       false,
		"[fe80::1%lo]:1":         false,
		"0.0.0.0:1":              false,
		"[::]:1":                 false,
		"127.0.0.1:1:2":          false,
		"127.0.0.1.example.com:": false,
	} {
		if got := loopbackAddr(addr); got != want {
			t.Errorf("loopbackAddr(%q) = %v, want %v", addr, got, want)
		}
	}
}

// rawAdminRequest sends one HTTP/1.1 request on c and returns the status
// code and body.
func rawAdminRequest(t *testing.T, c net.Conn, method, path, body string) (int, string) {
	t.Helper()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	req, _ := http.NewRequest(method, "http://admin"+path, strings.NewReader(body))
	req.Close = true
	if err := req.Write(c); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestAdminStateChangesOverTLS: on the admin port's mTLS side only the
// controller's identity may change the log level or shut the proxy down;
// another workload's valid mesh certificate gets 403 even on loopback, and
// so does everyone when the proxy knows no controller identity. Reads stay
// open to every verified peer.
func TestAdminStateChangesOverTLS(t *testing.T) {
	ca := newTestCA(t)
	server := newProvider(t, ca, testWebID)
	tests := []struct {
		name, controllerID, clientID string
		want                         int
	}{
		{"the controller", testControllerID, testControllerID, http.StatusOK},
		{"another workload", testControllerID, "spiffe://cluster.local/ns/demo/sa/books", http.StatusForbidden},
		{"the proxy's own identity", testControllerID, testWebID, http.StatusForbidden},
		{"no controller identity configured", "", testControllerID, http.StatusForbidden},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			level := new(slog.LevelVar)
			p := startProxy(t, Config{InboundTarget: "127.0.0.1:1", TLS: server, ControllerID: tc.controllerID, LogLevel: level})
			dial := func() net.Conn {
				cfg := newProvider(t, ca, tc.clientID).ClientConfig(testWebID)
				cfg.NextProtos = []string{"http/1.1"}
				c, err := tls.Dial("tcp", p.AdminAddr(), cfg)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				return c
			}
			if code, body := rawAdminRequest(t, dial(), "GET", "/log-level", ""); code != http.StatusOK || body != "info\n" {
				t.Errorf("GET /log-level: %d %q, want 200", code, body)
			}
			code, body := rawAdminRequest(t, dial(), "PUT", "/log-level", "debug")
			if code != tc.want {
				t.Errorf("PUT /log-level: %d %q, want %d", code, body, tc.want)
			}
			if wantLevel := map[bool]slog.Level{true: slog.LevelDebug, false: slog.LevelInfo}[tc.want == http.StatusOK]; level.Level() != wantLevel {
				t.Errorf("level is %v after PUT /log-level answered %d", level.Level(), code)
			}
			if tc.want == http.StatusForbidden {
				if code, body := rawAdminRequest(t, dial(), "POST", "/shutdown", ""); code != http.StatusForbidden {
					t.Errorf("POST /shutdown: %d %q, want 403", code, body)
				}
				if code, _ := adminDo(t, p, "GET", "/live", ""); code != http.StatusOK {
					t.Errorf("the proxy stopped serving after a refused shutdown: /live %d", code)
				}
			}
		})
	}
}
