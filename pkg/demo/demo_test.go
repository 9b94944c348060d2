package demo

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/internal/testenv"
	"github.com/conduitmesh/conduit/pkg/controller/discovery/local"
)

// demoBinaries are the binaries the demo runs, built once per test run
// into one directory (testenv.BuildDir).
var demoBinaries = []string{"./cmd/conduit", "./cmd/conduit-proxy", "./cmd/conduit-controller"}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

func TestMissingBinaries(t *testing.T) {
	dir := t.TempDir()
	self := filepath.Join(dir, "conduit")
	os.WriteFile(self, []byte("#!/bin/sh\n"), 0o755)
	err := Run(context.Background(), Options{Self: self, BinDir: dir, RPS: 10})
	if !errors.Is(err, ErrMissingBinary) || !strings.Contains(err.Error(), "make build") || !strings.Contains(err.Error(), "conduit-controller") {
		t.Fatalf("err = %v", err)
	}
}

func TestBadOptions(t *testing.T) {
	for _, o := range []Options{
		{RPS: 10, Output: "xml"},
		{RPS: 0},
		{RPS: 10, FailureRate: 2},
		{RPS: 10, Duration: -time.Second},
	} {
		if err := Run(context.Background(), o); err == nil || errors.Is(err, ErrMissingBinary) {
			t.Errorf("Run(%+v) = %v, want an option error", o, err)
		}
	}
}

// startDemo starts `conduit demo -o json` with args, reads the
// description it prints, and collects its stderr (the traffic summaries).
// The demo is killed when the test ends, if it has not stopped.
func startDemo(ctx context.Context, t *testing.T, bin string, args ...string) (*exec.Cmd, Info, *testenv.SyncBuffer) {
	t.Helper()
	cmd := exec.CommandContext(ctx, filepath.Join(bin, "conduit"), append([]string{"demo", "-o", "json"}, args...)...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stderr := &testenv.SyncBuffer{}
	cmd.Stderr = stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill() })
	var info Info
	if err := json.NewDecoder(bufio.NewReader(stdout)).Decode(&info); err != nil {
		cmd.Wait()
		t.Fatalf("reading the demo's JSON: %v\nstderr:\n%s", err, stderr.String())
	}
	return cmd, info, stderr
}

