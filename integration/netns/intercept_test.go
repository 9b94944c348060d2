//go:build linux

package netns_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Ports of the proxy inside the pod namespace (init's and run's defaults).
const (
	inboundPort  = 4143
	outboundPort = 4140
	adminAddr    = "127.0.0.1:4191"
)

type response struct {
	status string
	body   string
}

// httpGet sends one HTTP/1.1 GET to addr from inside ns.
func httpGet(ns, addr, path, host string) (response, error) {
	c, err := dial(ns, addr)
	if err != nil {
		return response{}, err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if host == "" {
		host = addr
	}
	if _, err := fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", path, host); err != nil {
		return response{}, err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		return response{}, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return response{status: resp.Status, body: string(body)}, err
}

// tcpRoundTrip sends one line over raw TCP from inside ns and returns the
// answer line and the client's local address.
func tcpRoundTrip(ns, addr, line string) (answer, local string, err error) {
	c, err := dial(ns, addr)
	if err != nil {
		return "", "", err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, line+"\n"); err != nil {
		return "", "", err
	}
	answer, err = bufio.NewReader(c).ReadString('\n')
	return strings.TrimSpace(answer), c.LocalAddr().String(), err
}

// serveHTTP answers every request with "remote=<the peer address it saw>".
func serveHTTP(t *testing.T, ln net.Listener) {
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "remote=%s", r.RemoteAddr)
		}),
		ReadHeaderTimeout: 5 * time.Second,
	}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
}

// serveTCP answers every line with "remote=<peer address> got=<line>".
func serveTCP(t *testing.T, ln net.Listener) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(10 * time.Second))
				line, err := bufio.NewReader(c).ReadString('\n')
				if err != nil {
					return
				}
				fmt.Fprintf(c, "remote=%s got=%s\n", c.RemoteAddr(), strings.TrimSpace(line))
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

func port(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// TestInterception is the end-to-end check of transparent mode, once per
// back end: after `conduit-proxy init` and `conduit-proxy run` (as the proxy
// user) inside a pod namespace, connections to arbitrary ports in both
// directions go through the proxy, are counted in /metrics and reach their
// original destination, which the proxy reads with SO_ORIGINAL_DST. The
// nftables run has no program on init's PATH, like the release image.
func TestInterception(t *testing.T) {
	requireRoot(t)
	bin := buildProxy(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			requireBackend(t, b.mode)
			testInterception(t, bin, b.mode, b.noPrograms, b.summary)
		})
	}
}

