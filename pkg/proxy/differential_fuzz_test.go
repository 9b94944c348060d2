package proxy

import (
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/detect"
)

// accounting is an Observer that records every request the proxy
// accounted for (what metrics and tap see), with how it ended.
type accounting struct {
	mu   sync.Mutex // guards reqs
	reqs []*accounted
}

type accounted struct {
	source         netip.AddrPort
	method, target string
	length         int64 // Content-Length; -1 for chunked
	ended          bool
	unforwarded    bool // the proxy answered itself or the exchange failed
}

func (a *accounting) Active() bool { return true }

func (a *accounting) RequestStarted(r *Request) Observation {
	target := r.Path
	if r.Query != "" {
		target += "?" + r.Query
	}
	req := &accounted{source: r.Source, method: r.Method, target: target, length: r.ContentLength}
	a.mu.Lock()
	a.reqs = append(a.reqs, req)
	a.mu.Unlock()
	return &accountedObs{a: a, req: req}
}

type accountedObs struct {
	a   *accounting
	req *accounted
}

func (o *accountedObs) ResponseStarted(*Response) {}

func (o *accountedObs) Ended(e EndInfo) {
	o.a.mu.Lock()
	o.req.ended, o.req.unforwarded = true, e.ProxyError != "" || e.Err != nil
	o.a.mu.Unlock()
}

// asked is the request line's method and target, in origin form. Observers
// see no target for CONNECT (its path is empty): any CONNECT line matches
// it, so asked is its method alone.
func (m accounted) asked() string {
	if m.method == http.MethodConnect {
		return m.method
	}
	return m.method + " " + originForm(m.target)
}

// take returns and forgets the requests from source.
func (a *accounting) take(source netip.AddrPort) []accounted {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []accounted
	rest := a.reqs[:0]
	for _, r := range a.reqs {
		if r.source == source {
			out = append(out, *r)
		} else {
			rest = append(rest, r)
		}
	}
	a.reqs = rest
	return out
}

// originForm is a target as net/http forwards it: in origin-form, with
// characters a URI may not hold percent-encoded (`/"` is sent on as
// `/%22`). The fast path forwards targets verbatim; both are compared in
// this form.
func originForm(target string) string {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		return target
	}
	// An empty query ("/a?") is forwarded as sent; observers see no query.
	u.ForceQuery = false
	return u.RequestURI()
}

// parsedLine is what the application parsed, with its target in origin
// form.
func parsedLine(s seenRequest) string {
	f := strings.Fields(s.line)
	if len(f) != 3 {
		return s.line
	}
	return f[0] + " " + originForm(f[1]) + " " + f[2]
}

// differentialSeeds are the classic desync families (see
// requestSmuggling) and a few more shapes.
func differentialSeeds() []string {
	var seeds []string
	for _, c := range requestSmuggling() {
		seeds = append(seeds, c.raw)
	}
	return append(seeds,
		"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
		"\r\nGET /a HTTP/1.1\r\nHost: x\r\n\r\nHEAD /b HTTP/1.1\r\nHost: x\r\n\r\nGET /c?q HTTP/1.1\r\nHost: x\r\n\r\n",
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 70000\r\n\r\n"+strings.Repeat("a", 70000)+"GET /b HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET http://x/abs HTTP/1.1\r\nHost: x\r\n\r\n",
		"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
		"CONNECT x:1 HTTP/1.1\r\nHost: x:1\r\n\r\n"+smuggled,
		"GET /up HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nhi"+smuggled,
		"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X\r\n\r\n1\r\na\r\n0\r\nX: y\r\n\r\n"+smuggled,
		"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhel",
		"GET /a HTTP/1.1\r\nHost: x\r\nTransfer_Encoding: chunked\r\n\r\n0\r\n\r\n",
	)
}

