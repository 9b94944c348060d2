//go:build linux

// Package netns_test runs conduit-proxy's interception for real: it creates
// network namespaces, installs the redirect with `conduit-proxy init`, runs
// `conduit-proxy run` as the proxy user and sends traffic through it. It needs
// root (CI runs as root) and the ip program; the iptables back ends also
// need the iptables programs, the nftables one needs none.
package netns_test

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/internal/testenv"
	"github.com/conduitmesh/conduit/pkg/proxy/redirect"
	"github.com/google/nftables"
	"golang.org/x/sys/unix"
)

// Addresses of the veth pair between the two namespaces a test creates. They
// come from 198.18.0.0/15 (RFC 2544, reserved for benchmarking) and exist only
// inside those namespaces.
const (
	podIP  = "198.18.0.1"
	peerIP = "198.18.0.2"
)

// proxyUID is the user conduit-proxy runs as in these tests (init's default).
const proxyUID = 2102

// requireRoot skips the test when it cannot create namespaces, saying why.
func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the interception test needs root to create network namespaces and change their NAT rules; " +
			"run it as root (CI does: .ci/run runs as root)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("ip is not installed: install iproute2 (.ci/run installs it) to run the interception test")
	}
}

// backends are the ways conduit-proxy init can install the redirect, each
// with the --redirect-mode that selects it.
var backends = []struct {
	name string
	mode string
	// noPrograms runs init with a PATH that holds no program at all: the
	// release image has none.
	noPrograms bool
	// summary is what init's line says installed the redirect.
	summary string
}{
	{name: "nftables", mode: "auto", noPrograms: true, summary: "redirect installed with nftables over netlink (table ip conduit)"},
	{name: "iptables-nft", mode: "iptables-nft", summary: "redirect installed with iptables-nft"},
	{name: "iptables-legacy", mode: "iptables-legacy", summary: "redirect installed with iptables-legacy"},
}

// requireBackend skips the test when the back end's programs are missing.
func requireBackend(t *testing.T, mode string) {
	t.Helper()
	if !strings.HasPrefix(mode, "iptables-") {
		return // nftables over netlink needs no program
	}
	for _, p := range []string{mode, mode + "-save"} {
		if _, err := exec.LookPath(p); err != nil {
			t.Skipf("%s is not installed: install iptables (.ci/run installs it) to test the %s back end", p, mode)
		}
	}
}

// initIn runs `conduit-proxy init --redirect-mode MODE args...` inside ns;
// with noPrograms its PATH is an empty directory.
func initIn(t *testing.T, ns, bin string, noPrograms bool, mode string, args ...string) (string, error) {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"init", "--redirect-mode", mode}, args...)...)
	if noPrograms {
		cmd.Env = append(os.Environ(), "PATH="+t.TempDir())
	}
	var out []byte
	err := inNetns(ns, func() (err error) {
		out, err = cmd.CombinedOutput()
		return err
	})
	return string(out), err
}

// pair is a "pod" namespace and a "peer" namespace joined by a veth pair.
type pair struct {
	pod, peer string
}

// newPair creates the namespaces and removes them when the test ends.
func newPair(t *testing.T) pair {
	t.Helper()
	var b [4]byte
	if _, err := rand.Read(b[:]); err != nil {
		t.Fatal(err)
	}
	suffix := hex.EncodeToString(b[:])
	p := pair{pod: "conduit-pod-" + suffix, peer: "conduit-peer-" + suffix}
	for _, ns := range []string{p.pod, p.peer} {
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() {
			if out, err := exec.Command("ip", "netns", "del", ns).CombinedOutput(); err != nil {
				t.Errorf("deleting namespace %s: %v: %s", ns, err, out)
			}
		})
	}
	mustRun(t, "ip", "-n", p.pod, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", p.peer)
	for ns, ip := range map[string]string{p.pod: podIP, p.peer: peerIP} {
		mustRun(t, "ip", "-n", ns, "addr", "add", ip+"/30", "dev", "eth0")
		mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
		mustRun(t, "ip", "-n", ns, "link", "set", "eth0", "up")
	}
	return p
}

