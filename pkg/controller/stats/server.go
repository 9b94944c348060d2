// Package stats answers `conduit stat` and `conduit edges` without
// Prometheus: it scrapes every meshed proxy's /metrics on an interval,
// reduces each page as it arrives to the numbers the queries read (per
// group of series they cannot tell apart: request and response counts,
// latency buckets, TCP counters; other families are skipped), keeps their
// growth per pod as sparse points (every scrape's for 5 minutes, then one
// per minute, up to the 1 h window), and aggregates per namespace,
// deployment, pod, service, authority, edge and route on demand.
package stats

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	statsv1 "github.com/conduitmesh/conduit/pkg/api/stats/v1"
)

// DefaultInterval is how often proxies are scraped unless configured.
const DefaultInterval = 10 * time.Second

// maxMetricsBody bounds one proxy's /metrics page.
const maxMetricsBody = 16 << 20

// scrapeParallelism bounds concurrent scrapes.
const scrapeParallelism = 16

// Config configures a Server.
type Config struct {
	Pods Pods
	// Resources (optional) lists the namespaces, deployments and services
	// that exist, for stat's rows of their own traffic.
	Resources Resources
	// Interval between scrapes; 0 means DefaultInterval.
	Interval time.Duration
	// Client fetches /metrics; nil means a client with a timeout of the
	// interval (at most 5 s).
	Client *http.Client
	Log    *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Server scrapes proxies and serves conduit.stats.v1.Stats.
type Server struct {
	statsv1.UnimplementedStatsServer
	cfg   Config
	store *Store
}

// NewServer returns a server; call Run to start scraping.
func NewServer(cfg Config) *Server {
	if cfg.Interval <= 0 {
		cfg.Interval = DefaultInterval
	}
	if cfg.Client == nil {
		// Each proxy is scraped once a pass: an idle connection to each
		// would cost more (two goroutines and buffers per proxy) than a
		// new one per scrape, which lives too briefly for TCP keep-alive.
		timeout := min(cfg.Interval, 5*time.Second)
		dialer := &net.Dialer{Timeout: timeout, KeepAlive: -1}
		cfg.Client = &http.Client{Timeout: timeout,
			Transport: &http.Transport{DialContext: dialer.DialContext, DisableKeepAlives: true, MaxResponseHeaderBytes: 64 << 10}}
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Server{cfg: cfg, store: NewStore(cfg.Interval, MaxWindow)}
}

// firstRateDelay is how soon scraping repeats while new pods have no rate
// yet (one scrape gives none), so a new proxy (a demo that just started)
// shows numbers in seconds rather than after two intervals.
const firstRateDelay = 2 * time.Second

// Run scrapes every interval until ctx is done.
func (s *Server) Run(ctx context.Context) error {
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
		s.ScrapeOnce(ctx)
		next := s.cfg.Interval
		if s.store.AwaitingRate(s.cfg.Now()) > 0 {
			next = min(next, firstRateDelay)
		}
		t.Reset(next)
	}
}

// ScrapeOnce lists the pods and scrapes every meshed one, at most
// scrapeParallelism at a time, each worker reducing the pages it reads
// with its own reusable buffers.
func (s *Server) ScrapeOnce(ctx context.Context) {
	pods, err := s.cfg.Pods.Pods(ctx)
	if err != nil {
		s.cfg.Log.Warn("listing pods to scrape", "err", err)
		return
	}
	s.store.SetPods(pods, s.cfg.Now())
	meshed := 0
	for _, p := range pods {
		if p.Meshed() {
			meshed++
		}
	}
	work := make(chan Pod)
	var wg sync.WaitGroup
	for range min(scrapeParallelism, meshed) {
		wg.Go(func() {
			sc := scrapers.Get().(*scraper)
			defer scrapers.Put(sc)
			for p := range work {
				if err := s.scrape(ctx, p, sc); err != nil {
					s.cfg.Log.Debug("scraping proxy", "pod", podKey(p), "addr", p.AdminAddr, "err", err)
					s.store.ScrapeFailed(p, err)
				}
			}
		})
	}
	for _, p := range pods {
		if p.Meshed() {
			work <- p
		}
	}
	close(work)
	wg.Wait()
}

// scraper is a worker's reusable buffers.
type scraper struct {
	br *bufio.Reader
	lr limitedReader
	pg page
}

var scrapers = sync.Pool{New: func() any { return &scraper{br: bufio.NewReaderSize(nil, 32<<10)} }}

// errPageTooLarge: a page over maxMetricsBody is not read to its end.
var errPageTooLarge = fmt.Errorf("the page is larger than %d MiB", maxMetricsBody>>20)

// limitedReader reads at most n bytes, then fails.
type limitedReader struct {
	r io.Reader
	n int64
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errPageTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// scrape reads a proxy's /metrics, reducing it as it arrives, and records it.
func (s *Server) scrape(ctx context.Context, p Pod, sc *scraper) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+p.AdminAddr+"/metrics", nil)
	if err != nil {
		return err
	}
	resp, err := s.cfg.Client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /metrics: %s", resp.Status)
	}
	sc.lr = limitedReader{r: resp.Body, n: maxMetricsBody}
	sc.br.Reset(&sc.lr)
	defer sc.br.Reset(nil)
	if err := sc.pg.scan(sc.br); err != nil {
		return fmt.Errorf("reading /metrics: %w", err)
	}
	s.store.apply(p, s.cfg.Now(), &sc.pg)
	return nil
}

