package proxy

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
)

// adminServer serves /metrics, /ready, /live, POST /shutdown and
// GET/PUT /log-level, plus Config.AdminRoutes (tap). It speaks HTTP/1.1 and
// h2c in plaintext and, on connections that start a TLS handshake (see
// adminListener), HTTP/2 and HTTP/1.1 over mTLS with the proxy's identity.
func (p *Proxy) adminServer() *http.Server {
	if p.adminLn == nil {
		return nil
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", metrics.ContentType)
		p.metrics.WriteTo(w)
		for _, extra := range p.cfg.ExtraMetrics {
			if err := extra(w); err != nil {
				p.log.Debug("writing extra metrics", "err", err)
			}
		}
	})
	for pattern, h := range p.cfg.AdminRoutes {
		mux.Handle(pattern, h)
	}
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, r *http.Request) {
		if p.draining.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		// With an identity configured, the proxy is ready only once it holds
		// a certificate: before that it can neither accept nor make mTLS.
		if id, ok := p.cfg.TLS.(interface{ Ready() bool }); ok && !id.Ready() {
			http.Error(w, "identity not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready\n")
	})
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "live\n")
	})
	mux.HandleFunc("POST /shutdown", func(w http.ResponseWriter, r *http.Request) {
		if !fromLoopback(r) {
			http.Error(w, "shutdown is only allowed from localhost", http.StatusForbidden)
			return
		}
		p.log.Info("shutdown requested on the admin port", "remote", r.RemoteAddr)
		io.WriteString(w, "shutdown\n")
		p.Shutdown()
	})
	mux.HandleFunc("GET /log-level", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, strings.ToLower(p.cfg.LogLevel.Level().String())+"\n")
	})
	mux.HandleFunc("PUT /log-level", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 64))
		if err != nil {
			http.Error(w, "reading body: "+err.Error(), http.StatusBadRequest)
			return
		}
		var lvl slog.Level
		if err := lvl.UnmarshalText([]byte(strings.TrimSpace(string(body)))); err != nil {
			http.Error(w, "invalid log level "+strings.TrimSpace(string(body))+": want debug, info, warn or error", http.StatusBadRequest)
			return
		}
		p.cfg.LogLevel.Set(lvl)
		p.log.Info("log level changed", "level", lvl)
		io.WriteString(w, strings.ToLower(lvl.String())+"\n")
	})
	var protos http.Protocols
	protos.SetHTTP1(true)
	protos.SetUnencryptedHTTP2(true)
	protos.SetHTTP2(true) // over the *tls.Conn connections of adminListener
	return &http.Server{
		Protocols:         &protos,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
		ErrorLog:          log.New(slogWriter{p.log.With("listener", "admin")}, "", 0),
	}
}

func fromLoopback(r *http.Request) bool {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return false
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// adminSniffTimeout bounds how long a new admin connection may take to send
// its first byte, which tells TLS from plaintext.
const adminSniffTimeout = 5 * time.Second

// tlsRecordHandshake is the first byte of a TLS ClientHello record.
const tlsRecordHandshake = 0x16

// adminALPN are the protocols the admin port offers over TLS: h2 for the
// controller's gRPC tap client, http/1.1 for anything else.
var adminALPN = []string{"h2", "http/1.1"}

// serveAdmin serves srv on the admin listener until srv is shut down or the
// listener fails.
func (p *Proxy) serveAdmin(srv *http.Server) error {
	ln := newAdminListener(p.adminLn, p.adminTLS, p.log)
	defer ln.wait()
	defer ln.Close()
	return srv.Serve(ln)
}

// adminTLS is the configuration of a TLS connection to the admin port: the
// proxy's identity (its ServerConfig requires and verifies a client
// certificate against the trust anchors) offering h2 and http/1.1. It is
// nil while the proxy has no identity.
func (p *Proxy) adminTLS() *tls.Config {
	if p.cfg.TLS == nil {
		return nil
	}
	cfg := p.cfg.TLS.ServerConfig()
	if cfg == nil {
		return nil
	}
	cfg = cfg.Clone()
	cfg.NextProtos = adminALPN
	return cfg
}

// adminListener serves TLS and plaintext on the admin port. Its own accept
// loop hands each connection to a goroutine that reads the first byte
// (within adminSniffTimeout, so a silent client holds only its own
// goroutine); a TLS handshake record gets a *tls.Conn with the proxy's
// identity, which http.Server then handshakes and serves as h2 or
// HTTP/1.1, anything else is served in plaintext as before. Without an
// identity (tlsConfig returns nil) TLS connections are closed.
type adminListener struct {
	ln        net.Listener
	tlsConfig func() *tls.Config
	log       *slog.Logger
	out       *chanListener // sniffed connections, for http.Server

	mu      sync.Mutex            // guards pending
	pending map[net.Conn]struct{} // connections being sniffed, cut short by Close
	wg      sync.WaitGroup        // the accept loop and the sniffing goroutines
}

func newAdminListener(ln net.Listener, tlsConfig func() *tls.Config, log *slog.Logger) *adminListener {
	l := &adminListener{ln: ln, tlsConfig: tlsConfig, log: log, out: newChanListener(ln.Addr()), pending: map[net.Conn]struct{}{}}
	l.wg.Add(1)
	go l.acceptLoop()
	return l
}

func (l *adminListener) acceptLoop() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		c, err := l.ln.Accept()
		if err != nil {
			if l.closed() || errors.Is(err, net.ErrClosed) {
				l.Close()
				return
			}
			// Temporary failures (EMFILE, ...): back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.log.Warn("admin accept failed", "err", err, "retry_in", delay)
			select {
			case <-time.After(delay):
			case <-l.out.done:
				return
			}
			continue
		}
		delay = 0
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			l.sniff(c)
		}()
	}
}

func (l *adminListener) closed() bool {
	select {
	case <-l.out.done:
		return true
	default:
		return false
	}
}

// sniff reads c's first byte and hands c to Accept, as TLS or plaintext.
func (l *adminListener) sniff(c net.Conn) {
	l.mu.Lock()
	if l.closed() {
		l.mu.Unlock()
		c.Close()
		return
	}
	l.pending[c] = struct{}{}
	c.SetReadDeadline(time.Now().Add(adminSniffTimeout))
	l.mu.Unlock()
	var first [1]byte
	_, err := io.ReadFull(c, first[:])
	l.mu.Lock()
	delete(l.pending, c)
	l.mu.Unlock()
	c.SetReadDeadline(time.Time{})
	if err != nil {
		c.Close()
		return
	}
	var conn net.Conn = &servedConn{Conn: c, prefix: first[:]}
	if first[0] == tlsRecordHandshake {
		cfg := l.tlsConfig()
		if cfg == nil {
			l.log.Debug("TLS connection to the admin port refused: the proxy has no identity yet", "remote", c.RemoteAddr())
			c.Close()
			return
		}
		conn = tls.Server(conn, cfg)
	}
	l.out.hand(conn)
}

// Accept returns the next sniffed connection.
func (l *adminListener) Accept() (net.Conn, error) { return l.out.Accept() }

// Close stops accepting and cuts short the connections being sniffed;
// connections already handed out stay open.
func (l *adminListener) Close() error {
	l.mu.Lock()
	l.out.Close()
	for c := range l.pending {
		c.SetReadDeadline(time.Now())
	}
	l.mu.Unlock()
	return l.ln.Close()
}

// wait returns once the accept loop and every sniffing goroutine are done.
func (l *adminListener) wait() { l.wg.Wait() }

func (l *adminListener) Addr() net.Addr { return l.ln.Addr() }
