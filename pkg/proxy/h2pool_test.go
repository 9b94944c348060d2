package proxy

import (
	"fmt"
	"io"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/internal/testenv"
)

// poolBackend is an h2c backend that counts the connections its requests
// came on, and holds each /hold request until release is closed.
type poolBackend struct {
	addr    string
	release chan struct{}
	mu      sync.Mutex
	held    int
	conns   map[string]int // requests by client address
}

func startPoolBackend(t *testing.T) *poolBackend {
	b := &poolBackend{release: make(chan struct{}), conns: map[string]int{}}
	b.addr = startHTTPBackend(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.mu.Lock()
		b.conns[r.RemoteAddr]++
		if r.URL.Path == "/hold" {
			b.held++
		}
		b.mu.Unlock()
		if r.URL.Path == "/hold" {
			select {
			case <-b.release:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	t.Cleanup(func() {
		select {
		case <-b.release:
		default:
			close(b.release)
		}
	})
	return b
}

// state returns the requests held and the requests per connection.
func (b *poolBackend) state() (held int, perConn []int) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, n := range b.conns {
		perConn = append(perConn, n)
	}
	return b.held, perConn
}

// h2UpConns returns how many pooled upstream HTTP/2 connections p has,
// and whether a dial is under way.
func h2UpConns(p *Proxy) (n int, dialing bool) {
	p.h2Ups.mu.Lock()
	defer p.h2Ups.mu.Unlock()
	for _, l := range p.h2Ups.m {
		n += len(l)
	}
	return n, len(p.h2Ups.dials) > 0
}

// TestH2UpstreamPool: streams to one endpoint use one upstream connection
// while a client sends one request at a time; while every connection
// has a stream in flight the next stream dials another (without waiting
// for it), up to H2ConnsPerEndpoint, and streams go to the connection
// that carries the fewest.
func TestH2UpstreamPool(t *testing.T) {
	for _, max := range []int{1, 4} {
		t.Run(fmt.Sprintf("max=%d", max), func(t *testing.T) {
			b := startPoolBackend(t)
			p := startProxy(t, Config{InboundTarget: b.addr, H2ConnsPerEndpoint: max})
			c := newH2CClient(t)
			get := func(path string) error {
				resp, err := c.Get("http://" + p.InboundAddr() + path)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				if _, err := io.ReadAll(resp.Body); err != nil {
					return err
				}
				if resp.StatusCode != http.StatusOK {
					return fmt.Errorf("GET %s: %s", path, resp.Status)
				}
				return nil
			}
			for range 10 {
				if err := get("/"); err != nil {
					t.Fatal(err)
				}
			}
			if _, perConn := b.state(); len(perConn) != 1 {
				t.Fatalf("10 requests one at a time came on %d upstream connections, want 1", len(perConn))
			}

			// Held requests, one after another: each is in flight when
			// the next arrives.
			const holds = 8
			errs := make(chan error, holds)
			for i := range holds {
				go func() { errs <- get("/hold") }()
				testenv.Eventually(t, 10*time.Second, time.Millisecond, func() error {
					if held, _ := b.state(); held < i+1 {
						return fmt.Errorf("%d requests held, want %d", held, i+1)
					}
					if _, dialing := h2UpConns(p); dialing {
						return fmt.Errorf("a dial is under way")
					}
					return nil
				})
			}
			n, _ := h2UpConns(p)
			_, perConn := b.state()
			if n != max || len(perConn) != max {
				t.Errorf("%d pooled upstream connections, %d seen by the backend; want %d", n, len(perConn), max)
			}
			for _, k := range perConn {
				if k == 0 {
					t.Errorf("requests per connection %v: one carried none", perConn)
				}
			}
			close(b.release)
			for range holds {
				if err := <-errs; err != nil {
					t.Error(err)
				}
			}
			t.Logf("requests per upstream connection: %v", perConn)
		})
	}
}
