package demo

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The demo application: web (HTTP/1.1) looks books up in books and their
// authors in authors (both gRPC); traffic sends a steady stream of requests
// to web. Every app reaches the others only through its own proxy's
// outbound listener, by service name, so all calls between them are
// proxied, discovered through the controller and mutually authenticated.

// Roles of the demo's apps.
const (
	RoleWeb     = "web"
	RoleBooks   = "books"
	RoleAuthors = "authors"
	RoleTraffic = "traffic"
)

// roles lists every role (deployments, in demo.go, lists the demo's
// workloads, which run them).
var roles = []string{RoleAuthors, RoleBooks, RoleWeb, RoleTraffic}

// InjectedHeader marks web's responses that failed because books injected a
// failure on purpose, so the traffic generator can tell them from real ones.
const InjectedHeader = "Conduit-Demo-Injected-Failure"

// TimeoutHeader marks web's responses that failed because a call timed out
// (gRPC DEADLINE_EXCEEDED: the request timeout of books's route, when books
// is slow on purpose), which the traffic generator counts apart.
const TimeoutHeader = "Conduit-Demo-Timeout"

const injectedMessage = "injected failure"

// AppOptions configure one demo app process (`conduit demo app`).
type AppOptions struct {
	Role string
	// Listen is the app's own address (its proxy's inbound target).
	Listen string
	// Outbound is its proxy's outbound listener, through which it calls
	// the other services. Empty in a meshed pod: it dials the Services and
	// the pod's redirect takes the connections to its proxy.
	Outbound string
	// Namespace and ClusterDomain form service authorities.
	Namespace, ClusterDomain string
	// ServicePort is the port every demo service is addressed by.
	ServicePort int
	// FailureRate is the share of books lookups that fail on purpose
	// (gRPC UNAVAILABLE).
	FailureRate float64
	// SlowRate is the share of books lookups answered only after
	// SlowDelay, on purpose.
	SlowRate  float64
	SlowDelay time.Duration
	// Version is the app's version (authors: v1 or v2), given in its
	// answers so that a split shows in web's.
	Version string
	// RPS is the traffic generator's request rate.
	RPS float64
	// DirectShare is the share of the traffic generator's requests that go
	// straight to books (gRPC), bypassing web; `conduit demo`'s inbound
	// policy refuses them.
	DirectShare float64
	// ReportEvery is how often the traffic generator prints a summary.
	ReportEvery time.Duration
	// Out receives the traffic generator's summaries.
	Out io.Writer
	Log *slog.Logger
}

func (o AppOptions) authority(service string) string {
	return fmt.Sprintf("%s.%s.svc.%s:%d", service, o.Namespace, o.ClusterDomain, o.ServicePort)
}

// RunApp runs one demo app until ctx ends.
func RunApp(ctx context.Context, o AppOptions) error {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	if o.Out == nil {
		o.Out = io.Discard
	}
	if o.ClusterDomain == "" {
		o.ClusterDomain = "cluster.local"
	}
	lis, err := net.Listen("tcp", o.Listen)
	if err != nil {
		return fmt.Errorf("demo %s: --listen: %w", o.Role, err)
	}
	defer lis.Close()
	switch o.Role {
	case RoleBooks:
		return serveGRPC(ctx, lis, lookupService("demo.v1.Books", "GetBook", func(ctx context.Context, id string) (string, error) {
			if o.FailureRate > 0 && rand.Float64() < o.FailureRate {
				return "", status.Error(codes.Unavailable, injectedMessage)
			}
			if o.SlowRate > 0 && rand.Float64() < o.SlowRate {
				select {
				case <-time.After(o.SlowDelay):
				case <-ctx.Done(): // the caller gave up (its route's timeout)
					return "", status.FromContextError(ctx.Err()).Err()
				}
			}
			return lookup(books, id)
		}))
	case RoleAuthors:
		versioned := make(map[string]author, len(authors))
		for id, a := range authors {
			a.Version = o.Version
			versioned[id] = a
		}
		return serveGRPC(ctx, lis, lookupService("demo.v1.Authors", "GetAuthor", func(_ context.Context, id string) (string, error) {
			return lookup(versioned, id)
		}))
	case RoleWeb:
		return runWeb(ctx, lis, o)
	case RoleTraffic:
		return runTraffic(ctx, lis, o)
	}
	return fmt.Errorf("demo app: unknown role %q (want %s)", o.Role, strings.Join(roles, ", "))
}

