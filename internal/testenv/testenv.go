// Package testenv is the test harness shared by Conduit's packages: it
// builds the binaries once per `go test` process (Build, BuildDir), waits
// for a condition with a clear failure message (Eventually), collects a
// child's output safely while the test reads it (SyncBuffer), listens on a
// port a server just left (Listen), and checks what a package links
// (LinksOnly).
//
// A package that builds binaries removes them at the end of its test run by
// calling Main from its TestMain (or Cleanup, if its TestMain does more).
package testenv

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// BuildOption changes how Build and BuildDir build.
type BuildOption func(*buildConfig)

type buildConfig struct {
	ldflags []string
}

// WithVersion links the binaries as release version v
// (github.com/conduitmesh/conduit/pkg/version.Version), e.g. to build an
// "older" CLI for upgrade tests.
func WithVersion(v string) BuildOption {
	return WithLDFlags("-X github.com/conduitmesh/conduit/pkg/version.Version=" + v)
}

// WithLDFlags adds flags to the linker's command line (go build -ldflags).
func WithLDFlags(flags ...string) BuildOption {
	return func(c *buildConfig) { c.ldflags = append(c.ldflags, flags...) }
}

// builds are the binaries built by this test process.
var builds = struct {
	mu   sync.Mutex
	root string                 // temp dir holding them; removed by Cleanup
	mod  string                 // the module root, where go build runs
	done map[string]*buildEntry // key (packages and flags) -> result
}{done: map[string]*buildEntry{}}

type buildEntry struct {
	once sync.Once
	dir  string
	err  error
}

// Build builds the main package pkg — a path relative to the module root
// ("./cmd/conduit") or an import path — once per test process and returns
// the binary's path. The binary is named after the package's directory.
// Calls with other options build another copy.
func Build(t testing.TB, pkg string, opts ...BuildOption) string {
	t.Helper()
	return filepath.Join(BuildDir(t, []string{pkg}, opts...), filepath.Base(pkg))
}

// BuildDir builds the main packages pkgs into one directory, once per test
// process for each list of packages and options, and returns the directory;
// each binary is named after its package's directory. The directory and its
// parents are readable by every user (tests run binaries as other users).
func BuildDir(t testing.TB, pkgs []string, opts ...BuildOption) string {
	t.Helper()
	var c buildConfig
	for _, opt := range opts {
		opt(&c)
	}
	args := []string{"build"}
	if len(c.ldflags) > 0 {
		args = append(args, "-ldflags", strings.Join(c.ldflags, " "))
	}
	key := strings.Join(append(append([]string{}, args...), pkgs...), "\x00")

	builds.mu.Lock()
	e := builds.done[key]
	if e == nil {
		e = &buildEntry{}
		builds.done[key] = e
	}
	builds.mu.Unlock()

	e.once.Do(func() {
		root, mod, err := buildRoot()
		if err != nil {
			e.err = err
			return
		}
		sum := sha256.Sum256([]byte(key))
		e.dir = filepath.Join(root, hex.EncodeToString(sum[:6]))
		if err := os.Mkdir(e.dir, 0o755); err != nil {
			e.err = err
			return
		}
		args = append(args, "-o", e.dir+string(filepath.Separator))
		cmd := exec.Command("go", append(args, pkgs...)...)
		cmd.Dir = mod
		if out, err := cmd.CombinedOutput(); err != nil {
			e.err = fmt.Errorf("go %s: %v\n%s", strings.Join(cmd.Args[1:], " "), err, out)
		}
	})
	if e.err != nil {
		t.Fatal(e.err)
	}
	return e.dir
}

// buildRoot makes the process's build directory on first use and finds the
// module root.
func buildRoot() (root, mod string, err error) {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.root != "" {
		return builds.root, builds.mod, nil
	}
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", "", fmt.Errorf("go env GOMOD: %w", err)
	}
	gomod := strings.TrimSpace(string(out))
	if gomod == "" || gomod == os.DevNull {
		return "", "", fmt.Errorf("go env GOMOD: not inside a module")
	}
	dir, err := os.MkdirTemp("", "conduit-testenv-bin-")
	if err != nil {
		return "", "", err
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		os.RemoveAll(dir)
		return "", "", err
	}
	builds.root, builds.mod = dir, filepath.Dir(gomod)
	return builds.root, builds.mod, nil
}

// Cleanup removes every binary Build and BuildDir built in this process.
// Call it when the package's tests are done (see Main).
func Cleanup() {
	builds.mu.Lock()
	defer builds.mu.Unlock()
	if builds.root != "" {
		os.RemoveAll(builds.root)
		builds.root = ""
	}
	builds.done = map[string]*buildEntry{}
}

// Main runs the package's tests and then Cleanup; a TestMain that does
// nothing else is
//
//	func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }
func Main(m *testing.M) int {
	defer Cleanup()
	return m.Run()
}

// Eventually calls cond every interval until it returns nil, and fails the
// test if it has not by timeout, with cond's last error, e.g.
// "after 5s: stats not ready: 0 requests".
func Eventually(t testing.TB, timeout, interval time.Duration, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %s: %v", timeout, err)
			return
		}
		time.Sleep(interval)
	}
}

// Listen listens on TCP addr ("127.0.0.1:0" for any port), retrying for
// up to 5 s: rebinding the port of a server the test just stopped, to
// start it again, can take a moment. The listener closes when the test
// ends.
func Listen(t testing.TB, addr string) net.Listener {
	t.Helper()
	var lis net.Listener
	Eventually(t, 5*time.Second, 20*time.Millisecond, func() error {
		var err error
		lis, err = net.Listen("tcp", addr)
		return err
	})
	t.Cleanup(func() { lis.Close() })
	return lis
}

// SyncBuffer is a bytes.Buffer that a child process or goroutine may write
// while the test reads it. The zero value is ready to use.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

// String returns what has been written so far.
func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// LinksOnly fails t for every package outside the standard library that
// pkg ("." for the test's own package) links, itself included, and allowed
// does not list; an entry ending in "/" allows every package below it.
// The proxy's leaf packages use it to hold to the standard library,
// protowire and their few siblings before the proxy binary links them.
func LinksOnly(t testing.TB, pkg string, allowed []string) {
	t.Helper()
	out, err := exec.Command("go", "list", "-deps", "-f", "{{if not .Standard}}{{.ImportPath}}{{end}}", pkg).Output()
	if err != nil {
		msg := ""
		if ee, ok := err.(*exec.ExitError); ok {
			msg = string(ee.Stderr)
		}
		t.Fatalf("go list -deps %s: %v\n%s", pkg, err, msg)
	}
	deps := strings.Fields(string(out))
	if len(deps) == 0 {
		t.Fatalf("go list -deps %s listed nothing, not even the package", pkg)
	}
	for _, dep := range deps {
		ok := false
		for _, a := range allowed {
			ok = ok || dep == a || (strings.HasSuffix(a, "/") && strings.HasPrefix(dep, a))
		}
		if !ok {
			t.Errorf("%s links %s, which is not among %s", deps[len(deps)-1], dep, strings.Join(allowed, ", "))
		}
	}
}
