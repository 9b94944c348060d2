package proxy

import (
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
)

// adminServer serves /metrics, /ready, /live, POST /shutdown and
// GET/PUT /log-level.
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
	return &http.Server{
		Protocols:         &protos,
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		MaxHeaderBytes:    16 << 10,
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
