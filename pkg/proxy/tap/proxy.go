package tap

import (
	"context"
	"errors"
	"net/http"
	"net/netip"
	"strconv"
	"sync"

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

// RequestStartedFields implements proxy.FieldObserver: the HTTP/1.1 fast
// path's requests, encoded straight from the fields it parsed.
func (s *Server) RequestStartedFields(method, path []byte, header []proxy.Field, info proxy.RequestInfo) proxy.FieldObservation {
	if len(*s.subs.Load()) == 0 {
		return nil
	}
	ri := infos.Get().(*RequestInfo)
	defer func() { *ri = RequestInfo{}; infos.Put(ri) }()
	*ri = RequestInfo{
		Direction: info.Direction, Method: methodString(method), Scheme: "http", Authority: info.Authority,
		Path: string(path), Fields: header, Source: info.Source, TLS: info.TLS,
		ClientID: info.ClientID, ServerID: info.ServerID, DstLabels: info.DstLabels,
	}
	if header == nil {
		ri.Fields = []proxy.Field{} // not nil: no header at all, rather than Header
	}
	if ap, err := netip.ParseAddrPort(info.Target); err == nil {
		ri.Destination = ap
	}
	ro := s.Request(ri)
	if ro == nil {
		return nil
	}
	return ro.(*request)
}

// infos recycles the RequestInfo the fast path's requests are matched with
// (matchers take a pointer, so it would not stay on the stack).
var infos = sync.Pool{New: func() any { return new(RequestInfo) }}

// methods are the common request methods, whose names methodString
// returns without allocating.
var methods = [...]string{http.MethodGet, http.MethodPost, http.MethodPut, http.MethodDelete,
	http.MethodHead, http.MethodPatch, http.MethodOptions}

func methodString(m []byte) string {
	for _, name := range methods {
		if string(m) == name {
			return name
		}
	}
	return string(m)
}

// ResponseStartedFields implements proxy.FieldObservation.
func (r *request) ResponseStartedFields(status int, header []proxy.Field) {
	if header == nil {
		header = []proxy.Field{}
	}
	r.response(status, nil, header)
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

var _ proxy.FieldObserver = (*Server)(nil)
