package proxy

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// unansweredAddr is a loopback address whose connects hang: a listener
// with a backlog of 0, its queue filled and never accepted, so the kernel
// drops the next SYNs.
func unansweredAddr(t *testing.T) string {
	addr, _ := heldListener(t)
	return addr
}

// heldListener is unansweredAddr with a way to answer: open accepts the
// connections that filled the queue and returns the listener, so that the
// next SYN a connect retransmits (after about a second) gets through.
func heldListener(t *testing.T) (addr string, open func() net.Listener) {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	// The file owns fd from here: closed once, by the cleanup (a second
	// close, or the file's finalizer, could close a descriptor number
	// that another test's socket has since been given).
	file := os.NewFile(uintptr(fd), "held")
	t.Cleanup(func() { file.Close() })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr = (&net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: sa.(*syscall.SockaddrInet4).Port}).String()
	var fillers []net.Conn
	for range 8 {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			// The queue is full.
			return addr, func() net.Listener {
				ln, err := net.FileListener(file) // a duplicate of fd
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { ln.Close() })
				for range fillers {
					c, err := ln.Accept()
					if err != nil {
						t.Fatal(err)
					}
					c.Close()
				}
				return ln
			}
		}
		fillers = append(fillers, c)
		t.Cleanup(func() { c.Close() })
	}
	t.Fatalf("%s kept accepting connections", addr)
	return "", nil
}

// TestH2SlowConnectHoldsOnlyItsStream: a request whose upstream connection
// takes long to connect must not hold up the other streams of its client
// connection (the HTTP/2 fast path dials on the stream's own goroutine,
// not on the connection's reader).
func TestH2SlowConnectHoldsOnlyItsStream(t *testing.T) {
	app := startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	p := startProxy(t, Config{ConnectTimeout: 3 * time.Second, Resolver: resolve.Static{
		"app:80":  {{Addr: app}},
		"slow:80": {{Addr: unansweredAddr(t)}},
	}})
	client := newH2CClient(t)
	get := func(host string) (int, error) {
		req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, err
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 {
			return 0, errors.New("not HTTP/2: " + resp.Proto)
		}
		return resp.StatusCode, nil
	}
	if code, err := get("app"); err != nil || code != 200 {
		t.Fatalf("warm-up: %d %v", code, err)
	}
	var mu sync.Mutex
	var order []string
	done := func(s string) {
		mu.Lock()
		order = append(order, s)
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		code, err := get("slow")
		t.Logf("slow: %d %v", code, err)
		if code != http.StatusBadGateway && code != http.StatusGatewayTimeout && code != http.StatusServiceUnavailable {
			t.Errorf("the request to the unanswered endpoint: %d %v, want the proxy's 502/503/504", code, err)
		}
		done("slow")
	}()
	time.Sleep(200 * time.Millisecond) // the slow request's stream is open: its connect hangs
	for range 3 {
		if code, err := get("app"); err != nil || code != 200 {
			t.Errorf("app during the slow connect: %d %v", code, err)
		}
	}
	done("app")
	wg.Wait()
	if order[0] != "app" {
		t.Errorf("requests finished in the order %v: the slow connect held up the connection's other streams", order)
	}
}

// TestH2SlowConnectHoldsTheRequest: what the client sends while its
// stream's upstream connection is dialed (body and trailers) is held and
// passed on once it connects.
func TestH2SlowConnectHoldsTheRequest(t *testing.T) {
	addr, open := heldListener(t)
	p := startProxy(t, Config{ConnectTimeout: 10 * time.Second, Resolver: resolve.Static{"app:80": {{Addr: addr}}}})
	body := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16)
	var resp *http.Response
	var err error
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		req, _ := http.NewRequest("POST", "http://"+p.OutboundAddr()+"/", io.MultiReader(bytes.NewReader(body)))
		req.Host = "app"
		req.Trailer = http.Header{"X-Checksum": nil}
		req.Body = &trailerBody{r: bytes.NewReader(body), set: func() { req.Trailer.Set("X-Checksum", "sum") }}
		resp, err = newH2CClient(t).Do(req)
	}()
	time.Sleep(300 * time.Millisecond) // the request is held by the proxy, its connect hanging
	ln := open()
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	srv := &http.Server{Protocols: &protos, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d %x %s", len(b), sha256.Sum256(b), r.Trailer.Get("X-Checksum"))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	<-sent
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	want := fmt.Sprintf("%d %x sum", len(body), sha256.Sum256(body))
	if resp.StatusCode != 200 || string(got) != want {
		t.Errorf("got %d %q, want 200 %q", resp.StatusCode, got, want)
	}
}

// trailerBody reads r and sets the request's trailer at its end.
type trailerBody struct {
	r   io.Reader
	set func()
}

func (b *trailerBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err == io.EOF && b.set != nil {
		b.set()
		b.set = nil
	}
	return n, err
}

func (b *trailerBody) Close() error { return nil }
