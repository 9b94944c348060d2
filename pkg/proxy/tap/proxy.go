package tap

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"

	"github.com/conduitmesh/conduit/pkg/proxy"
)

// HTTP/2 RST_STREAM codes reported for streams that failed.
const (
	resetInternalError = 0x2
	resetCancel        = 0x8
)

// RequestStarted implements proxy.Observer, the proxy's tap seam.
func (s *Server) RequestStarted(r *http.Request, info proxy.RequestInfo) proxy.Observation {
	if len(*s.subs.Load()) == 0 {
		return nil
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	ri := RequestInfo{
		Direction: info.Direction, Method: r.Method, Scheme: scheme, Authority: info.Authority,
		Path: r.URL.Path, Header: r.Header, Source: info.Source, TLS: info.TLS,
		ClientID: info.ClientID, ServerID: info.ServerID, DstLabels: info.DstLabels,
	}
	if ap, err := netip.ParseAddrPort(info.Target); err == nil {
		ri.Destination = ap
	}
	ro := s.Request(&ri)
	if ro == nil {
		return nil
	}
	return ro.(*request)
}

// ResponseStarted implements proxy.Observation.
func (r *request) ResponseStarted(status int, header http.Header) {
	r.Response(status, header)
}

// Ended implements proxy.Observation.
func (r *request) Ended(e proxy.EndInfo) {
	if r.rsp.Load() == 0 && e.Status != 0 {
		r.Response(e.Status, nil) // the proxy answered itself, or headers were never observed
	}
	grpcStatus := -1
	if e.GRPCStatus != "" {
		if n, err := strconv.Atoi(e.GRPCStatus); err == nil && n >= 0 {
			grpcStatus = n
		}
	}
	var reset uint32
	switch {
	case e.Err == nil:
	case errors.Is(e.Err, context.Canceled):
		reset = resetCancel
	default:
		reset = resetInternalError
	}
	r.End(grpcStatus, e.ResponseBytes, reset)
}

var _ proxy.Observer = (*Server)(nil)