func refFrom(r *statsv1.Resource, defaultNs string) (Ref, error) {
	ref := Ref{Namespace: r.GetNamespace(), Type: r.GetType(), Name: r.GetName()}
	if ref.Namespace == "" {
		ref.Namespace = defaultNs
	}
	return NormalizeRef(ref)
}

func grpcErr(err error) error {
	if errors.Is(err, ErrInvalidQuery) {
		return status.Error(codes.InvalidArgument, err.Error())
	}
	return status.Error(codes.Internal, err.Error())
}

// Stat implements statsv1.StatsServer.
func (s *Server) Stat(_ context.Context, req *statsv1.StatRequest) (*statsv1.StatResponse, error) {
	if req.GetSelector() == nil {
		return nil, status.Error(codes.InvalidArgument, "selector is required")
	}
	sel, err := refFrom(req.GetSelector(), "default")
	if err != nil {
		return nil, grpcErr(err)
	}
	q := StatQuery{Selector: sel, AllNamespaces: req.GetAllNamespaces()}
	if q.Window, err = CheckWindow(req.GetWindow().AsDuration()); err != nil {
		return nil, grpcErr(err)
	}
	if req.GetFrom() != nil {
		from, err := refFrom(req.GetFrom(), sel.Namespace)
		if err != nil {
			return nil, grpcErr(err)
		}
		q.From = &from
	}
	if req.GetTo() != nil {
		to, err := refFrom(req.GetTo(), sel.Namespace)
		if err != nil {
			return nil, grpcErr(err)
		}
		q.To = &to
	}
	if q.From != nil && q.To != nil {
		return nil, status.Error(codes.InvalidArgument, "from and to cannot both be set")
	}
	if s.cfg.Resources != nil && q.From == nil && q.To == nil {
		ns := sel.Namespace
		if q.AllNamespaces {
			ns = ""
		}
		refs, ok, err := s.cfg.Resources.Existing(sel.Type, ns)
		switch {
		case err != nil:
			s.cfg.Log.Warn("listing resources for stat: rows come from pods alone", "type", sel.Type, "err", err)
		case ok:
			q.Existing = make(map[Ref]bool, len(refs))
			for _, r := range refs {
				q.Existing[r] = true
			}
		}
	}
	resp := &statsv1.StatResponse{}
	for _, r := range s.store.Stat(s.cfg.Now(), q) {
		resp.Rows = append(resp.Rows, &statsv1.StatRow{
			Resource:             &statsv1.Resource{Namespace: r.Namespace, Type: sel.Type, Name: r.Name},
			MeshedPods:           uint32(r.MeshedPods),
			RunningPods:          uint32(r.RunningPods),
			SuccessCount:         uint64(r.Successes),
			FailureCount:         uint64(r.Failures),
			Rps:                  r.RPS,
			LatencyMsP50:         r.P50,
			LatencyMsP95:         r.P95,
			LatencyMsP99:         r.P99,
			TcpOpenConnections:   uint64(r.TCPOpen),
			TcpReadBytes:         uint64(r.ReadBytes),
			TcpWriteBytes:        uint64(r.WriteBytes),
			Window:               durationpb.New(r.Window),
			AuthzAllowedCount:    uint64(r.Allowed),
			AuthzDeniedCount:     uint64(r.Denied),
			AuthzTcpAllowedCount: uint64(r.TCPAllowed),
			AuthzTcpDeniedCount:  uint64(r.TCPDenied),
			AuthzApplies:         r.AuthzApplies,
		})
	}
	return resp, nil
}

