package proxy

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/identity"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
	"github.com/conduitmesh/conduit/pkg/sniff"
)

// adminServer serves /metrics, /ready, /live, POST /shutdown and
// GET/PUT /log-level, plus Config.AdminRoutes (tap). The requests that change
// state are refused with 403 unless mayChangeState allows them. It speaks HTTP/1.1 and
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
		if err := p.mayChangeState(r); err != nil {
			p.log.Warn("admin request refused", "request", "POST /shutdown", "remote", r.RemoteAddr, "err", err)
			http.Error(w, "shutdown refused: "+err.Error(), http.StatusForbidden)
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
		if err := p.mayChangeState(r); err != nil {
			p.log.Warn("admin request refused", "request", "PUT /log-level", "remote", r.RemoteAddr, "err", err)
			http.Error(w, "log level change refused: "+err.Error(), http.StatusForbidden)
			return
		}
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

// mayChangeState decides who may change the proxy's state on the admin port
// (POST /shutdown, PUT /log-level), which listens on every address of the
// pod: in plaintext only a loopback caller (a container of the pod itself,
// such as a preStop hook); over mTLS only Config.ControllerID. The TLS peer's
// certificate is already verified against the trust anchors by the
// identity's server configuration (adminTLS); here only its name counts, so
// another meshed workload's valid certificate is refused, even on loopback.
func (p *Proxy) mayChangeState(r *http.Request) error {
	if r.TLS != nil {
		id := identity.PeerID(r.TLS.PeerCertificates)
		switch {
		case p.cfg.ControllerID == "":
			return fmt.Errorf("the proxy knows no controller identity (--controller-identity), so only plaintext loopback callers may")
		case id == "":
			return fmt.Errorf("the client certificate has no SPIFFE ID; only %s may", p.cfg.ControllerID)
		case id != p.cfg.ControllerID:
			return fmt.Errorf("identity %s may not; only %s may", id, p.cfg.ControllerID)
		}
		return nil
	}
	if !loopbackAddr(r.RemoteAddr) {
		return fmt.Errorf("plaintext callers must be on loopback, not %s", r.RemoteAddr)
	}
	return nil
}

// loopbackAddr reports whether the host:port addr is a loopback address
// (127.0.0.0/8, ::1, or an IPv4-mapped loopback).
func loopbackAddr(addr string) bool {
	ap, err := netip.ParseAddrPort(addr)
	return err == nil && ap.Addr().Unmap().IsLoopback()
}

// adminSniffTimeout bounds how long a new admin connection may take to send
// its first byte, which tells TLS from plaintext.
const adminSniffTimeout = 5 * time.Second

// adminALPN are the protocols the admin port offers over TLS: h2 for the
// controller's gRPC tap client, http/1.1 for anything else.
var adminALPN = []string{"h2", "http/1.1"}

// serveAdmin serves srv on the admin listener until srv is shut down or the
// listener fails.
func (p *Proxy) serveAdmin(srv *http.Server) error {
	ln := sniff.NewListener(p.adminLn, adminSniffTimeout, p.adminTLS, p.log)
	defer ln.Wait()
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
