package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/internal/testenv"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	testpb "google.golang.org/grpc/interop/grpc_testing"
)

// proxyBinary builds conduit-proxy once per test run.
func proxyBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	return testenv.Build(t, "./cmd/conduit-proxy")
}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// proxyProcess is a running conduit-proxy binary.
type proxyProcess struct {
	cmd     *exec.Cmd
	admin   string // the addresses it bound, from its "proxy started" line
	inbound string
	stderr  *testenv.SyncBuffer
	done    chan struct{} // closed when the process has exited
	err     error         // its exit status, set before done is closed
}

// startedLine is the proxy's log line naming the addresses it bound.
var startedLine = regexp.MustCompile(`msg="proxy started" inbound=(\S+) outbound=\S+ admin=(\S+)`)

// startProxyProcess runs the binary with args, its listeners on free
// loopback ports that it picks itself (port 0), reads the addresses it bound
// from its "proxy started" log line (so args must not raise --log-level above
// info) and waits until /ready answers.
func startProxyProcess(t *testing.T, args ...string) *proxyProcess {
	t.Helper()
	cmd := exec.Command(proxyBinary(t), append([]string{"run",
		"--admin-listen", "127.0.0.1:0", "--outbound-listen", "127.0.0.1:0", "--inbound-listen", "127.0.0.1:0"}, args...)...)
	pp := &proxyProcess{cmd: cmd, stderr: &testenv.SyncBuffer{}, done: make(chan struct{})}
	cmd.Stderr = pp.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		pp.err = cmd.Wait()
		close(pp.done)
	}()
	t.Cleanup(func() {
		select {
		case <-pp.done:
		default:
			cmd.Process.Kill()
			<-pp.done
		}
		if t.Failed() {
			t.Logf("proxy stderr:\n%s", pp.stderr.String())
		}
	})
	exited := func() error {
		select {
		case <-pp.done:
			return fmt.Errorf("proxy exited: %v\n%s", pp.err, pp.stderr.String())
		default:
			return nil
		}
	}
	testenv.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		if m := startedLine.FindStringSubmatch(pp.stderr.String()); m != nil {
			pp.inbound, pp.admin = m[1], m[2]
			return nil
		}
		if err := exited(); err != nil {
			t.Fatal(err)
		}
		return fmt.Errorf("no \"proxy started\" line in the proxy's log:\n%s", pp.stderr.String())
	})
	testenv.Eventually(t, 10*time.Second, 20*time.Millisecond, func() error {
		resp, err := http.Get("http://" + pp.admin + "/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
			err = fmt.Errorf("/ready: %s", resp.Status)
		}
		if xerr := exited(); xerr != nil {
			t.Fatal(xerr)
		}
		return fmt.Errorf("proxy not ready: %v", err)
	})
	return pp
}

// setLogLevel changes the proxy's log level on its admin port (PUT /log-level).
func (pp *proxyProcess) setLogLevel(t *testing.T, level string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+pp.admin+"/log-level", strings.NewReader(level))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("PUT /log-level %s: %s %s", level, resp.Status, b)
	}
	resp, err = http.Get("http://" + pp.admin + "/log-level")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if got := strings.TrimSpace(string(b)); got != level {
		t.Fatalf("GET /log-level after PUT %s = %q", level, got)
	}
}

func (pp *proxyProcess) metrics(t *testing.T) string {
	t.Helper()
	resp, err := http.Get("http://" + pp.admin + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func metricValue(text, name string, labels ...string) float64 {
	re := regexp.MustCompile(`^` + regexp.QuoteMeta(name) + `\{([^}]*)\} (\S+)$`)
	var sum float64
	for _, line := range strings.Split(text, "\n") {
		m := re.FindStringSubmatch(line)
		if m == nil {
			continue
		}
		match := true
		for _, l := range labels {
			if !strings.Contains(m[1], l) {
				match = false
			}
		}
		if match {
			v, _ := strconv.ParseFloat(m[2], 64)
			sum += v
		}
	}
	return sum
}

// mixedApp serves HTTP/1.1 and h2c on one port, gRPC on another, and echoes
// TCP on a third.
func mixedApp(t *testing.T) (httpAddr, grpcAddr, tcpAddr string) {
	t.Helper()
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	hl, _ := net.Listen("tcp", "127.0.0.1:0")
	hs := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, r.Proto)
	})}
	go hs.Serve(hl)
	t.Cleanup(func() { hs.Close() })

	gl, _ := net.Listen("tcp", "127.0.0.1:0")
	gs := grpc.NewServer()
	testpb.RegisterTestServiceServer(gs, echoService{})
	go gs.Serve(gl)
	t.Cleanup(gs.Stop)

	tl, _ := net.Listen("tcp", "127.0.0.1:0")
	go func() {
		for {
			c, err := tl.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				io.Copy(c, c)
			}()
		}
	}()
	t.Cleanup(func() { tl.Close() })
	return hl.Addr().String(), gl.Addr().String(), tl.Addr().String()
}