type book struct {
	ID       string `json:"id"`
	Title    string `json:"title"`
	AuthorID string `json:"authorId"`
}

type author struct {
	ID   string `json:"id"`
	Name string `json:"name"`
	// Version is the authors app's that answered.
	Version string `json:"version,omitempty"`
}

var books = map[string]book{
	"1": {"1", "The Left Hand of Darkness", "1"}, "2": {"2", "The Dispossessed", "1"},
	"3": {"3", "Kindred", "2"}, "4": {"4", "Parable of the Sower", "2"},
	"5": {"5", "Solaris", "3"}, "6": {"6", "The Cyberiad", "3"},
	"7": {"7", "Invisible Cities", "4"}, "8": {"8", "If on a winter's night a traveler", "4"},
	"9": {"9", "The Master and Margarita", "5"}, "10": {"10", "Roadside Picnic", "6"},
}

var authors = map[string]author{
	"1": {ID: "1", Name: "Ursula K. Le Guin"}, "2": {ID: "2", Name: "Octavia E. Butler"}, "3": {ID: "3", Name: "Stanisław Lem"},
	"4": {ID: "4", Name: "Italo Calvino"}, "5": {ID: "5", Name: "Mikhail Bulgakov"}, "6": {ID: "6", Name: "Arkady and Boris Strugatsky"},
}

func lookup[T any](m map[string]T, id string) (string, error) {
	v, ok := m[id]
	if !ok {
		return "", status.Errorf(codes.NotFound, "no record %q", id)
	}
	b, err := json.Marshal(v)
	return string(b), err
}

// lookupService is a one-method gRPC service taking and returning a
// google.protobuf.StringValue (an id in, a JSON record out), declared by
// hand so that the demo needs no generated code.
func lookupService(name, method string, get func(ctx context.Context, id string) (string, error)) *grpc.ServiceDesc {
	return &grpc.ServiceDesc{
		ServiceName: name,
		HandlerType: (*any)(nil),
		Methods: []grpc.MethodDesc{{
			MethodName: method,
			Handler: func(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
				in := new(wrapperspb.StringValue)
				if err := dec(in); err != nil {
					return nil, err
				}
				out, err := get(ctx, in.GetValue())
				if err != nil {
					return nil, err
				}
				return wrapperspb.String(out), nil
			},
		}},
	}
}

func serveGRPC(ctx context.Context, lis net.Listener, sd *grpc.ServiceDesc) error {
	srv := grpc.NewServer()
	srv.RegisterService(sd, struct{}{})
	// The standard health service, for the demo's probes (kubelet-style).
	healthpb.RegisterHealthServer(srv, health.NewServer())
	go func() {
		<-ctx.Done()
		srv.GracefulStop()
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, grpc.ErrServerStopped) {
		return err
	}
	return nil
}

