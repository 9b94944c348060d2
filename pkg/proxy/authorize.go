package proxy

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/detect"
	"github.com/conduitmesh/conduit/pkg/proxy/metrics"
)

// Inbound authorization (issue 13): every inbound connection and request is
// decided by the policy of its port (Config.Policy, fed by the
// controller's InboundPolicies). Opaque connections are decided once, after
// the mTLS handshake names the client; HTTP requests one by one, on both
// HTTP paths, before they are forwarded. A denied request gets 403 (404
// when the port's routes match nothing; gRPC: PERMISSION_DENIED or
// UNIMPLEMENTED) with the reason, which names the server or route, in the
// conduit-proxy-error header; a denied connection is closed.

// authzConn is what a decision needs of the connection.
func (info *connInfo) authzConn() authz.Conn {
	return authz.Conn{Client: info.remote.Addr(), TLS: info.tls, Identity: info.clientID}
}

// policy returns the policy of info's inbound port, nil when the proxy
// enforces none.
func (p *Proxy) policy(info *connInfo) *authz.Server {
	if p.cfg.Policy == nil || info.dir != Inbound {
		return nil
	}
	srv, _ := p.cfg.Policy.Lookup(info.port)
	return srv
}

// authorizeRequest decides an inbound HTTP request: the decision (zero
// when no policy applies) and, when it refuses, the answer to make.
func (p *Proxy) authorizeRequest(info *connInfo, r authz.Request) (authz.Decision, *proxyError) {
	srv := p.policy(info)
	if srv == nil {
		return authz.Decision{}, nil
	}
	d := srv.AllowRequest(info.authzConn(), r)
	p.countAuthz(info, false, d)
	if d.Allowed {
		return d, nil
	}
	e := &proxyError{status: d.Status, reason: "unauthorized", msg: d.Reason}
	if d.Status == http.StatusNotFound {
		e.reason = "no_route"
	}
	return d, e
}

// admitConn decides an inbound opaque connection.
func (p *Proxy) admitConn(info *connInfo) bool {
	srv := p.policy(info)
	if srv == nil {
		return true
	}
	d := srv.AllowConn(info.authzConn())
	p.countAuthz(info, true, d)
	if !d.Allowed {
		p.log.Info("connection refused by policy", "remote", info.remote, "port", info.port, "reason", d.Reason)
		p.metrics.Error(Inbound, "unauthorized")
	}
	return d.Allowed
}

// refuseNotHTTP refuses a connection to a port whose Server declares HTTP
// (HTTP/1, HTTP/2 or gRPC) and whose first bytes are no HTTP/1.0, HTTP/1.1
// or HTTP/2 request. Relayed as opaque TCP under the port's connection
// authorizations, it would pass the port's routes: the application may
// still read it as HTTP (some servers skip empty lines before a request
// line, for one).
// The client gets a 400 naming the Server (nothing after a TLS
// ClientHello, which cannot read it).
func (p *Proxy) refuseNotHTTP(c net.Conn, info *connInfo, srv *authz.Server, res detect.Result) {
	name, proto := srv.Ref().Name, srv.Protocol()
	msg := fmt.Sprintf("server %s declares %s: this connection is not HTTP/1.0, HTTP/1.1 or HTTP/2", name, proto)
	p.log.Info("connection refused: not the protocol its port declares", "remote", info.remote, "port", info.port, "server", name, "protocol", proto, "detected", res.Protocol)
	p.metrics.Error(Inbound, "not_http")
	if res.Protocol == detect.TLS {
		return
	}
	// Best effort: the connection is closed next, whatever happens.
	_ = c.SetWriteDeadline(time.Now().Add(time.Second))
	_ = writeSimple(bufio.NewWriterSize(c, 512), http.StatusBadRequest, msg, msg)
}

func (p *Proxy) countAuthz(info *connInfo, tcp bool, d authz.Decision) {
	p.metrics.Authz(metrics.AuthzLabels{
		TCP: tcp, Allowed: d.Allowed, TargetAddr: info.target, TLS: info.tls, ClientID: info.clientID,
		SrvKind: d.Server.Kind, SrvName: d.Server.Name,
		RouteKind: d.Route.Kind, RouteName: d.Route.Name,
		AuthzKind: d.Authz.Kind, AuthzName: d.Authz.Name,
	})
}

// inboundRouted is l with, for an inbound request, the route labels of the
// policy route it matched, when its port has routes (a port without routes
// has the {default, default} route, and its series no route labels, as an
// outbound request no route matches). Only the series take them: to tap,
// an inbound request's policy route is its authorization's.
func inboundRouted(l metrics.HTTPLabels, d *authz.Decision) metrics.HTTPLabels {
	switch d.Route.Kind {
	case "", "default":
		return l
	}
	l.RouteKind, l.RouteName = d.Route.Kind, d.Route.Name
	return l
}