// Routes implements statsv1.StatsServer.
func (s *Server) Routes(_ context.Context, req *statsv1.RoutesRequest) (*statsv1.RoutesResponse, error) {
	if req.GetSelector() == nil {
		return nil, status.Error(codes.InvalidArgument, "selector is required")
	}
	sel, err := refFrom(req.GetSelector(), "default")
	if err != nil {
		return nil, grpcErr(err)
	}
	if err := CheckRouteSelector(sel); err != nil {
		return nil, grpcErr(err)
	}
	q := RouteQuery{Selector: sel}
	if q.Window, err = CheckWindow(req.GetWindow().AsDuration()); err != nil {
		return nil, grpcErr(err)
	}
	resp := &statsv1.RoutesResponse{}
	for _, r := range s.store.Routes(s.cfg.Now(), q) {
		row := &statsv1.RouteRow{
			Resource:                &statsv1.Resource{Namespace: sel.Namespace, Type: sel.Type, Name: sel.Name},
			Parent:                  r.Parent,
			RouteKind:               r.RouteKind,
			RouteName:               r.RouteName,
			SuccessCount:            uint64(r.Successes),
			FailureCount:            uint64(r.Failures),
			TimeoutCount:            uint64(r.Timeouts),
			RetryCount:              uint64(r.Retries),
			RetryLimitExceededCount: uint64(r.RetryLimitExceeded),
			RetryOverflowCount:      uint64(r.RetryOverflow),
			Share:                   r.Share,
			Rps:                     r.RPS,
			LatencyMsP50:            r.P50,
			LatencyMsP95:            r.P95,
			LatencyMsP99:            r.P99,
			Window:                  durationpb.New(r.Window),
		}
		if sel.Type == TypeNamespace {
			row.Resource.Namespace = ""
		}
		if b := r.Backend; b.Name != "" {
			row.Backend = &statsv1.Resource{Namespace: b.Namespace, Type: b.Type, Name: b.Name}
		}
		resp.Rows = append(resp.Rows, row)
	}
	return resp, nil
}

// Edges implements statsv1.StatsServer.
func (s *Server) Edges(_ context.Context, req *statsv1.EdgesRequest) (*statsv1.EdgesResponse, error) {
	if req.GetSelector() == nil {
		return nil, status.Error(codes.InvalidArgument, "selector is required")
	}
	sel, err := refFrom(req.GetSelector(), "default")
	if err != nil {
		return nil, grpcErr(err)
	}
	if sel.Type == TypeAuthority {
		return nil, status.Error(codes.InvalidArgument, "edges are drawn between namespaces, deployments, pods or services, not authorities")
	}
	ns := sel.Namespace
	if req.GetAllNamespaces() || sel.Type == TypeNamespace {
		ns = ""
	}
	resp := &statsv1.EdgesResponse{}
	for _, e := range s.store.Edges(s.cfg.Now(), sel.Type, ns, sel.Name, DefaultWindow) {
		resp.Edges = append(resp.Edges, &statsv1.Edge{
			Src:         &statsv1.Resource{Namespace: e.Src.Namespace, Type: e.Src.Type, Name: e.Src.Name},
			Dst:         &statsv1.Resource{Namespace: e.Dst.Namespace, Type: e.Dst.Type, Name: e.Dst.Name},
			ClientId:    e.ClientID,
			ServerId:    e.ServerID,
			Secured:     e.Secured,
			NoTlsReason: e.NoTLSReason,
		})
	}
	return resp, nil
}
