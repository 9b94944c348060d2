package cluster

import (
	"bufio"
	"errors"
	"fmt"
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
type egressGuard struct {
	ln   net.Listener
	done chan struct{}

	mu      sync.Mutex
	refused []string
}

// egressConfigFile is the EgressSelectorConfiguration that sends the
// "cluster" egress to the guard.
const egressConfigFile = "egress-selector.yaml"

// startEgressGuard listens on a Unix socket in dir and writes the API
// server's egress selector configuration next to it; its path is what
// --egress-selector-config-file takes.
func startEgressGuard(dir string) (*egressGuard, string, error) {
	sock := filepath.Join(dir, "egress.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		return nil, "", fmt.Errorf("egress guard: %w", err)
	}
	cfg := filepath.Join(dir, egressConfigFile)
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
		return nil, "", fmt.Errorf("egress guard: %w", err)
	}
	g := &egressGuard{ln: ln, done: make(chan struct{})}
	go g.serve()
	return g, cfg, nil
}

func (g *egressGuard) serve() {
	defer close(g.done)
	for {
		conn, err := g.ln.Accept()
		if err != nil {
			return // closed by stop
		}
		go g.refuse(conn)
	}
}

// refuse reads one CONNECT request, records its target and answers 403.
func (g *egressGuard) refuse(conn net.Conn) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second)) //nolint:errcheck // a stuck peer is dropped either way
	target := "(unreadable request)"
	if req, err := http.ReadRequest(bufio.NewReader(conn)); err == nil {
		target = req.Method + " " + req.Host
	}
	g.mu.Lock()
	g.refused = append(g.refused, target)
	g.mu.Unlock()
	const body = "conduit's test cluster refuses egress to the cluster network: no address there is reachable from here\n"
	fmt.Fprintf(conn, "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(body), body)
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