func scrape(addr string) string {
	c := &http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		return ""
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

var spiffeRE = `spiffe://cluster\.local/ns/demo/sa/[a-z]+`

// TestDemo runs the real `conduit demo` and checks, in one run:
//   - every proxy's /metrics shows requests over mTLS with
//     client_id/server_id SPIFFE IDs;
//   - the controller killed for 30 s of steady traffic makes no request
//     fail (beyond the injected ones);
//   - once restarted, Destination updates reach the proxies again;
//   - certificates rotate before they expire (1 min lifetime);
//   - when --duration ends, every child process is gone and the working
//     directory removed.
func TestDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the real demo for about 80 s")
	}
	bin := testenv.BuildDir(t, demoBinaries)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	started := time.Now()
	cmd, info, stderr := startDemo(ctx, t, bin, "--duration", "80s", "--rps", "20", "--report-every", "5s",
		"--controller-restart-delay", "30s", "--identity-lifetime", "1m")
	dir := filepath.Dir(info.Logs)
	if len(info.Services) != len(deployments) || !strings.HasPrefix(info.Export, "export CONDUIT_CONTROLLER_ADDR=127.0.0.1:") {
		t.Fatalf("info = %+v", info)
	}

	// 1. mTLS everywhere (the time it took is logged, not asserted: the
	// machine may be busy).
	inbound := regexp.MustCompile(`request_total\{direction="inbound"[^}]*tls="true",client_id="` + spiffeRE + `"[^}]*\} [1-9]`)
	outbound := regexp.MustCompile(`request_total\{direction="outbound"[^}]*tls="true",server_id="` + spiffeRE + `"[^}]*\} [1-9]`)
	for _, s := range info.Services {
		var want *regexp.Regexp
		switch s.Name {
		case RoleTraffic:
			want = outbound
		default:
			want = inbound
		}
		for !want.MatchString(scrape(s.Admin)) {
			if time.Since(started) > time.Minute {
				t.Fatalf("%s's proxy shows no mTLS requests after a minute:\n%s\nstderr:\n%s", s.Name, scrape(s.Admin), stderr.String())
			}
			time.Sleep(250 * time.Millisecond)
		}
	}
	t.Logf("mTLS on every proxy after %s", time.Since(started).Round(time.Millisecond))

	// 2. Kill the controller; the demo restarts it after 30 s.
	ctlPID := findPID(t, filepath.Join(dir, "registry.yaml"))
	if ctlPID == 0 {
		t.Fatal("controller process not found")
	}
	syscall.Kill(ctlPID, syscall.SIGKILL)
	killed := time.Now()
	testenv.Eventually(t, 45*time.Second, 250*time.Millisecond, func() error {
		if !strings.Contains(stderr.String(), "controller restarted") {
			return fmt.Errorf("controller not restarted:\n%s", stderr.String())
		}
		return nil
	})
	t.Logf("controller down for %s", time.Since(killed).Round(time.Millisecond))

	// 3. Updates resume: a new label on web's endpoint reaches the traffic
	// proxy's existing Destination stream.
	regPath := filepath.Join(dir, "registry.yaml")
	raw, err := os.ReadFile(regPath)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := local.ParseRegistry(raw)
	if err != nil {
		t.Fatal(err)
	}
	for i := range reg.Services {
		if reg.Services[i].Name == RoleWeb {
			reg.Services[i].Endpoints[0].Labels["version"] = "v2"
		}
	}
	if err := local.WriteFile(regPath, reg); err != nil {
		t.Fatal(err)
	}
	var trafficAdmin string
	for _, s := range info.Services {
		if s.Name == RoleTraffic {
			trafficAdmin = s.Admin
		}
	}
	testenv.Eventually(t, 15*time.Second, 250*time.Millisecond, func() error {
		if !strings.Contains(scrape(trafficAdmin), `dst_version="v2"`) {
			return errors.New("the registry change did not reach the traffic proxy after the controller restarted")
		}
		return nil
	})

	// 4. Rotation: each proxy certified at least twice (1 min lifetime,
	// renewal at 70 %), still serving mTLS.
	for time.Since(started) < 55*time.Second {
		time.Sleep(time.Second)
	}
	for _, s := range info.Services {
		log, _ := os.ReadFile(filepath.Join(info.Logs, s.Name+"-proxy.log"))
		if n := strings.Count(string(log), "msg=certified"); n < 2 {
			t.Errorf("%s's proxy was certified %d times in 55 s with a 1 min lifetime", s.Name, n)
		}
	}

	// 5. The end: exit 0, no failures other than the injected ones, no
	// process or file left.
	if err := cmd.Wait(); err != nil {
		t.Fatalf("conduit demo: %v\nstderr:\n%s", err, stderr.String())
	}
	out := stderr.String()
	t.Logf("demo stderr:\n%s", out)
	total := regexp.MustCompile(`traffic: total: sent=(\d+) ok=(\d+) injected_failures=(\d+) other_failures=(\d+)`).FindStringSubmatch(out)
	if total == nil {
		t.Fatal("no traffic total in the output")
	}
	sent, _ := strconv.Atoi(total[1])
	if sent < 200 || total[4] != "0" {
		t.Errorf("traffic: sent=%s ok=%s injected=%s other failures=%s; want steady traffic and no other failure", total[1], total[2], total[3], total[4])
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("working directory %s left behind (%v)", dir, err)
	}
	needles := []string{dir, info.Controller.GRPCAddr}
	for _, s := range info.Services {
		needles = append(needles, s.App, s.Inbound)
	}
	for _, n := range needles {
		if pid := findPID(t, n); pid != 0 {
			t.Errorf("process %d (%s) left behind", pid, n)
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// findPID returns a process whose command line contains needle, or 0.
func findPID(t *testing.T, needle string) int {
	t.Helper()
	entries, err := os.ReadDir("/proc")
	if err != nil {
		t.Skip("no /proc")
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		cmdline, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		if bytes.Contains(cmdline, []byte(needle)) {
			return pid
		}
	}
	return 0
}