// FuzzH1Differential is a differential oracle for the HTTP/1.1 paths: the
// fuzzer's bytes go, as one client connection, through a real proxy (fast
// path or net/http path) to an application that parses with
// net/http.ReadRequest. The requests the application parsed must be
// exactly those the proxy accounted for (Observer: what metrics and tap
// see) — same order, methods, targets, body lengths — less those the
// proxy answered itself; every answer the client gets must be for a
// request it sent; and a second client, after it, must get its own answer.
func FuzzH1Differential(f *testing.F) {
	for _, s := range differentialSeeds() {
		f.Add([]byte(s), true)
		f.Add([]byte(s), false)
	}
	app := startAppRecorder(f)
	acct := &accounting{}
	proxies := map[bool]*Proxy{}
	for _, fast := range []bool{true, false} {
		proxies[fast] = startProxy(f, Config{
			InboundTarget:     app.addr(),
			Observer:          acct,
			DisableFastPath:   !fast,
			DetectTimeout:     200 * time.Millisecond,
			HeaderReadTimeout: time.Second,
			ConnectTimeout:    2 * time.Second,
			MaxHeaderBytes:    16 << 10,
		})
	}
	f.Fuzz(func(t *testing.T, in []byte, fast bool) {
		p := proxies[fast]
		app.take()
		// A last request closes the connection if the input leaves it
		// open and at a message boundary; else the client half-closes
		// when nothing more comes.
		got, src, cerr := exchangeFrom(t, p.InboundAddr(), string(in)+"GET /__end HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			50*time.Millisecond, 3*time.Second)
		second, src2, err := exchangeFrom(t, p.InboundAddr(), "GET /__second HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
			3*time.Second, 3*time.Second)
		// The proxy may fail to reach the application on a loaded machine
		// (it answers itself then); it may never give another's answer.
		if err != nil || len(second) != 1 || (second[0].body != "you asked GET /__second" && second[0].proxyErr == "") {
			t.Fatalf("after %q the second client got %+v (%v): answers are crossed", in, second, err)
		}
		app.settle(p, 2*time.Second)
		seen := app.take()
		acct.take(src2)
		// take(src) after the second exchange: the first connection's
		// requests have all ended (the proxy closed it after them).
		mine := acct.take(src)
		r := detect.Classify(in)
		if r.Protocol == detect.Unknown {
			r = detect.Final(in)
		}
		if r.Protocol != detect.HTTP1 {
			return // relayed as opaque TCP: the proxy does not parse it
		}
		var parsed []seenRequest
		for _, s := range seen {
			if s.line != "GET /__second 0" {
				parsed = append(parsed, s)
			}
		}
		// Each request the application parsed is the next one the proxy
		// accounted for; those skipped were answered by the proxy.
		i := 0
		for _, s := range parsed {
			for ; i < len(mine); i++ {
				m := mine[i]
				want, line := m.asked()+" ", parsedLine(s)
				if f := strings.Fields(line); m.method == http.MethodConnect && len(f) == 3 && f[0] == m.method {
					want = f[0] + " " + f[1] + " " // any CONNECT target
				}
				if strings.HasPrefix(line, want) && bodyMatches(line[len(want):], m.length) {
					break
				}
				if !m.unforwarded {
					t.Fatalf("%q: the application parsed %q, the proxy accounted for %+v, which it says it forwarded", in, lines(parsed), mine)
				}
			}
			if i == len(mine) {
				t.Fatalf("%q: the application parsed %q that the proxy did not account for (it accounted for %+v)", in, s.line, mine)
			}
			i++
		}
		for _, m := range mine[i:] {
			if !m.unforwarded && m.method != http.MethodConnect {
				t.Fatalf("%q: the proxy accounted for %+v as forwarded; the application parsed %q", in, m, lines(parsed))
			}
		}
		// Every answer is for a request of this client, in order.
		j := 0
		for _, resp := range got {
			asked, ok := strings.CutPrefix(resp.body, "you asked ")
			if !ok || resp.status != http.StatusOK {
				continue
			}
			if m, t, ok := strings.Cut(asked, " "); ok {
				asked = m + " " + originForm(t)
			}
			for ; j < len(mine); j++ {
				if asked == mine[j].asked() || mine[j].method == http.MethodConnect && strings.HasPrefix(asked, http.MethodConnect+" ") {
					break
				}
			}
			if j == len(mine) {
				t.Fatalf("%q: the client got the answer %q, not to any of its requests %+v (%v)", in, resp.body, mine, cerr)
			}
			j++
		}
	})
}

// bodyMatches compares the body length the application read with the
// Content-Length the proxy accounted for (-1 when chunked: any length). A
// body cut short (-1) matches: the exchange failed.
func bodyMatches(got string, length int64) bool {
	return length < 0 || got == "-1" || got == fmt.Sprint(length)
}