type echoService struct {
	testpb.UnimplementedTestServiceServer
}

func (echoService) UnaryCall(_ context.Context, r *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return &testpb.SimpleResponse{Payload: r.GetPayload()}, nil
}

// TestDoneWhen is the acceptance scenario: a real conduit-proxy
// process in explicit inbound mode carries HTTP/1.1, h2c, gRPC and raw TCP,
// and its /metrics counts exactly that traffic with direction="inbound".
func TestDoneWhen(t *testing.T) {
	httpApp, grpcApp, tcpApp := mixedApp(t)
	const h1, h2, grpcCalls, tcpConns = 7, 5, 4, 3
	type proxyFor struct {
		target string
		pp     *proxyProcess
		in     string
	}
	proxies := map[string]*proxyFor{"http": {target: httpApp}, "grpc": {target: grpcApp}, "tcp": {target: tcpApp}}
	for _, pf := range proxies {
		pf.pp = startProxyProcess(t, "--inbound-target", pf.target)
		pf.in = pf.pp.inbound
	}

	// HTTP/1.1 over one keep-alive connection, then h2c over one connection.
	h1tr := &http.Transport{Proxy: nil}
	defer h1tr.CloseIdleConnections()
	var h2protos http.Protocols
	h2protos.SetUnencryptedHTTP2(true)
	h2tr := &http.Transport{Proxy: nil, Protocols: &h2protos}
	defer h2tr.CloseIdleConnections()
	for i, tc := range []struct {
		tr    *http.Transport
		n     int
		proto string
	}{{h1tr, h1, "HTTP/1.1"}, {h2tr, h2, "HTTP/2.0"}} {
		for range tc.n {
			resp, err := (&http.Client{Transport: tc.tr}).Get("http://" + proxies["http"].in + "/")
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != tc.proto {
				t.Errorf("client %d: the app saw %q, want %q", i, b, tc.proto)
			}
		}
	}

	cc, err := grpc.NewClient(proxies["grpc"].in, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	gc := testpb.NewTestServiceClient(cc)
	for range grpcCalls {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err := gc.UnaryCall(ctx, &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("x")}})
		cancel()
		if err != nil {
			t.Fatal(err)
		}
	}

	for range tcpConns {
		c, err := net.Dial("tcp", proxies["tcp"].in)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(10 * time.Second))
		io.WriteString(c, "\x00raw bytes")
		c.(*net.TCPConn).CloseWrite()
		b, _ := io.ReadAll(c)
		c.Close()
		if string(b) != "\x00raw bytes" {
			t.Errorf("tcp echo %q", b)
		}
	}
	cc.Close()

	checks := []struct {
		pf     *proxyFor
		name   string
		labels []string
		want   float64
	}{
		{proxies["http"], "request_total", nil, h1 + h2},
		{proxies["http"], "response_total", []string{`status_code="200"`, `classification="success"`}, h1 + h2},
		{proxies["http"], "response_latency_ms_bucket", []string{`le="+Inf"`}, h1 + h2},
		{proxies["http"], "response_latency_ms_count", nil, h1 + h2},
		{proxies["http"], "tcp_open_total", []string{`peer="src"`}, 2},
		{proxies["grpc"], "request_total", nil, grpcCalls},
		{proxies["grpc"], "response_total", []string{`grpc_status="0"`, `classification="success"`}, grpcCalls},
		{proxies["grpc"], "response_latency_ms_bucket", []string{`le="+Inf"`}, grpcCalls},
		{proxies["grpc"], "tcp_open_total", []string{`peer="src"`}, 1},
		{proxies["tcp"], "request_total", nil, 0},
		{proxies["tcp"], "tcp_open_total", []string{`peer="src"`}, tcpConns},
		{proxies["tcp"], "tcp_close_total", []string{`peer="src"`}, tcpConns},
		{proxies["tcp"], "tcp_read_bytes_total", []string{`peer="src"`}, tcpConns * float64(len("\x00raw bytes"))},
	}
	deadline := time.Now().Add(5 * time.Second)
	for _, c := range checks {
		labels := append([]string{`direction="inbound"`}, c.labels...)
		for {
			text := c.pf.pp.metrics(t)
			got := metricValue(text, c.name, labels...)
			if got == c.want {
				break
			}
			if time.Now().After(deadline) {
				t.Errorf("proxy for %s: %s%v = %v, want %v\n%s", c.pf.target, c.name, labels, got, c.want, text)
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The latency histogram is cumulative: every bucket is <= the next.
	text := proxies["http"].pp.metrics(t)
	var prev float64
	for _, line := range strings.Split(text, "\n") {
		if strings.HasPrefix(line, "response_latency_ms_bucket{") && strings.Contains(line, `direction="inbound"`) {
			v, _ := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if strings.Contains(line, `le="1"`) {
				prev = 0
			}
			if v < prev {
				t.Errorf("histogram not cumulative at %s", line)
			}
			prev = v
		}
	}
}

// longRequest is how long TestDrainOnSIGTERM's in-flight request takes at
// the application.
const longRequest = 1500 * time.Millisecond

// TestDrainOnSIGTERM sends SIGTERM to a real proxy under steady load: every
// request the proxy accepted completes, new connections are refused, and the
// process exits 0.
func TestDrainOnSIGTERM(t *testing.T) {
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	longArrived := make(chan struct{}) // closed when the long request reaches the application
	var longOnce sync.Once
	app := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d, _ := time.ParseDuration(r.URL.Query().Get("sleep"))
		if d == longRequest {
			longOnce.Do(func() { close(longArrived) })
		}
		time.Sleep(d)
		io.WriteString(w, "ok")
	})}
	go app.Serve(ln)
	defer app.Close()

	pp := startProxyProcess(t, "--inbound-target", ln.Addr().String(), "--shutdown-grace-period", "10s")
	in := pp.inbound

	var (
		mu                sync.Mutex
		ok, refused, lost int
		lostErrs          []string
	)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	// Half the workers speak HTTP/1.1 (keep-alive), half h2c (one shared
	// connection, GOAWAY on drain).
	tr := &http.Transport{Proxy: nil, MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	var h2 http.Protocols
	h2.SetUnencryptedHTTP2(true)
	h2tr := &http.Transport{Proxy: nil, Protocols: &h2}
	defer h2tr.CloseIdleConnections()
	for i := range 8 {
		client := &http.Client{Transport: tr, Timeout: 15 * time.Second}
		if i%2 == 1 {
			client = &http.Client{Transport: h2tr, Timeout: 15 * time.Second}
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				resp, err := client.Get(fmt.Sprintf("http://%s/?sleep=%dms", in, 5+(i*7+n)%40))
				mu.Lock()
				switch {
				case err == nil:
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode == 200 && string(b) == "ok" {
						ok++
					} else {
						lost++
						lostErrs = append(lostErrs, fmt.Sprintf("%d %q", resp.StatusCode, b))
					}
				case isDialRefused(err):
					refused++ // never accepted: the listener is closed
				default:
					lost++
					lostErrs = append(lostErrs, err.Error())
				}
				mu.Unlock()
				if err != nil {
					time.Sleep(5 * time.Millisecond)
				}
			}
		}()
	}
	// The load runs before SIGTERM.
	testenv.Eventually(t, 10*time.Second, 10*time.Millisecond, func() error {
		mu.Lock()
		defer mu.Unlock()
		if ok < 20 {
			return fmt.Errorf("only %d requests completed before SIGTERM, want 20", ok)
		}
		return nil
	})
	// A long request in flight when SIGTERM arrives must still complete.
	long := make(chan error, 1)
	go func() {
		resp, err := http.Get(fmt.Sprintf("http://%s/?sleep=%s", in, longRequest))
		if err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(b) != "ok" {
				err = fmt.Errorf("long request: %d %q", resp.StatusCode, b)
			}
		}
		long <- err
	}()
	select {
	case <-longArrived:
	case err := <-long:
		t.Fatalf("the long request ended before SIGTERM: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the long request did not reach the application within 10s")
	}
	if err := pp.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	var exitErr error
	select {
	case <-pp.done:
		exitErr = pp.err
	case <-time.After(15 * time.Second):
		t.Fatal("proxy did not exit within the grace period")
	}
	close(stop)
	wg.Wait()
	if exitErr != nil {
		t.Errorf("proxy exit: %v, want status 0", exitErr)
	}
	if err := <-long; err != nil {
		t.Errorf("in-flight request lost: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	t.Logf("completed %d, refused after shutdown %d, lost %d", ok, refused, lost)
	if ok < 20 {
		t.Errorf("only %d requests completed: the load did not run", ok)
	}
	if lost > 0 {
		t.Errorf("%d accepted requests were lost: %v", lost, lostErrs)
	}
	if !strings.Contains(pp.stderr.String(), "drained") {
		t.Errorf("no drain in the log:\n%s", pp.stderr.String())
	}
}

func isDialRefused(err error) bool {
	var oe *net.OpError
	return errors.As(err, &oe) && oe.Op == "dial" && errors.Is(err, syscall.ECONNREFUSED)
}