// runWeb serves GET /books/{id}: the book from books, its author from authors.
func runWeb(ctx context.Context, lis net.Listener, o AppOptions) error {
	dial := func(service string) (*grpc.ClientConn, error) {
		if o.Outbound == "" {
			// In a pod: dial the Service; the redirect takes it to the proxy.
			return grpc.NewClient("dns:///"+o.authority(service),
				grpc.WithTransportCredentials(insecure.NewCredentials()))
		}
		return grpc.NewClient("passthrough:///"+o.Outbound,
			grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithAuthority(o.authority(service)))
	}
	booksConn, err := dial(RoleBooks)
	if err != nil {
		return err
	}
	defer booksConn.Close()
	authorsConn, err := dial(RoleAuthors)
	if err != nil {
		return err
	}
	defer authorsConn.Close()
	call := func(ctx context.Context, cc *grpc.ClientConn, method, id string, into any) error {
		out := new(wrapperspb.StringValue)
		if err := cc.Invoke(ctx, method, wrapperspb.String(id), out); err != nil {
			return err
		}
		return json.Unmarshal([]byte(out.GetValue()), into)
	}

	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "conduit demo bookshop: GET /books/{id} (ids 1-10)")
	})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /books/{id}", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
		defer cancel()
		var b book
		if err := call(ctx, booksConn, "/demo.v1.Books/GetBook", r.PathValue("id"), &b); err != nil {
			webError(w, "books", err)
			return
		}
		var a author
		if err := call(ctx, authorsConn, "/demo.v1.Authors/GetAuthor", b.AuthorID, &a); err != nil {
			webError(w, "authors", err)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		page := map[string]string{"id": b.ID, "title": b.Title, "author": a.Name}
		if a.Version != "" {
			page["authorsVersion"] = a.Version
		}
		json.NewEncoder(w).Encode(page)
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(lis); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func webError(w http.ResponseWriter, service string, err error) {
	st := status.Convert(err)
	code := http.StatusBadGateway
	switch st.Code() {
	case codes.NotFound:
		code = http.StatusNotFound
	case codes.Unavailable:
		code = http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		code = http.StatusGatewayTimeout
		w.Header().Set(TimeoutHeader, service)
	}
	if st.Message() == injectedMessage {
		w.Header().Set(InjectedHeader, service)
	}
	http.Error(w, fmt.Sprintf("%s: %s", service, st.Message()), code)
}

// trafficCounts are the generator's cumulative results.
type trafficCounts struct {
	sent, ok, injected, failed, denied, skipped, timeouts atomic.Int64
}

// runTraffic sends GET /books/{id} to web at o.RPS through its proxy
// (o.DirectShare of them as gRPC calls straight to books instead),
// reporting every o.ReportEvery. It also serves a trivial page on lis (its
// proxy's inbound target).
func runTraffic(ctx context.Context, lis net.Listener, o AppOptions) error {
	if o.RPS <= 0 {
		return fmt.Errorf("demo traffic: --rps %v: want a positive rate", o.RPS)
	}
	if o.DirectShare < 0 || o.DirectShare > 1 {
		return fmt.Errorf("demo traffic: --direct-share %v: want a share between 0 and 1", o.DirectShare)
	}
	if o.ReportEvery <= 0 {
		o.ReportEvery = 10 * time.Second
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "conduit demo traffic generator")
	}), ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(lis)
	defer srv.Close()

	var d net.Dialer
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, addr string) (net.Conn, error) {
			if o.Outbound == "" {
				// In a pod: dial the Service; the redirect takes it to the proxy.
				return d.DialContext(ctx, "tcp", addr)
			}
			return d.DialContext(ctx, "tcp", o.Outbound)
		},
		MaxIdleConnsPerHost: 16,
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	base := "http://" + o.authority(RoleWeb)

	get := func(ctx context.Context) (status int, h http.Header, err error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/books/"+strconv.Itoa(1+rand.IntN(len(books))), nil)
		if err != nil {
			return 0, nil, err
		}
		resp, err := client.Do(req)
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header, nil
	}

	// Calls straight to books, as web makes them.
	var booksConn *grpc.ClientConn
	if o.DirectShare > 0 {
		target, opts := "dns:///"+o.authority(RoleBooks), []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
		if o.Outbound != "" {
			target, opts = "passthrough:///"+o.Outbound, append(opts, grpc.WithAuthority(o.authority(RoleBooks)))
		}
		var err error
		if booksConn, err = grpc.NewClient(target, opts...); err != nil {
			return err
		}
		defer booksConn.Close()
	}
	direct := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		id := strconv.Itoa(1 + rand.IntN(len(books)))
		return booksConn.Invoke(ctx, "/demo.v1.Books/GetBook", wrapperspb.String(id), new(wrapperspb.StringValue))
	}

	// Warm up: the mesh is ready when books answers a direct call (its
	// proxy's refusal will do: the generator's proxy has resolved books,
	// and keeps it should the controller go away), then one request to
	// web gets through.
	warm := time.Now()
	for o.DirectShare > 0 {
		err := direct(ctx)
		if st := status.Convert(err); err == nil || st.Code() == codes.PermissionDenied || st.Message() == injectedMessage {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(warm) > 60*time.Second {
			return fmt.Errorf("demo traffic: books not reachable after 60s: %v", err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	for {
		code, h, err := get(ctx)
		if err == nil && (code == http.StatusOK || h.Get(InjectedHeader) != "" || h.Get(TimeoutHeader) != "") {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		if time.Since(warm) > 60*time.Second {
			return fmt.Errorf("demo traffic: web not reachable after 60s: status %d, %v", code, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if o.DirectShare > 0 {
		fmt.Fprintf(o.Out, "traffic: sending %.0f requests/s to %s/books/{id}, %.0f%% of them straight to books (gRPC GetBook)\n", o.RPS, base, o.DirectShare*100)
	} else {
		fmt.Fprintf(o.Out, "traffic: sending %.0f requests/s to %s/books/{id}\n", o.RPS, base)
	}

	var c trafficCounts
	var wg sync.WaitGroup
	// Bounds requests in flight: on an overloaded machine the generator
	// skips (and counts) requests rather than piling them up.
	sem := make(chan struct{}, 32)
	tick := time.NewTicker(time.Duration(float64(time.Second) / o.RPS))
	defer tick.Stop()
	report := time.NewTicker(o.ReportEvery)
	defer report.Stop()
	var last [7]int64
	summary := func(final bool) {
		now := [7]int64{c.sent.Load(), c.ok.Load(), c.injected.Load(), c.failed.Load(), c.skipped.Load(), c.denied.Load(), c.timeouts.Load()}
		what := "last " + o.ReportEvery.String()
		if final {
			what = "total"
			last = [7]int64{}
		}
		line := fmt.Sprintf("traffic: %s: sent=%d ok=%d injected_failures=%d other_failures=%d",
			what, now[0]-last[0], now[1]-last[1], now[2]-last[2], now[3]-last[3])
		if o.DirectShare > 0 {
			line += fmt.Sprintf(" denied_by_policy=%d", now[5]-last[5])
		}
		line += fmt.Sprintf(" timeouts=%d", now[6]-last[6])
		if skipped := now[4] - last[4]; skipped > 0 {
			line += fmt.Sprintf(" skipped_overloaded=%d", skipped)
		}
		fmt.Fprintln(o.Out, line)
		last = now
	}
	defer func() {
		wg.Wait()
		summary(true)
	}()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-report.C:
			summary(false)
		case <-tick.C:
			select {
			case sem <- struct{}{}:
			default:
				c.skipped.Add(1)
				o.Log.Warn("too many requests in flight; skipping one")
				continue
			}
			c.sent.Add(1)
			wg.Add(1)
			if o.DirectShare > 0 && rand.Float64() < o.DirectShare {
				go func() {
					defer wg.Done()
					defer func() { <-sem }()
					err := direct(context.WithoutCancel(ctx))
					switch st := status.Convert(err); {
					case err == nil:
						c.ok.Add(1)
					case st.Code() == codes.PermissionDenied:
						c.denied.Add(1)
					case st.Message() == injectedMessage:
						c.injected.Add(1)
					default:
						c.failed.Add(1)
						o.Log.Warn("direct call to books failed", "err", err)
					}
				}()
				continue
			}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				// Requests in flight at shutdown finish rather than count as failures.
				code, h, err := get(context.WithoutCancel(ctx))
				switch {
				case err == nil && code == http.StatusOK:
					c.ok.Add(1)
				case h.Get(InjectedHeader) != "":
					c.injected.Add(1)
				case h.Get(TimeoutHeader) != "":
					c.timeouts.Add(1)
				default:
					c.failed.Add(1)
					o.Log.Warn("request failed", "status", code, "err", err)
				}
			}()
		}
	}
}
