package tap

import (
	"context"
	"errors"
	"strconv"

	"github.com/conduitmesh/conduit/pkg/proxy"
)

// HTTP/2 RST_STREAM codes reported for streams that failed.
const (
	resetInternalError = 0x2
	resetCancel        = 0x8
)

// Ended implements proxy.Observation.
func (r *request) Ended(e proxy.EndInfo) {
	if r.rsp.Load() == 0 && e.Status != 0 {
		// The proxy answered itself, or headers were never observed.
		r.ResponseStarted(&proxy.Response{Status: e.Status})
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
	r.end(grpcStatus, e.ResponseBytes, reset, e.Retries)
}

var _ proxy.Observer = (*Server)(nil)
