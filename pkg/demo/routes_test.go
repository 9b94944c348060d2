package demo

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"

	"github.com/conduitmesh/conduit/internal/testenv"
	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/discovery/local"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
	"github.com/conduitmesh/conduit/pkg/controller/routes"
)

// TestDemoRoutes runs the real `conduit demo` and checks its outbound
// routes (issue 14), counting from the proxies' /metrics and the traffic
// generator's summaries once web's proxy has its routes, then from
// `conduit stat --by route deploy/web`:
//   - the split: authors-v2 gets 10 % ± 5 points of web's calls to
//     authors, over at least 2,000 calls;
//   - the timeout: books's slow lookups time out (web's proxy counts a
//     request_timeout);
//   - the retries: web's success rate for books (the traffic generator's
//     requests to web, which fail only when books's lookup does) is at
//     least 99.5 % over at least 4,000 requests, though books fails 5 % of
//     lookups on purpose.
func TestDemoRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real demo for about 2 minutes")
	}
	bin := testenv.BuildDir(t, demoBinaries)
	ctx, cancel := context.WithTimeout(context.Background(), 8*time.Minute)
	defer cancel()
	cmd, info, stderr := startDemo(ctx, t, bin, "--duration", "7m", "--rps", "50", "--report-every", "2s")
	defer func() {
		if t.Failed() {
			t.Logf("demo stderr:\n%s", stderr.String())
		}
	}()
	var web ServiceInfo
	for _, s := range info.Services {
		if s.Name == RoleWeb {
			web = s
		}
	}

	// web's proxy has both routes once it has routed a call by each.
	testenv.Eventually(t, 90*time.Second, 250*time.Millisecond, func() error {
		page := scrape(web.Admin)
		for _, r := range []string{splitRoute, booksRoute} {
			if !strings.Contains(page, `route_name="`+r+`"`) {
				return fmt.Errorf("web's proxy has routed no call by %s yet", r)
			}
		}
		return nil
	})
	// Count the traffic generator's summaries from the second one printed
	// from now on: the first may cover calls made before the routes came.
	from := len(stderr.String())

	var split map[string]float64
	var timeouts float64
	var web2books trafficTotals
	enough := func() bool {
		page := scrape(web.Admin)
		split = countBy(page, "request_total", map[string]string{"direction": "outbound", "route_name": splitRoute}, "dst_deployment")
		timeouts = sum(countBy(page, "conduit_proxy_errors_total", map[string]string{"direction": "outbound", "error": "request_timeout"}, ""))
		web2books = summaries(stderr.String()[from:], 1)
		return sum(split) >= 2000 && web2books.requests() >= 4000 && timeouts >= 1
	}
	for deadline := time.Now().Add(5 * time.Minute); !enough() && time.Now().Before(deadline); {
		time.Sleep(2 * time.Second)
	}
	t.Logf("web → authors by %s: %v; web's proxy request timeouts: %v; traffic → web since the routes: %+v", splitRoute, split, timeouts, web2books)

	if n := sum(split); n < 2000 {
		t.Errorf("split: %v calls routed by %s, want 2,000 at least", n, splitRoute)
	} else if share := split["authors-v2"] / n; share < 0.05 || share > 0.15 || split["authors-v1"]+split["authors-v2"] != n {
		t.Errorf("split: authors-v2 got %.1f%% of %v calls (%v), want %d%% ± 5 points and nothing else", share*100, n, split, canaryWeight)
	}
	if timeouts < 1 {
		t.Errorf("timeout: web's proxy counted no request timeout (conduit_proxy_errors_total{error=\"request_timeout\"}); the traffic generator saw %d", web2books.timeouts)
	}
	if n := web2books.requests(); n < 4000 {
		t.Errorf("retries: %d requests from the traffic generator to web, want 4,000 at least", n)
	} else if rate := float64(web2books.ok) / float64(n); rate < 0.995 {
		t.Errorf("retries: web's success rate for books %.2f%% (%+v), want 99.5%% at least: books fails 5%% of lookups and its route retries UNAVAILABLE twice", rate*100, web2books)
	}

	// `conduit stat --by route` shows the split, the retries, the timeouts
	// and web's success for books, over a window that covers the run.
	stat := exec.CommandContext(ctx, filepath.Join(bin, "conduit"), "stat", "--by", "route", "deploy/web", "-n", Namespace, "-t", "10m", "-o", "json")
	stat.Env = append(os.Environ(), "CONDUIT_CONTROLLER_ADDR="+info.Controller.GRPCAddr)
	out, err := stat.Output()
	var rows []struct {
		Route, Backend string
		Share          float64
		Success        *float64
		Retries        float64 `json:"retryCount"`
		Timeouts       float64 `json:"timeoutCount"`
	}
	if err == nil {
		err = json.Unmarshal(out, &rows)
	}
	if err != nil {
		t.Fatalf("conduit stat --by route deploy/web -o json: %v\n%s", err, out)
	}
	byRoute := map[string]string{}
	for _, r := range rows {
		success := -1.0
		if r.Success != nil {
			success = *r.Success
		}
		byRoute[r.Route+" "+r.Backend] = fmt.Sprintf("share %.3f, success %.4f, %v retries, %v timeouts", r.Share, success, r.Retries, r.Timeouts)
		switch {
		case r.Route == splitRoute && r.Backend == "svc/authors-v2" && (r.Share < 0.05 || r.Share > 0.15):
			t.Errorf("stat --by route: authors-v2's share %.3f, want %d%% ± 5 points", r.Share, canaryWeight)
		case r.Route == booksRoute && r.Retries == 0:
			t.Errorf("stat --by route: no retries of books's failures")
		case r.Route == booksRoute && r.Timeouts == 0:
			t.Errorf("stat --by route: no timeout of books's slow lookups counted")
		case r.Route == booksRoute && (r.Success == nil || *r.Success < 0.995):
			t.Errorf("stat --by route: web's success for books %v, want 99.5%% at least (books fails 5%% of lookups; its route retries them)", r.Success)
		}
	}
	t.Logf("stat --by route deploy/web: %v", byRoute)
	for _, want := range []string{splitRoute + " svc/authors-v1", splitRoute + " svc/authors-v2", booksRoute + " svc/books"} {
		if byRoute[want] == "" {
			t.Errorf("stat --by route deploy/web has no row for %s:\n%s", want, out)
		}
	}

	cmd.Process.Signal(os.Interrupt)
	if err := cmd.Wait(); err != nil {
		t.Errorf("conduit demo: %v", err)
	}
}

