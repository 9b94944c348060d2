package main

import (
	"bufio"
	"context"
	"crypto/x509"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/conduitmesh/conduit/pkg/pki"
)

// buildController compiles conduit-controller into dir, from the working
// tree of repo or, with rev, from that commit exported with git archive (so
// that other people's uncommitted edits are not measured). source says which.
func buildController(ctx context.Context, repo, rev, dir string) (bin, source string, err error) {
	src := repo
	gitOut := func(args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, "git", append([]string{"-C", repo}, args...)...).Output()
		return strings.TrimSpace(string(out)), err
	}
	if rev != "" {
		sha, err := gitOut("rev-parse", "--verify", rev+"^{commit}")
		if err != nil {
			return "", "", fmt.Errorf("-controller-rev %q is not a commit of %s", rev, repo)
		}
		src = filepath.Join(dir, "src")
		tarball := filepath.Join(dir, "src.tar")
		for _, c := range [][]string{
			{"git", "-C", repo, "archive", "-o", tarball, sha},
			{"mkdir", "-p", src},
			{"tar", "-xf", tarball, "-C", src},
		} {
			if out, err := exec.CommandContext(ctx, c[0], c[1:]...).CombinedOutput(); err != nil {
				return "", "", fmt.Errorf("%s: %v: %s", strings.Join(c, " "), err, out)
			}
		}
		source = "commit " + sha
	} else if d, err := gitOut("describe", "--always", "--dirty"); err == nil {
		source = "working tree at " + d
	} else {
		source = "working tree of " + repo
	}
	bin = filepath.Join(dir, "conduit-controller")
	// Built as goreleaser.yaml ships it.
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/conduit-controller")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("building conduit-controller in %s: %v: %s", src, err, out)
	}
	return bin, source, nil
}

// controllerProc is the conduit-controller the bench started.
type controllerProc struct {
	cmd                 *exec.Cmd
	grpcAddr, adminAddr string
	identity            string // its SPIFFE ID, which proxies verify
	anchors             *x509.CertPool
	logPath             string
	exited              chan struct{}
}

// startController runs bin in Kubernetes mode against kubeconfig, with a
// fresh trust anchor and issuer in dir, and waits until it is ready (its
// informers synced).
func startController(ctx context.Context, bin, dir, kubeconfig string, statsInterval time.Duration) (*controllerProc, error) {
	ca, err := pki.Generate(time.Now(), "cluster.local", 24*time.Hour, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	pkiDir := filepath.Join(dir, "identity")
	if err := ca.WriteDir(pkiDir); err != nil {
		return nil, err
	}
	anchors, err := pki.Pool(ca.AnchorPEM)
	if err != nil {
		return nil, err
	}
	c := &controllerProc{anchors: anchors, logPath: filepath.Join(dir, "controller.log"), exited: make(chan struct{})}
	logFile, err := os.Create(c.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close() // the child has its own descriptor
	c.cmd = exec.Command(bin,
		"--discovery", "kubernetes", "--kubeconfig", kubeconfig,
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--identity-issuer-dir", pkiDir,
		"--stats-interval", statsInterval.String(),
		"--log-level", "warn")
	c.cmd.Stderr = logFile
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := c.cmd.Start(); err != nil {
		return nil, err
	}
	lines := make(chan string, 8)
	go func() { // ends with the process's stdout
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
		io.Copy(io.Discard, stdout) //nolint:errcheck // draining
	}()
	go func() {
		c.cmd.Wait() //nolint:errcheck // exited tells
		close(c.exited)
	}()
	deadline := time.After(time.Minute)
	for c.grpcAddr == "" || c.adminAddr == "" || c.identity == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				c.stop()
				return nil, fmt.Errorf("conduit-controller exited before listening: %s", c.logTail())
			}
			k, v, _ := strings.Cut(l, "=")
			switch k {
			case "grpc-addr":
				c.grpcAddr = v
			case "admin-addr":
				c.adminAddr = v
			case "controller-identity":
				c.identity = v
			}
		case <-deadline:
			c.stop()
			return nil, fmt.Errorf("conduit-controller announced no addresses within a minute: %s", c.logTail())
		case <-ctx.Done():
			c.stop()
			return nil, ctx.Err()
		}
	}
	for start := time.Now(); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get("http://" + c.adminAddr + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return c, nil
			}
		}
		if time.Since(start) > 2*time.Minute || ctx.Err() != nil {
			c.stop()
			return nil, fmt.Errorf("conduit-controller not ready within 2 minutes: %s", c.logTail())
		}
	}
}

func (c *controllerProc) pid() int { return c.cmd.Process.Pid }

// stop sends SIGTERM, then SIGKILL after 15 s.
func (c *controllerProc) stop() {
	c.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may have exited
	select {
	case <-c.exited:
	case <-time.After(15 * time.Second):
		c.cmd.Process.Kill() //nolint:errcheck // it may have exited
		<-c.exited
	}
}

// alive returns an error when the controller has exited.
func (c *controllerProc) alive() error {
	select {
	case <-c.exited:
		return fmt.Errorf("conduit-controller exited (%v): %s", c.cmd.ProcessState, c.logTail())
	default:
		return nil
	}
}

func (c *controllerProc) logTail() string {
	b, _ := os.ReadFile(c.logPath)
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// usage is a process's resource use at one instant, from /proc, plus the
// Go runtime's view from the controller's own /metrics.
type usage struct {
	at         time.Time
	cpu        time.Duration // user + system since start
	rssKB      int64
	hwmKB      int64
	heapInuse  float64 // go_memstats_heap_inuse_bytes
	nextGC     float64 // go_memstats_next_gc_bytes: the heap goal, twice the heap live after the last GC (GOGC=100)
	goroutines float64
}

// clockTick is USER_HZ, 100 on every Linux the bench runs on.
const clockTick = 10 * time.Millisecond

// readUsage reads /proc/PID/stat and /proc/PID/status.
func readUsage(pid int) (usage, error) {
	u := usage{at: time.Now()}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return u, err
	}
	// The command name (field 2) may hold spaces: count from the last ')'.
	i := strings.LastIndexByte(string(stat), ')')
	f := strings.Fields(string(stat)[i+1:])
	if i < 0 || len(f) < 13 {
		return u, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	utime, err1 := strconv.ParseInt(f[11], 10, 64)
	stime, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return u, fmt.Errorf("/proc/%d/stat: unexpected format", pid)
	}
	u.cpu = time.Duration(utime+stime) * clockTick
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return u, err
	}
	for l := range strings.SplitSeq(string(status), "\n") {
		k, v, _ := strings.Cut(l, ":")
		kb, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			u.rssKB = kb
		case "VmHWM":
			u.hwmKB = kb
		}
	}
	return u, nil
}

// sample reads the controller's usage, including its runtime metrics.
func (c *controllerProc) sample() (usage, error) {
	if err := c.alive(); err != nil {
		return usage{}, err
	}
	u, err := readUsage(c.pid())
	if err != nil {
		return u, err
	}
	resp, err := http.Get("http://" + c.adminAddr + "/metrics")
	if err != nil {
		return u, err
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok {
			continue
		}
		switch name {
		case "go_memstats_heap_inuse_bytes":
			u.heapInuse, _ = strconv.ParseFloat(val, 64)
		case "go_memstats_next_gc_bytes":
			u.nextGC, _ = strconv.ParseFloat(val, 64)
		case "go_goroutines":
			u.goroutines, _ = strconv.ParseFloat(val, 64)
		}
	}
	return u, sc.Err()
}
