package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/detect"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

// copyBufSize bounds the memory an opaque stream holds per direction.
const copyBufSize = 16 << 10

// bufPool holds relay and reverse-proxy copy buffers.
type bufPool struct{ pool sync.Pool }

// The pool holds array pointers: Put of a slice then allocates nothing
// (a *[]byte of each slice put would be an allocation per request).
func newBufPool() *bufPool {
	return &bufPool{pool: sync.Pool{New: func() any { return new([copyBufSize]byte) }}}
}

func (b *bufPool) Get() []byte { return b.pool.Get().(*[copyBufSize]byte)[:] }

func (b *bufPool) Put(v []byte) {
	if cap(v) >= copyBufSize {
		b.pool.Put((*[copyBufSize]byte)(v[:copyBufSize]))
	}
}

func (p *Proxy) serveOpaque(dir string, c *servedConn) {
	p.serveOpaqueTLSAware(dir, c, detect.Result{Protocol: detect.Opaque})
}

// serveOpaqueTLSAware relays a connection that is not HTTP to its
// destination: the inbound target, or the original destination (resolved
// for an identity so that meshed peers get mTLS), or, for TLS without an
// original destination, the endpoint of its SNI on port 443.
func (p *Proxy) serveOpaqueTLSAware(dir string, c *servedConn, res detect.Result) {
	defer c.Close()
	info := c.info
	var authority string
	switch {
	case dir == Inbound:
		authority = info.target
	case info.origDst.IsValid():
		authority = info.origDst.String()
	case res.Protocol == detect.TLS && res.SNI != "":
		authority = net.JoinHostPort(res.SNI, "443")
	}
	if authority == "" {
		p.log.Info("no destination for an opaque connection (explicit mode routes only HTTP by authority)",
			"direction", dir, "remote", info.remote)
		p.metrics.Error(dir, "no_destination")
		return
	}
	ep := resolve.Endpoint{Addr: authority}
	var done func(time.Duration, bool)
	if dir == Outbound {
		eps, err := p.resolve(context.Background(), authority, false)
		if err == nil && len(eps) == 0 && p.awaitEndpoints(context.Background(), authority, 0) == nil {
			eps, err = p.resolve(context.Background(), authority, false)
		}
		switch {
		case err == nil && len(eps) > 0:
			ep, done = p.bal.Pick(eps)
		case err == nil || !info.origDst.IsValid():
			p.log.Info("no endpoints for an opaque connection", "authority", authority, "err", err)
			p.metrics.Error(dir, "no_endpoints")
			return
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), p.cfg.ConnectTimeout)
	start := time.Now()
	up, err := p.ups.dial(ctx, dir, ep)
	cancel()
	if done != nil {
		done(time.Since(start), err != nil)
	}
	if err != nil {
		p.log.Info("connecting an opaque connection", "direction", dir, "addr", ep.Addr, "err", err)
		p.metrics.Error(dir, dialErrorReason(err))
		return
	}
	defer up.Close()
	relay(c, up, p.bufs)
}

// relay copies both ways until both directions end. An orderly end (EOF) in
// one direction is passed on as a half-close so that the other direction
// keeps flowing; an error closes both connections at once.
func relay(a, b net.Conn, bufs *bufPool) {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		pipe(b, a, bufs)
	}()
	pipe(a, b, bufs)
	wg.Wait()
}

// pipe copies src to dst and half-closes dst at EOF.
func pipe(dst, src net.Conn, bufs *bufPool) {
	buf := bufs.Get()
	defer bufs.Put(buf)
	_, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, buf)
	if err == nil {
		if cw, ok := dst.(interface{ CloseWrite() error }); ok && cw.CloseWrite() == nil {
			return
		}
	}
	// An error, or no half-close: tear both down (unblocks the other pipe).
	if err != nil && !errors.Is(err, net.ErrClosed) {
		abort(src)
		abort(dst)
	}
	dst.Close()
	src.Close()
}

// abort closes with a reset (SO_LINGER 0) where possible so that the peer
// sees the abrupt end the other side saw.
func abort(c net.Conn) {
	for {
		switch v := c.(type) {
		case *net.TCPConn:
			v.SetLinger(0)
			return
		case *servedConn:
			c = v.Conn
		case *meteredConn:
			c = v.Conn
		default:
			return
		}
	}
}

// readerOnly and writerOnly hide ReadFrom/WriteTo so that io.CopyBuffer
// uses the pooled buffer.
type readerOnly struct{ io.Reader }
type writerOnly struct{ io.Writer }