// testInterception runs the scenario with the redirect installed in mode.
func testInterception(t *testing.T, bin, mode string, noPrograms bool, summary string) {
	p := newPair(t)

	// Servers: on the peer (for outbound traffic) and in the pod (the app,
	// for inbound traffic), on ports nobody chose in advance.
	peerHTTP := listen(t, p.peer, peerIP+":0")
	peerTCP := listen(t, p.peer, peerIP+":0")
	peerSkipped := listen(t, p.peer, peerIP+":0")
	appHTTP := listen(t, p.pod, "0.0.0.0:0")
	appTCP := listen(t, p.pod, "0.0.0.0:0")
	serveHTTP(t, peerHTTP)
	serveTCP(t, peerTCP)
	serveTCP(t, peerSkipped)
	serveHTTP(t, appHTTP)
	serveTCP(t, appTCP)

	out, err := initIn(t, p.pod, bin, noPrograms, mode, "--skip-outbound-ports", strconv.Itoa(port(peerSkipped)))
	if err != nil {
		t.Fatalf("conduit-proxy init: %v\n%s", err, out)
	}
	if !strings.Contains(out, summary) {
		t.Fatalf("conduit-proxy init printed %q, want %q", out, summary)
	}
	exited := startIn(t, p.pod, proxyUID, bin, "run",
		"--inbound-listen", fmt.Sprintf("0.0.0.0:%d", inboundPort),
		"--outbound-listen", fmt.Sprintf("127.0.0.1:%d", outboundPort),
		"--admin-listen", adminAddr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	waitReady(ctx, t, p.pod, adminAddr, exited)

	type counts struct{ tcpIn, tcpOut, reqIn, reqOut float64 }
	read := func(t *testing.T) counts {
		t.Helper()
		r, err := httpGet(p.pod, adminAddr, "/metrics", "")
		if err != nil || !strings.HasPrefix(r.status, "200") {
			t.Fatalf("GET /metrics: %v %v", r.status, err)
		}
		m := r.body
		// Like Linkerd's, TCP metrics may be split by peer="src" (the
		// accepted connection) and peer="dst" (the one the proxy made):
		// count the accepted ones.
		src := ""
		if strings.Contains(m, `peer="src"`) {
			src = `peer="src"`
		}
		return counts{
			tcpIn:  metricSum(m, "tcp_open_total", `direction="inbound"`, src),
			tcpOut: metricSum(m, "tcp_open_total", `direction="outbound"`, src),
			reqIn:  metricSum(m, "request_total", `direction="inbound"`),
			reqOut: metricSum(m, "request_total", `direction="outbound"`),
		}
	}

	tests := []struct {
		name string
		// send makes one connection and checks what the far end saw.
		send func(t *testing.T)
		want counts // added to the counters
	}{
		{
			name: "outbound HTTP to the peer",
			send: func(t *testing.T) {
				addr := hostPort(peerIP, port(peerHTTP))
				r, err := httpGet(p.pod, addr, "/hello", "")
				if err != nil || !strings.HasPrefix(r.status, "200") {
					t.Fatalf("GET %s from the pod: %v %v", addr, r, err)
				}
				if !strings.HasPrefix(r.body, "remote="+podIP+":") {
					t.Errorf("peer saw %q, want a connection from the pod %s", r.body, podIP)
				}
			},
			want: counts{tcpOut: 1, reqOut: 1},
		},
		{
			name: "outbound TCP to the peer",
			send: func(t *testing.T) {
				addr := hostPort(peerIP, port(peerTCP))
				answer, local, err := tcpRoundTrip(p.pod, addr, "ping")
				if err != nil {
					t.Fatalf("TCP to %s from the pod: %v", addr, err)
				}
				if !strings.HasSuffix(answer, "got=ping") || !strings.HasPrefix(answer, "remote="+podIP+":") {
					t.Fatalf("peer answered %q, want the line back from %s", answer, podIP)
				}
				if strings.HasPrefix(answer, "remote="+local+" ") {
					t.Errorf("peer saw the client's own socket %s: the connection was not proxied", local)
				}
			},
			want: counts{tcpOut: 1},
		},
		{
			name: "outbound to a skipped port goes direct",
			send: func(t *testing.T) {
				addr := hostPort(peerIP, port(peerSkipped))
				answer, local, err := tcpRoundTrip(p.pod, addr, "direct")
				if err != nil {
					t.Fatalf("TCP to %s from the pod: %v", addr, err)
				}
				if want := "remote=" + local + " got=direct"; answer != want {
					t.Errorf("peer answered %q, want %q (the client's own socket, not the proxy's)", answer, want)
				}
			},
		},
		{
			name: "inbound HTTP from the peer",
			send: func(t *testing.T) {
				addr := hostPort(podIP, port(appHTTP))
				r, err := httpGet(p.peer, addr, "/", "")
				if err != nil || !strings.HasPrefix(r.status, "200") {
					t.Fatalf("GET %s from the peer: %v %v", addr, r, err)
				}
				if strings.HasPrefix(r.body, "remote="+peerIP+":") {
					t.Errorf("app saw %q: the peer reached it directly, not through the proxy", r.body)
				}
			},
			want: counts{tcpIn: 1, reqIn: 1},
		},
		{
			name: "inbound TCP from the peer",
			send: func(t *testing.T) {
				addr := hostPort(podIP, port(appTCP))
				answer, _, err := tcpRoundTrip(p.peer, addr, "hi")
				if err != nil {
					t.Fatalf("TCP to %s from the peer: %v", addr, err)
				}
				if !strings.HasSuffix(answer, "got=hi") || strings.HasPrefix(answer, "remote="+peerIP+":") {
					t.Errorf("app answered %q, want the line back through the proxy", answer)
				}
			},
			want: counts{tcpIn: 1},
		},
		{
			name: "the app calling its own pod IP goes inbound",
			send: func(t *testing.T) {
				addr := hostPort(podIP, port(appTCP))
				answer, local, err := tcpRoundTrip(p.pod, addr, "self")
				if err != nil {
					t.Fatalf("TCP to %s from the pod: %v", addr, err)
				}
				if !strings.HasSuffix(answer, "got=self") || strings.HasPrefix(answer, "remote="+local+" ") {
					t.Errorf("app answered %q to %s, want the line back through the proxy", answer, local)
				}
			},
			want: counts{tcpIn: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := read(t)
			tt.send(t)
			// The proxy counts a connection when it opens and a request
			// when it completes; give it a moment to finish its bookkeeping.
			var got counts
			deadline := time.Now().Add(10 * time.Second)
			for {
				after := read(t)
				got = counts{after.tcpIn - before.tcpIn, after.tcpOut - before.tcpOut, after.reqIn - before.reqIn, after.reqOut - before.reqOut}
				if got == tt.want || time.Now().After(deadline) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
			if got != tt.want {
				t.Errorf("counter increase = %+v, want %+v", got, tt.want)
			}
		})
	}
}

// waitReady polls the proxy's /ready inside ns.
func waitReady(ctx context.Context, t *testing.T, ns, admin string, exited <-chan struct{}) {
	t.Helper()
	for {
		body, err := httpGet(ns, admin, "/ready", "")
		if err == nil && strings.HasPrefix(body.status, "200") {
			return
		}
		select {
		case <-exited:
			t.Fatalf("proxy exited before it was ready (its output is below)")
		case <-ctx.Done():
			t.Fatalf("proxy not ready at %s in %s: last answer %v %v", admin, ns, body, err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// metricSum adds the samples of metric whose labels include every one of
// labels (`direction="inbound"`, ...).
func metricSum(text, metric string, labels ...string) float64 {
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		if !strings.HasPrefix(line, metric+"{") && !strings.HasPrefix(line, metric+" ") {
			continue
		}
		ok := true
		for _, l := range labels {
			if l != "" && !strings.Contains(line, l) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		fields := strings.Fields(line)
		if v, err := strconv.ParseFloat(fields[len(fields)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func hostPort(ip string, port int) string { return net.JoinHostPort(ip, strconv.Itoa(port)) }