// trafficTotals sums traffic generator summaries.
type trafficTotals struct {
	ok, injected, other, timeouts int
}

// requests are those sent to web (not those sent straight to books, which
// its policy denies).
func (tt trafficTotals) requests() int { return tt.ok + tt.injected + tt.other + tt.timeouts }

var summaryLine = regexp.MustCompile(`traffic: last \S+: sent=\d+ ok=(\d+) injected_failures=(\d+) other_failures=(\d+)(?: denied_by_policy=\d+)? timeouts=(\d+)`)

// summaries sums the periodic summaries in out, but the first skip.
func summaries(out string, skip int) trafficTotals {
	var tt trafficTotals
	for i, m := range summaryLine.FindAllStringSubmatch(out, -1) {
		if i < skip {
			continue
		}
		n := make([]int, 4)
		for j := range n {
			n[j], _ = strconv.Atoi(m[j+1])
		}
		tt.ok, tt.injected, tt.other, tt.timeouts = tt.ok+n[0], tt.injected+n[1], tt.other+n[2], tt.timeouts+n[3]
	}
	return tt
}

var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// countBy sums the samples of a metric in a Prometheus text page whose
// labels include want, by the value of label by ("" sums them all under "").
func countBy(page, metric string, want map[string]string, by string) map[string]float64 {
	out := map[string]float64{}
	for _, line := range strings.Split(page, "\n") {
		rest, ok := strings.CutPrefix(line, metric+"{")
		if !ok {
			continue
		}
		labels, value, ok := strings.Cut(rest, "} ")
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(value), 64)
		if err != nil {
			continue
		}
		got := map[string]string{}
		for _, m := range labelPair.FindAllStringSubmatch(labels, -1) {
			got[m[1]] = m[2]
		}
		matches := true
		for k, w := range want {
			matches = matches && got[k] == w
		}
		if matches {
			out[got[by]] += v
		}
	}
	return out
}

func sum(m map[string]float64) float64 {
	var n float64
	for _, v := range m {
		n += v
	}
	return n
}

