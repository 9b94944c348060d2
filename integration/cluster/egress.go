package cluster

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// egressGuard takes the API server's traffic to the cluster network — the
// webhooks and aggregated APIs it calls through Services, the kubelets it
// asks for logs, exec and port-forward, the services/pods proxy — through its
// egress selector (an HTTP CONNECT proxy on a Unix socket) and refuses every
// connection. On the loopback cluster those addresses (ClusterIPs in
// 10.96.0.0/16, kwok's pod and node IPs) belong to no one here: dialled,
// they would send packets off the machine. Each refused target is recorded.
// A test may route a target to a local listener instead (RouteEgress): a
// webhook's Service to the webhook it runs on loopback.
type egressGuard struct {
	ln     net.Listener
	config string // the API server's --egress-selector-config-file
	done   chan struct{}

	mu      sync.Mutex
	refused []string
	routes  map[string]string // CONNECT target → local address
}

// startEgressGuard listens on a Unix socket in dir and writes next to it
// the EgressSelectorConfiguration that sends the API server's "cluster"
// egress there (config).
func startEgressGuard(dir string) (*egressGuard, error) {
	sock := filepath.Join(dir, "egress.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, fmt.Errorf("egress guard: %w", err)
	}
	cfg := filepath.Join(dir, "egress-selector.yaml")
	yaml := fmt.Sprintf(`apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: %s
`, sock)
	if err := os.WriteFile(cfg, []byte(yaml), 0o600); err != nil {
		ln.Close() //nolint:errcheck // reported through err
		return nil, fmt.Errorf("egress guard: %w", err)
	}
	g := &egressGuard{ln: ln, config: cfg, done: make(chan struct{}), routes: map[string]string{}}
	go g.serve()
	return g, nil
}

func (g *egressGuard) serve() {
	defer close(g.done)
	for {
		conn, err := g.ln.Accept()
		if err != nil {
			return // closed by stop
		}
		go g.serveConn(conn)
	}
}

// serveConn reads one CONNECT request: a routed target is connected to
// its local address, any other is refused (403) and recorded.
func (g *egressGuard) serveConn(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // a stuck peer is dropped either way
	br := bufio.NewReader(conn)
	target, local, routed := "(unreadable request)", "", false
	req, err := http.ReadRequest(br)
	g.mu.Lock()
	if err == nil {
		target = req.Method + " " + req.Host
		local, routed = g.routes[req.Host]
		routed = routed && req.Method == http.MethodConnect
	}
	if !routed {
		g.refused = append(g.refused, target)
	}
	g.mu.Unlock()
	if routed {
		g.splice(conn, br, local)
		return
	}
	const body = "conduit's test cluster refuses egress to the cluster network: no address there is reachable from here\n"
	fmt.Fprintf(conn, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
}

// splice connects conn (whose reader is br) to the local address.
func (g *egressGuard) splice(conn net.Conn, br *bufio.Reader, local string) {
	up, err := net.DialTimeout("tcp", local, 5*time.Second)
	if err != nil {
		fmt.Fprint(conn, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
		return
	}
	defer up.Close()
	conn.SetDeadline(time.Time{}) //nolint:errcheck // best effort
	if _, err := fmt.Fprint(conn, "HTTP/1.1 200 Connection established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() { io.Copy(up, br); up.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()      //nolint:errcheck // ends with either side
	go func() { io.Copy(conn, up); conn.(*net.UnixConn).CloseWrite(); done <- struct{}{} }() //nolint:errcheck // ends with either side
	<-done
	<-done
}

// route sends CONNECTs to target ("10.96.0.12:443") to local, until the
// returned function is called.
func (g *egressGuard) route(target, local string) func() {
	g.mu.Lock()
	g.routes[target] = local
	g.mu.Unlock()
	return func() {
		g.mu.Lock()
		delete(g.routes, target)
		g.mu.Unlock()
	}
}

// Refused lists the targets refused so far ("CONNECT 10.96.0.12:443").
func (g *egressGuard) Refused() []string {
	g.mu.Lock()
	defer g.mu.Unlock()
	return append([]string(nil), g.refused...)
}

func (g *egressGuard) stop() {
	if err := g.ln.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return
	}
	<-g.done
}