func mustRun(t *testing.T, name string, args ...string) string {
	t.Helper()
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// inNetns runs fn on an OS thread that has joined namespace ns. Sockets made
// by fn stay in ns, and processes started by fn run in ns. The thread goes
// back to its own namespace afterwards, or is discarded when it cannot.
func inNetns(ns string, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer orig.Close()
		target, err := os.Open(filepath.Join("/run/netns", ns))
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("joining namespace %s: %w", ns, err)
			return
		}
		err = fn()
		if unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else the locked thread ends with this goroutine
		errc <- err
	}()
	return <-errc
}

// listen listens on addr inside ns.
func listen(t *testing.T, ns, addr string) net.Listener {
	t.Helper()
	var ln net.Listener
	if err := inNetns(ns, func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatalf("listening on %s in %s: %v", addr, ns, err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// dial connects to addr from inside ns.
func dial(ns, addr string) (net.Conn, error) {
	var c net.Conn
	err := inNetns(ns, func() (err error) {
		c, err = net.DialTimeout("tcp", addr, 5*time.Second)
		return err
	})
	return c, err
}

// buildProxy builds conduit-proxy (once per test run) into a directory the
// proxy user can read.
func buildProxy(t *testing.T) string {
	t.Helper()
	return testenv.Build(t, "./cmd/conduit-proxy")
}

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// runIn runs a program to completion inside ns and returns its combined output.
func runIn(ns string, name string, args ...string) (string, error) {
	var out []byte
	err := inNetns(ns, func() (err error) {
		out, err = exec.Command(name, args...).CombinedOutput()
		return err
	})
	return string(out), err
}

// startIn starts a long-running program inside ns as uid/gid, stopping it
// (by its PID) when the test ends. Its output goes to a file that is logged
// when the test fails.
func startIn(t *testing.T, ns string, uid uint32, name string, args ...string) (exited <-chan struct{}) {
	t.Helper()
	logf, err := os.CreateTemp("", "conduit-netns-proc-*.log")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(logf.Name()) })
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		Credential: &syscall.Credential{Uid: uid, Gid: uid},
		Pdeathsig:  syscall.SIGKILL,
	}
	if err := inNetns(ns, cmd.Start); err != nil {
		t.Fatalf("starting %s in %s: %v", name, ns, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
		logf.Close()
		if t.Failed() {
			out, _ := os.ReadFile(logf.Name())
			t.Logf("output of %s:\n%s", filepath.Base(name), out)
		}
	})
	return done
}

// natRules returns our NAT rules in ns: for an iptables back end, the nat
// table as iptables-save prints it (the -A lines); for nftables, each rule
// of our tables read back over netlink, one line per rule.
func natRules(t *testing.T, ns, mode string) []string {
	t.Helper()
	if !strings.HasPrefix(mode, "iptables-") {
		var rules []string
		if err := inNetns(ns, func() (err error) { rules, err = nftRules(); return err }); err != nil {
			t.Fatalf("listing nftables in %s: %v", ns, err)
		}
		return rules
	}
	out, err := runIn(ns, mode+"-save", "-t", "nat")
	if err != nil {
		t.Fatalf("%s-save in %s: %v\n%s", mode, ns, err, out)
	}
	var rules []string
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "-A ") {
			rules = append(rules, line)
		}
	}
	return rules
}

// nftRules lists every rule of our tables ("ip conduit", "ip6 conduit") in
// the calling thread's namespace as "-A CHAIN <expressions>".
func nftRules() ([]string, error) {
	conn, err := nftables.New()
	if err != nil {
		return nil, err
	}
	var rules []string
	for _, family := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		chains, err := conn.ListChainsOfTableFamily(family)
		if err != nil {
			return nil, err
		}
		for _, c := range chains {
			if c.Table.Name != redirect.NFTTable {
				continue
			}
			rs, err := conn.GetRules(c.Table, c)
			if err != nil {
				return nil, err
			}
			for _, r := range rs {
				line := "-A " + c.Name
				for _, e := range r.Exprs {
					line += fmt.Sprintf(" %T%+v", e, e)
				}
				rules = append(rules, line)
			}
		}
	}
	return rules, nil
}

