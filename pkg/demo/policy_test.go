package demo

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/internal/testenv"
	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/controller/discovery/local"
)

// TestDemoPolicy runs the real `conduit demo` and checks its inbound
// policy (issue 13):
//   - a meshed client other than web calling books gets 403 with
//     conduit-proxy-error naming books's Server, and books's proxy counts
//     it in inbound_http_authz_deny_total; web's calls to books pass;
//   - tap shows the decision on books's requests, denied and allowed;
//   - the namespace flipped to all-authenticated in the registry makes a
//     plaintext client of web fail with 403 while meshed calls to web
//     succeed (the time from the registry write to the first 403 is logged).
func TestDemoPolicy(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real demo for about 30 s")
	}
	bin := testenv.BuildDir(t, demoBinaries)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd, info, stderr := startDemo(ctx, t, bin, "--duration", "2m", "--rps", "20", "--failure-rate", "0", "--report-every", "2s")
	defer func() {
		if t.Failed() {
			t.Logf("demo stderr:\n%s", stderr.String())
		}
	}()
	if !strings.Contains(info.Denied, "server/"+booksServer) {
		t.Errorf("the demo's description does not say what its policy denies: %q", info.Denied)
	}
	svc := map[string]ServiceInfo{}
	for _, s := range info.Services {
		svc[s.Name] = s
	}
	env := append(os.Environ(), "CONDUIT_CONTROLLER_ADDR="+info.Controller.GRPCAddr)
	client := &http.Client{Timeout: 5 * time.Second}
	// get sends a request to addr (a proxy's listener) for host.
	get := func(method, addr, host, path string) (int, string, error) {
		req, err := http.NewRequest(method, "http://"+addr+path, nil)
		if err != nil {
			return 0, "", err
		}
		req.Host = host
		resp, err := client.Do(req)
		if err != nil {
			return 0, "", err
		}
		defer resp.Body.Close()
		io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, resp.Header.Get("conduit-proxy-error"), nil
	}
	booksHost := "books.demo.svc.cluster.local:8080"
	webHost := "web.demo.svc.cluster.local:8080"

	// The traffic generator's own direct calls are refused (it counts
	// them apart), from the first ones on.
	testenv.Eventually(t, 60*time.Second, 250*time.Millisecond, func() error {
		if !regexp.MustCompile(`traffic: last 2s: sent=\d+ ok=[1-9]\d* injected_failures=0 other_failures=0 denied_by_policy=[1-9]`).MatchString(stderr.String()) {
			return errors.New("no traffic summary with requests admitted and denied yet")
		}
		return nil
	})

	t.Run("denied call", func(t *testing.T) {
		// The traffic generator's proxy is a meshed client of books
		// (identity traffic) that books's Server does not admit.
		code, reason, err := get(http.MethodPost, svc[RoleTraffic].Outbound, booksHost, "/demo.v1.Books/GetBook")
		if err != nil || code != http.StatusForbidden || !strings.Contains(reason, "server "+booksServer) ||
			!strings.Contains(reason, "spiffe://cluster.local/ns/demo/sa/traffic") {
			t.Errorf("traffic → books: %d %q %v; want 403 naming server %s and the client", code, reason, err, booksServer)
		}
		// web → books passes: a book page needs it.
		if code, reason, err := get(http.MethodGet, svc[RoleTraffic].Outbound, webHost, "/books/3"); err != nil || code != http.StatusOK {
			t.Errorf("traffic → web → books: %d %q %v; want 200", code, reason, err)
		}
		metrics := scrape(svc[RoleBooks].Admin)
		deny := regexp.MustCompile(`inbound_http_authz_deny_total\{[^}]*tls="true",client_id="spiffe://cluster\.local/ns/demo/sa/traffic",[^}]*srv_kind="server",srv_name="` + booksServer + `"[^}]*\} [1-9]`)
		allow := regexp.MustCompile(`inbound_http_authz_allow_total\{[^}]*client_id="spiffe://cluster\.local/ns/demo/sa/web",[^}]*srv_name="` + booksServer + `"[^}]*authz_name="` + booksPolicy + `"\} [1-9]`)
		probes := regexp.MustCompile(`inbound_http_authz_allow_total\{[^}]*tls="false",[^}]*route_name="books-health"[^}]*\} [1-9]`)
		for what, re := range map[string]*regexp.Regexp{"traffic denied": deny, "web allowed": allow, "probes allowed": probes} {
			if !re.MatchString(metrics) {
				t.Errorf("books's proxy /metrics: no series for %s matching %s:\n%s", what, re, grepLines(metrics, "authz"))
			}
		}
	})

	t.Run("tap", func(t *testing.T) {
		tctx, tcancel := context.WithTimeout(ctx, 20*time.Second)
		defer tcancel()
		tap := exec.CommandContext(tctx, filepath.Join(bin, "conduit"), "tap", "deploy/books", "-n", Namespace, "--path", "/demo.v1.Books/")
		tap.Env = env
		out, err := tap.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var tapErr testenv.SyncBuffer
		tap.Stderr = &tapErr
		if err := tap.Start(); err != nil {
			t.Fatal(err)
		}
		want := map[string]*regexp.Regexp{
			"deny":  regexp.MustCompile(`^req id=\S+ proxy=in src=\S+ dst=\S+ tls=true :method=POST :authority=` + regexp.QuoteMeta(booksHost) + ` :path=/demo\.v1\.Books/GetBook authz=deny:server/` + booksServer + `$`),
			"allow": regexp.MustCompile(`^req id=\S+ proxy=in .* :path=/demo\.v1\.Books/GetBook authz=allow:server/` + booksServer + `$`),
		}
		seen := map[string]string{}
		sc := bufio.NewScanner(out)
		for sc.Scan() && len(seen) < len(want) {
			for what, re := range want {
				if re.MatchString(sc.Text()) {
					seen[what] = sc.Text()
				}
			}
		}
		tcancel()
		io.Copy(io.Discard, out)
		tap.Wait()
		for what := range want {
			if seen[what] == "" {
				t.Errorf("conduit tap deploy/books showed no %s decision within 20 s (stderr %s)", what, tapErr.String())
			}
		}
		t.Logf("tap: %s", seen["deny"])
	})

	t.Run("flip to all-authenticated", func(t *testing.T) {
		web := svc[RoleWeb]
		// Before: plaintext clients of web (its proxy's inbound) are admitted.
		if code, reason, err := get(http.MethodGet, web.Inbound, webHost, "/books/3"); err != nil || code != http.StatusOK {
			t.Fatalf("plaintext → web before the flip: %d %q %v; want 200", code, reason, err)
		}
		regPath := filepath.Join(filepath.Dir(info.Logs), "registry.yaml")
		raw, err := os.ReadFile(regPath)
		if err != nil {
			t.Fatal(err)
		}
		reg, err := local.ParseRegistry(raw)
		if err != nil {
			t.Fatal(err)
		}
		reg.Namespaces = []local.Namespace{{Name: Namespace, Annotations: map[string]string{
			contract.AnnotationDefaultInboundPolicy: contract.PolicyAllAuthenticated,
		}}}
		written := time.Now()
		if err := local.WriteFile(regPath, reg); err != nil {
			t.Fatal(err)
		}
		var code int
		var reason string
		for code != http.StatusForbidden {
			if time.Since(written) > 10*time.Second {
				t.Fatalf("plaintext → web still %d %q 10 s after the flip; want 403", code, reason)
			}
			time.Sleep(10 * time.Millisecond)
			code, reason, err = get(http.MethodGet, web.Inbound, webHost, "/books/3")
			if err != nil {
				t.Fatal(err)
			}
		}
		took := time.Since(written)
		t.Logf("registry written → first 403 for a plaintext client: %s", took.Round(time.Millisecond))
		if took > 3*time.Second {
			t.Errorf("the flip took %s to be enforced; want a few hundred milliseconds (the registry is polled every 250 ms)", took)
		}
		if !strings.Contains(reason, "all-authenticated") {
			t.Errorf("403 reason %q does not name the all-authenticated default", reason)
		}
		// Meshed clients still get through (mTLS from the traffic
		// generator's proxy), web's calls to books and authors too.
		for range 5 {
			if code, reason, err := get(http.MethodGet, svc[RoleTraffic].Outbound, webHost, "/books/3"); err != nil || code != http.StatusOK {
				t.Errorf("meshed traffic → web after the flip: %d %q %v; want 200", code, reason, err)
			}
		}
		if code, _, err := get(http.MethodGet, web.Inbound, webHost, "/books/3"); err != nil || code != http.StatusForbidden {
			t.Errorf("plaintext → web after the flip: %d %v; want 403 again", code, err)
		}
	})

	// The end: Ctrl-C; the generator's direct calls were all denied, and
	// nothing else failed.
	cmd.Process.Signal(os.Interrupt)
	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	select {
	case err := <-waited:
		if err != nil {
			t.Errorf("conduit demo: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("conduit demo did not stop within 30 s of SIGINT")
	}
	total := regexp.MustCompile(`traffic: total: sent=(\d+) ok=(\d+) injected_failures=(\d+) other_failures=(\d+) denied_by_policy=(\d+)`).FindStringSubmatch(stderr.String())
	if total == nil || total[4] != "0" || total[5] == "0" {
		t.Errorf("traffic total %q: want denied requests and no other failure", total)
	} else {
		t.Logf("traffic: sent=%s ok=%s denied_by_policy=%s", total[1], total[2], total[5])
	}
}

// grepLines returns the lines of s containing sub.
func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
