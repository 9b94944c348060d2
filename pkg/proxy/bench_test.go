package proxy

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
	"github.com/conduitmesh/conduit/pkg/proxy/authz"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch"
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch/httpmatchtest"
	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	routes "github.com/conduitmesh/conduit/pkg/proxy/route"
	"google.golang.org/grpc"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/protobuf/proto"
)

// BenchmarkHTTP1Inbound measures one proxied keep-alive HTTP/1.1 request
// (client and backend in the same process, so it is an upper bound): with
// no policy, and with a port policy of 50 authorizations of which only the
// last admits the client (the worst case a decision scans), 10 routes and
// the route the request takes last by precedence.
func BenchmarkHTTP1Inbound(b *testing.B) {
	b.Run("no-policy", func(b *testing.B) { benchInbound(b, false) })
	b.Run("policy-50", func(b *testing.B) { benchInbound(b, true) })
}

func benchInbound(b *testing.B, withPolicy bool) {
	app := startHTTPBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	cfg := Config{InboundTarget: app}
	if withPolicy {
		m := server("web-http")
		for i := range 49 {
			m.Authorizations = append(m.Authorizations, unauthenticatedFrom(fmt.Sprint("other-", i), fmt.Sprintf("10.%d.0.0/16", i)))
		}
		m.Authorizations = append(m.Authorizations, unauthenticatedFrom("loopback", "127.0.0.0/8", "::1/128"))
		for i := range 10 {
			m.HttpRoutes = append(m.HttpRoutes, &policyv1.HttpRoute{Ref: &policyv1.Ref{Kind: "httproute", Name: fmt.Sprint("r", i)},
				Matches: []*policyv1.HttpMatch{{Path: &policyv1.PathMatch{Kind: &policyv1.PathMatch_Prefix{Prefix: fmt.Sprintf("/r%d", i)}}}}})
		}
		m.HttpRoutes = append(m.HttpRoutes, &policyv1.HttpRoute{Ref: &policyv1.Ref{Kind: "httproute", Name: "all"},
			Matches: []*policyv1.HttpMatch{{Path: &policyv1.PathMatch{Kind: &policyv1.PathMatch_Prefix{Prefix: "/"}}}}})
		store := authz.NewStore(authz.Pending(""))
		store.Set(portOf(b, app), decodePolicy(b, m))
		cfg.Policy = store
	}
	p := startProxy(b, cfg)
	c := newClient(b)
	url := "http://" + p.InboundAddr() + "/"
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get(url)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkDirect is the same request without the proxy, for comparison.
func BenchmarkDirect(b *testing.B) {
	app := startHTTPBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	c := newClient(b)
	b.ReportAllocs()
	for b.Loop() {
		resp, err := c.Get("http://" + app + "/")
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
}

// BenchmarkGRPCInbound measures one proxied gRPC unary call on the HTTP/2
// fast path and on net/http's (DisableFastPath), client and backend in the
// same process.
func BenchmarkGRPCInbound(b *testing.B) {
	for _, slow := range []bool{false, true} {
		b.Run(fmt.Sprintf("DisableFastPath=%v", slow), func(b *testing.B) {
			app, _ := startGRPCBackend(b)
			p := startProxy(b, Config{InboundTarget: app, DisableFastPath: slow})
			client := dialGRPC(b, p.InboundAddr())
			req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ping")}}
			b.ReportAllocs()
			for b.Loop() {
				if _, err := client.UnaryCall(context.Background(), req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkTwoHopsMTLS measures a request through a client-side proxy
// (outbound) and a server-side proxy (inbound) with mTLS between them, as
// between two meshed pods: gRPC unary and HTTP/1.1 GET.
func BenchmarkTwoHopsMTLS(b *testing.B) {
	const clientID, serverID = "spiffe://cluster.local/ns/default/sa/client", "spiffe://cluster.local/ns/default/sa/web"
	ca := pkitest.Anchor(b, "test trust anchor")
	twoHops := func(b *testing.B, app string) *Proxy {
		server := startProxy(b, Config{InboundTarget: app, TLS: &provider{id: serverID, ca: ca, cert: pkitest.Workload(b, ca, serverID).TLS()}})
		res := &fakeResolver{eps: map[string][]resolve.Endpoint{
			"web:80": {{Addr: server.InboundAddr(), Identity: serverID}},
		}}
		return startProxy(b, Config{Resolver: res, TLS: &provider{id: clientID, ca: ca, cert: pkitest.Workload(b, ca, clientID).TLS()}})
	}
	b.Run("grpc", func(b *testing.B) {
		app, _ := startGRPCBackend(b)
		client := dialGRPC(b, twoHops(b, app).OutboundAddr(), grpc.WithAuthority("web"))
		req := &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("ping")}}
		b.ReportAllocs()
		for b.Loop() {
			if _, err := client.UnaryCall(context.Background(), req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("http1", func(b *testing.B) {
		app := startHTTPBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		}))
		p := twoHops(b, app)
		c := newClient(b)
		req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
		req.Host = "web"
		b.ReportAllocs()
		for b.Loop() {
			resp, err := c.Do(req)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	})
}

// BenchmarkHTTP1OutboundRoutes measures one outbound keep-alive HTTP/1.1
// request on the fast path with the cost of outbound routing (issue 14's
// limit: a Lookup that finds no route adds < 5 % to p99): no route source
// (as before routes), a route.Store whose authority is no Service
// (no table), a table of 10 routes none of which matches, and a matching
// 10 %/90 % split. p50-µs and p99-µs are the client's per-request
// latencies.
func BenchmarkHTTP1OutboundRoutes(b *testing.B) {
	const svc = "web.shop.svc.cluster.local:80"
	rs, noMatch := benchRoutes(b)
	split, err := proto.Marshal(&destinationv1.OutboundRoutes{Found: true, Routes: append(rs, mkRoute("split", 20,
		outRule(&policyv1.HttpMatch{Path: httpmatchtest.Prefix("/")}, outBackend("web-v1.shop.svc.cluster.local:80", 10), outBackend("web-v2.shop.svc.cluster.local:80", 90))))})
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		msg  []byte // nil: no route source
	}{{"no-source", nil}, {"no-table", []byte{}}, {"no-match-10-routes", noMatch}, {"split", split}} {
		b.Run(bc.name, func(b *testing.B) {
			app := startHTTPBackend(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.WriteString(w, "ok")
			}))
			cfg := Config{Resolver: &fakeResolver{eps: map[string][]resolve.Endpoint{
				svc: {{Addr: app}}, "web-v1.shop.svc.cluster.local:80": {{Addr: app}}, "web-v2.shop.svc.cluster.local:80": {{Addr: app}},
			}}}
			if bc.msg != nil {
				store := routes.NewStore(context.Background(), staticWatcher{svc: bc.msg}, routes.StoreOptions{})
				b.Cleanup(store.Close)
				cfg.Routes = store
			}
			p := startProxy(b, cfg)
			c := newClient(b)
			req, _ := http.NewRequest("GET", "http://"+p.OutboundAddr()+"/", nil)
			req.Host = "web.shop.svc.cluster.local"
			lat := make([]time.Duration, 0, 1<<16)
			b.ReportAllocs()
			for b.Loop() {
				start := time.Now()
				resp, err := c.Do(req)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if len(lat) < cap(lat) {
					lat = append(lat, time.Since(start))
				}
			}
			slices.Sort(lat)
			if n := len(lat); n > 0 {
				b.ReportMetric(float64(lat[n/2].Nanoseconds())/1e3, "p50-µs")
				b.ReportMetric(float64(lat[n*99/100].Nanoseconds())/1e3, "p99-µs")
			}
		})
	}
}

// BenchmarkOutboundRouteStep measures what routing adds to a fast-path
// request on its own: the Store Lookup of the authority and, when it has a
// table, matching the request against it (no table; 10 routes of which
// none matches). It must allocate nothing.
func BenchmarkOutboundRouteStep(b *testing.B) {
	const svc = "web.shop.svc.cluster.local:80"
	_, noMatch := benchRoutes(b)
	fields := []Field{{Name: []byte("User-Agent"), Value: []byte("bench")}, {Name: []byte("Accept"), Value: []byte("*/*")}}
	for _, bc := range []struct {
		name string
		msg  []byte
	}{{"no-table", []byte{}}, {"no-match-10-routes", noMatch}} {
		b.Run(bc.name, func(b *testing.B) {
			store := routes.NewStore(context.Background(), staticWatcher{svc: bc.msg}, routes.StoreOptions{})
			defer store.Close()
			p := &Proxy{cfg: Config{Routes: store}}
			ctx := context.Background()
			p.routeTable(ctx, Outbound, svc) // starts the watch
			method, target := []byte("GET"), []byte("/books/1?x=y")
			b.ReportAllocs()
			for b.Loop() {
				if t := p.routeTable(ctx, Outbound, svc); t != nil {
					req := httpmatch.FieldsRequest(method, target, fields)
					if or, perr := p.routeRequest(t, &req, "http", svc); or.rule != nil || perr != nil {
						b.Fatal("routed")
					}
				}
			}
		})
	}
}

// benchRoutes are 10 routes (prefixes /r0 to /r9 to web-v1), and their
// OutboundRoutes message.
func benchRoutes(b *testing.B) ([]*destinationv1.OutboundRoute, []byte) {
	var rs []*destinationv1.OutboundRoute
	for i := range 10 {
		rs = append(rs, mkRoute(fmt.Sprint("r", i), int64(i), outRule(&policyv1.HttpMatch{Path: httpmatchtest.Prefix(fmt.Sprintf("/r%d", i))},
			outBackend("web-v1.shop.svc.cluster.local:80", 1))))
	}
	msg, err := proto.Marshal(&destinationv1.OutboundRoutes{Found: true, Routes: rs})
	if err != nil {
		b.Fatal(err)
	}
	return rs, msg
}

// staticWatcher hands each authority one OutboundRoutes message (an
// empty one for any other authority: no Service) and keeps the watch open.
type staticWatcher map[string][]byte

func (w staticWatcher) WatchRoutes(ctx context.Context, authority string, update func(msg []byte)) {
	update(w[authority])
	<-ctx.Done()
}
