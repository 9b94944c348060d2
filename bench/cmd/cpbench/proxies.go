package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire"
	proxyidentity "github.com/conduitmesh/conduit/pkg/proxy/identity"
)

// fleet is the simulated proxies: each has its own connection to the
// controller, made with the proxy's own gRPC client (pkg/proxy/grpcwire,
// over TLS verifying the controller's identity as injected proxies do),
// and keeps the Destination.Get streams a proxy keeps: one for the hot
// service every proxy calls, one for a scale service of its own.
type fleet struct {
	addr string
	tls  *tls.Config // nil: plaintext
	o    options

	proxies []*simProxy

	updates   atomic.Int64 // messages received, all streams
	streamErr atomic.Int64 // streams that ended
	lastErr   atomic.Value // string

	fan atomic.Pointer[fanoutRun]

	// watchers of each scale service that keep its endpoint set: the first
	// proxy of each service.
	obsMu     sync.Mutex
	observers map[int]map[string]bool // service -> addresses
}

// simProxy is one simulated proxy.
type simProxy struct {
	idx    int
	conn   *grpcwire.Conn
	cancel context.CancelFunc
}

func newFleet(addr string, tlsConf *tls.Config, o options) *fleet {
	return &fleet{addr: addr, tls: tlsConf, o: o, observers: map[int]map[string]bool{}}
}

// proxyTLS is the TLS a proxy uses to reach the controller, with no client
// certificate (a proxy presents its own once it has one; the controller
// does not require it).
func proxyTLS(c *controllerProc) *tls.Config {
	return proxyidentity.ControllerTLS(c.anchors, c.identity, func() *tls.Certificate { return nil })
}

// grow connects proxies until there are n, width at a time, and returns
// once every new stream has had its first update.
func (f *fleet) grow(ctx context.Context, n, width int) error {
	from := len(f.proxies)
	if n <= from {
		return nil
	}
	f.proxies = append(f.proxies, make([]*simProxy, n-from)...)
	return parallel(ctx, n-from, width, func(i int) error {
		p, err := f.connect(ctx, from+i)
		if err != nil {
			return err
		}
		f.proxies[from+i] = p
		return nil
	})
}

// connect starts proxy i's streams and waits for their first updates.
func (f *fleet) connect(ctx context.Context, i int) (*simProxy, error) {
	conn, err := grpcwire.New(f.addr, grpcwire.Options{TLS: f.tls, ReadIdleTimeout: 30 * time.Second})
	if err != nil {
		return nil, err
	}
	pctx, cancel := context.WithCancel(context.Background()) // lives until close
	p := &simProxy{idx: i, conn: conn, cancel: cancel}
	svc := i % f.o.services
	ns, name := scaleService(f.o, svc)
	observe := i < f.o.services // the first proxy of each service
	first := make(chan error, 2)
	for _, w := range []struct {
		authority, ns string
		svc           int
	}{
		{serviceAuthority(hotNamespace, hotService), ns, -1},
		{serviceAuthority(ns, name), ns, svc},
	} {
		obsSvc := -1
		if observe {
			obsSvc = w.svc
		}
		go f.watch(pctx, p, w.authority, w.ns, obsSvc, first)
	}
	for range 2 {
		select {
		case err := <-first:
			if err != nil {
				cancel()
				conn.Close()
				return nil, fmt.Errorf("proxy %d: %w", i, err)
			}
		case <-time.After(30 * time.Second):
			cancel()
			conn.Close()
			return nil, fmt.Errorf("proxy %d: no first update within 30s", i)
		case <-ctx.Done():
			cancel()
			conn.Close()
			return nil, ctx.Err()
		}
	}
	return p, nil
}

// watch keeps one Destination.Get stream; first gets nil after the first
// update, or the error that ended the stream before it.
func (f *fleet) watch(ctx context.Context, p *simProxy, authority, ns string, observeSvc int, first chan<- error) {
	token, _ := json.Marshal(map[string]string{"ns": ns})
	req, _ := proto.Marshal(&destinationv1.GetDestination{Authority: authority, ContextToken: string(token)})
	s, err := p.conn.Stream(ctx, destinationv1.Destination_Get_FullMethodName, req)
	if err != nil {
		first <- err
		return
	}
	defer s.Close()
	for n := 0; ; n++ {
		msg, err := s.Recv()
		now := time.Now().UnixNano()
		if err != nil {
			if n == 0 {
				first <- err
			}
			if ctx.Err() == nil {
				f.streamErr.Add(1)
				f.lastErr.Store(fmt.Sprintf("proxy %d, %s: %v", p.idx, authority, err))
			}
			return
		}
		f.updates.Add(1)
		var u destinationv1.Update
		if err := proto.Unmarshal(msg, &u); err != nil {
			f.streamErr.Add(1)
			f.lastErr.Store(fmt.Sprintf("proxy %d: bad update: %v", p.idx, err))
			return
		}
		f.apply(p.idx, &u, now, observeSvc)
		if n == 0 {
			first <- nil
		}
	}
}

// apply notes a fan-out marker arriving and keeps observed endpoint sets.
func (f *fleet) apply(proxy int, u *destinationv1.Update, now int64, observeSvc int) {
	if add := u.GetAdd(); add != nil {
		if run := f.fan.Load(); run != nil {
			for _, a := range add.GetAddrs() {
				if ap, err := a.GetAddr().AddrPort(); err == nil {
					run.received(markerOf(ap.Addr()), proxy, now)
				}
			}
		}
	}
	if observeSvc < 0 {
		return
	}
	f.obsMu.Lock()
	defer f.obsMu.Unlock()
	set := f.observers[observeSvc]
	if set == nil {
		set = map[string]bool{}
		f.observers[observeSvc] = set
	}
	switch x := u.Update.(type) {
	case *destinationv1.Update_Add:
		for _, a := range x.Add.GetAddrs() {
			if ap, err := a.GetAddr().AddrPort(); err == nil {
				set[ap.String()] = true
			}
		}
	case *destinationv1.Update_Remove:
		for _, a := range x.Remove.GetAddrs() {
			if ap, err := a.AddrPort(); err == nil {
				delete(set, ap.String())
			}
		}
	case *destinationv1.Update_NoEndpoints:
		clear(set)
	}
}

// endpointsSeen is the smallest endpoint count an observer proxy holds
// for its scale service, and how many services have reached want(service).
func (f *fleet) endpointsSeen(want func(svc int) int) (lowest, complete int) {
	f.obsMu.Lock()
	defer f.obsMu.Unlock()
	lowest = -1
	for svc := range min(f.o.services, len(f.proxies)) {
		n := len(f.observers[svc])
		if lowest < 0 || n < lowest {
			lowest = n
		}
		if n >= want(svc) {
			complete++
		}
	}
	return lowest, complete
}

// check fails when a stream ended.
func (f *fleet) check() error {
	if n := f.streamErr.Load(); n > 0 {
		return fmt.Errorf("%d proxy streams ended; last: %v", n, f.lastErr.Load())
	}
	return nil
}

func (f *fleet) close() {
	for _, p := range f.proxies {
		if p != nil {
			p.cancel()
			p.conn.Close()
		}
	}
}