func TestCountBy(t *testing.T) {
	page := `# TYPE request_total counter
request_total{direction="outbound",authority="a",route_kind="grpcroute",route_name="split",dst_deployment="v1"} 90
request_total{direction="outbound",authority="a",route_kind="grpcroute",route_name="split",dst_deployment="v2"} 7
request_total{direction="outbound",authority="b",route_kind="grpcroute",route_name="split",dst_deployment="v2"} 3
request_total{direction="outbound",authority="a",dst_deployment="v1"} 1000
request_total{direction="inbound",authority="a",route_name="split"} 5
request_totals{direction="outbound",route_name="split",dst_deployment="v1"} 1
`
	got := countBy(page, "request_total", map[string]string{"direction": "outbound", "route_name": "split"}, "dst_deployment")
	if fmt.Sprint(got) != "map[v1:90 v2:10]" {
		t.Errorf("countBy = %v", got)
	}
	if n := sum(countBy(page, "request_total", map[string]string{"direction": "inbound"}, "")); n != 5 {
		t.Errorf("inbound sum = %v", n)
	}
	tt := summaries("traffic: last 2s: sent=10 ok=8 injected_failures=1 other_failures=0 denied_by_policy=1 timeouts=0\n"+
		"traffic: last 2s: sent=10 ok=9 injected_failures=0 other_failures=0 denied_by_policy=0 timeouts=1\n"+
		"traffic: last 2s: sent=5 ok=5 injected_failures=0 other_failures=0 timeouts=0\n", 1)
	if tt != (trafficTotals{ok: 14, timeouts: 1}) || tt.requests() != 15 {
		t.Errorf("summaries = %+v", tt)
	}
}

// TestRegistryRoutes checks the registry the demo writes: the controller's
// local backend and policy index accept it, and outbound routing computes
// the split and books's policy from it, as in a running demo.
func TestRegistryRoutes(t *testing.T) {
	d := &demo{opts: Options{FailureRate: 0.05, SlowRate: DefaultSlowRate}, dir: t.TempDir()}
	if err := d.prepare(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(d.dir, "registry.yaml")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := local.ParseRegistry(raw)
	if err != nil {
		t.Fatal(err)
	}
	endpoints := map[string][]string{}
	for _, s := range reg.Services {
		for _, e := range s.Endpoints {
			endpoints[s.Name] = append(endpoints[s.Name], e.Labels["deployment"])
		}
	}
	want := map[string][]string{"authors": {"authors-v1"}, "authors-v1": {"authors-v1"}, "authors-v2": {"authors-v2"},
		"books": {"books"}, "web": {"web"}, "traffic": {"traffic"}}
	if diff := cmp.Diff(want, endpoints); diff != "" {
		t.Errorf("the Services' endpoints by deployment (-want +got):\n%s", diff)
	}

	index, err := policy.NewLocal(policy.LocalOptions{Cluster: policy.Cluster{TrustDomain: trustDomain}})
	if err != nil {
		t.Fatal(err)
	}
	lb, err := local.New(local.Options{Path: path, OnLoad: index.Apply})
	if err != nil {
		t.Fatal(err)
	}
	src, err := routes.New(routes.Options{Services: lb, Routes: index})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan struct{})
	go func() { index.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()
	if err := src.WaitSynced(ctx); err != nil {
		t.Fatal(err)
	}
	table := func(service string) *destinationv1.OutboundRoutes {
		w, err := src.WatchRoutes(service+".demo.svc.cluster.local:8080", "")
		if err != nil {
			t.Fatal(err)
		}
		defer w.Close()
		return w.Table()
	}

	var split []string
	for _, r := range table(RoleAuthors).GetRoutes() {
		for _, rule := range r.GetRules() {
			for _, b := range rule.GetBackends() {
				split = append(split, fmt.Sprintf("%s %s=%d", r.GetRef().GetName(), b.GetAuthority(), b.GetWeight()))
			}
		}
	}
	if diff := cmp.Diff([]string{
		"authors-split authors-v1.demo.svc.cluster.local:8080=90",
		"authors-split authors-v2.demo.svc.cluster.local:8080=10",
	}, split); diff != "" {
		t.Errorf("authors's routes (-want +got):\n%s", diff)
	}
	books := table(RoleBooks).GetRoutes()
	if len(books) != 1 || books[0].GetRef().GetName() != booksRoute || len(books[0].GetRules()) != 1 {
		t.Fatalf("books's routes: %v", books)
	}
	p := books[0].GetRules()[0].GetPolicy()
	if p.GetRequestTimeoutMs() != uint64(booksTimeout.Milliseconds()) || p.GetRetry().GetLimit() != booksRetries ||
		!slices.Equal(p.GetRetry().GetGrpcCodes(), []uint32{uint32(codes.Unavailable)}) {
		t.Errorf("books's rule policy: %v, want a %s timeout and %d retries of UNAVAILABLE", p, booksTimeout, booksRetries)
	}
}