func countPrefix(lines []string, prefix string) int {
	n := 0
	for _, l := range lines {
		if strings.HasPrefix(l, prefix) {
			n++
		}
	}
	return n
}

// TestInitInstallsTheRedirectOnce runs `conduit-proxy init` twice in a fresh
// namespace with each back end and checks that the namespace holds one copy
// of the rules; a dry run changes nothing.
func TestInitInstallsTheRedirectOnce(t *testing.T) {
	requireRoot(t)
	bin := buildProxy(t)
	for _, b := range backends {
		t.Run(b.name, func(t *testing.T) {
			requireBackend(t, b.mode)
			p := newPair(t)
			out, err := initIn(t, p.pod, bin, b.noPrograms, b.mode, "--dry-run")
			if err != nil {
				t.Fatalf("init --dry-run: %v\n%s", err, out)
			}
			wantDry := b.mode + " -w 5 -t nat -A CONDUIT_PROXY_INBOUND"
			if b.noPrograms {
				wantDry = "table ip conduit {\n\tchain CONDUIT_PROXY_INBOUND {"
			}
			if !strings.Contains(out, wantDry) {
				t.Errorf("dry run did not print the rules (%q):\n%s", wantDry, out)
			}
			if rules := natRules(t, p.pod, b.mode); len(rules) != 0 {
				t.Fatalf("dry run changed the NAT rules: %q", rules)
			}
			args := []string{"--skip-outbound-ports", "443,8000-8010", "--skip-inbound-ports", "4191", "--skip-subnets", "198.19.0.0/16"}
			var first []string
			for i := range 2 {
				out, err := initIn(t, p.pod, bin, b.noPrograms, b.mode, args...)
				if err != nil {
					t.Fatalf("init run %d: %v\n%s", i+1, err, out)
				}
				if !strings.Contains(out, b.summary) || strings.Count(out, "\n") != 1 {
					t.Errorf("init run %d printed %q, want one line containing %q", i+1, out, b.summary)
				}
				rules := natRules(t, p.pod, b.mode)
				if i == 0 {
					first = rules
					continue
				}
				if strings.Join(first, "\n") != strings.Join(rules, "\n") {
					t.Errorf("second init changed the rules:\nfirst:\n%s\nsecond:\n%s", strings.Join(first, "\n"), strings.Join(rules, "\n"))
				}
			}
			// iptables matches both skipped outbound port ranges in one
			// multiport rule, nftables has a rule per range.
			want := map[string]int{
				"-A PREROUTING ":             1,
				"-A OUTPUT ":                 1,
				"-A CONDUIT_PROXY_INBOUND ":  2,
				"-A CONDUIT_PROXY_OUTBOUND ": 6,
			}
			if b.noPrograms {
				want["-A CONDUIT_PROXY_OUTBOUND "] = 7
			}
			for prefix, n := range want {
				if got := countPrefix(first, prefix); got != n {
					t.Errorf("%d rules start with %q, want %d; rules:\n%s", got, prefix, n, strings.Join(first, "\n"))
				}
			}
		})
	}
}

// TestInitNeedsPrivilege shows the one-line error an unprivileged user gets
// from the default mode (nftables, which needs no program).
func TestInitNeedsPrivilege(t *testing.T) {
	requireRoot(t)
	bin := buildProxy(t)
	p := newPair(t)
	var out []byte
	err := inNetns(p.pod, func() error {
		cmd := exec.Command(bin, "init")
		cmd.Env = append(os.Environ(), "PATH="+t.TempDir())
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err == nil {
		t.Fatalf("init as nobody succeeded:\n%s", out)
	}
	msg := strings.TrimSpace(string(out))
	if strings.Count(msg, "\n") != 0 || !strings.Contains(msg, "permission denied") || !strings.Contains(msg, "NET_ADMIN") {
		t.Errorf("init as nobody printed %q, want one line about permission naming NET_ADMIN", msg)
	}
}
