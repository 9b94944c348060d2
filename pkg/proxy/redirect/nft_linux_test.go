package redirect

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/origdst"
	"github.com/google/go-cmp/cmp"
	"github.com/google/nftables"
	"github.com/google/nftables/userdata"
	"golang.org/x/sys/unix"
)

// inNewNetns runs fn on an OS thread that has left for a new, empty network
// namespace. The thread is never reused (it ends with its goroutine), so the
// namespace goes away when fn's sockets are closed. Programs fn starts run
// in the namespace too.
func inNewNetns(t *testing.T, fn func() error) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to create a network namespace and change its nftables; run as root (CI does)")
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with this goroutine
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("unshare(CLONE_NEWNET): %w", err)
			return
		}
		errc <- fn()
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// listRuleset reads our tables back from the kernel: for each family, each
// chain with its hook and every rule's expressions and comment.
func listRuleset() (string, error) {
	conn, err := nftables.New()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, family := range []nftables.TableFamily{nftables.TableFamilyIPv4, nftables.TableFamilyIPv6} {
		chains, err := conn.ListChainsOfTableFamily(family)
		if err != nil {
			return "", err
		}
		for _, c := range chains {
			if c.Table.Name != NFTTable {
				continue
			}
			fmt.Fprintf(&b, "family %d chain %s type %q", family, c.Name, c.Type)
			if c.Hooknum != nil {
				fmt.Fprintf(&b, " hook %d priority %d", *c.Hooknum, *c.Priority)
			}
			b.WriteString("\n")
			rules, err := conn.GetRules(c.Table, c)
			if err != nil {
				return "", err
			}
			for _, r := range rules {
				comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
				fmt.Fprintf(&b, "\trule %q:", comment)
				for _, e := range r.Exprs {
					fmt.Fprintf(&b, " %T%+v", e, e)
				}
				b.WriteString("\n")
			}
		}
	}
	return b.String(), nil
}

func testConfig() Config {
	c := defaultConfig()
	c.SkipInboundPorts = []PortRange{{4190, 4191}}
	c.SkipOutboundPorts = []PortRange{{443, 443}, {8000, 8010}}
	c.SkipSubnets = []netip.Prefix{netip.MustParsePrefix("198.19.0.0/16"), netip.MustParsePrefix("fd00::/8")}
	return c
}

// TestInstallNFTIsIdempotentAndAtomic installs both families over netlink in
// a fresh namespace, twice: the kernel holds one copy of the plan, rule for
// rule. A batch the kernel refuses changes nothing.
func TestInstallNFTIsIdempotentAndAtomic(t *testing.T) {
	rulesets, err := PlanAll(testConfig(), true)
	if err != nil {
		t.Fatal(err)
	}
	inNewNetns(t, func() error {
		ctx := context.Background()
		if err := InstallNFT(ctx, rulesets); err != nil {
			return fmt.Errorf("first InstallNFT: %w", err)
		}
		once, err := listRuleset()
		if err != nil {
			return err
		}
		if err := InstallNFT(ctx, rulesets); err != nil {
			return fmt.Errorf("second InstallNFT: %w", err)
		}
		twice, err := listRuleset()
		if err != nil {
			return err
		}
		if diff := cmp.Diff(once, twice); diff != "" {
			t.Errorf("second install changed the ruleset (-once +twice):\n%s", diff)
		}
		// Every planned rule is there once, with its comment, in each family.
		for _, rs := range rulesets {
			for _, c := range rs.Chains {
				n := 0
				for _, r := range c.Rules {
					n += len(nftRules(r))
				}
				header := fmt.Sprintf("family %d chain %s ", map[Family]int{IPv4: unix.NFPROTO_IPV4, IPv6: unix.NFPROTO_IPV6}[rs.Family], c.Name)
				section := once[strings.Index(once, header):]
				if next := strings.Index(section[1:], "family "); next >= 0 {
					section = section[:next+1]
				}
				if got := strings.Count(section, "\trule "); got != n {
					t.Errorf("%s: %d rules, want %d:\n%s", header, got, n, section)
				}
			}
		}
		for _, want := range []string{`rule "conduit: skip subnet"`, `rule "conduit: proxy uid"`, "hook 0 priority -100", "hook 3 priority -100"} {
			if !strings.Contains(once, want) {
				t.Errorf("ruleset lacks %q:\n%s", want, once)
			}
		}

		// A batch the kernel refuses (a jump to a chain that does not exist)
		// leaves the installed ruleset as it was.
		broken := []Ruleset{{Family: IPv4, Chains: []Chain{{Name: "PREROUTING", Hook: HookPrerouting,
			Rules: []Rule{{Action: Action{Kind: Jump, Chain: "MISSING"}}}}}}}
		err = InstallNFT(ctx, broken)
		if err == nil {
			return errors.New("installing a jump to a missing chain succeeded")
		}
		// The error names the message the kernel refused.
		if want := `add rule "jump MISSING" to table ip conduit chain PREROUTING`; !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name the refused message %q", err, want)
		}
		after, err := listRuleset()
		if err != nil {
			return err
		}
		if diff := cmp.Diff(once, after); diff != "" {
			t.Errorf("a refused batch changed the ruleset (-before +after):\n%s", diff)
		}
		return nil
	})
}

// TestNFTTextIsWhatNetlinkInstalls loads the --dry-run text with the nft
// program in one namespace and installs over netlink in another: the kernel
// lists the same ruleset for both. It needs the nft program (the product
// does not).
func TestNFTTextIsWhatNetlinkInstalls(t *testing.T) {
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("the nft program is not installed (apt-get install nftables; .ci/run installs it)")
	}
	rulesets, err := PlanAll(testConfig(), true)
	if err != nil {
		t.Fatal(err)
	}
	list := func() (string, error) {
		out, err := exec.Command("nft", "list", "ruleset").CombinedOutput()
		if err != nil {
			return "", fmt.Errorf("nft list ruleset: %v: %s", err, out)
		}
		return string(out), nil
	}
	var fromText, fromNetlink string
	inNewNetns(t, func() error {
		cmd := exec.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(RenderNFT(rulesets))
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("nft -f of the rendered ruleset: %v: %s", err, out)
		}
		fromText, err = list()
		return err
	})
	inNewNetns(t, func() error {
		if err := InstallNFT(context.Background(), rulesets); err != nil {
			return err
		}
		fromNetlink, err = list()
		return err
	})
	if diff := cmp.Diff(fromText, fromNetlink); diff != "" {
		t.Errorf("nft lists different rulesets (-from text +from netlink):\n%s", diff)
	}
	if !strings.Contains(fromNetlink, "redirect to :4140") || !strings.Contains(fromNetlink, "table ip6 conduit") {
		t.Errorf("listing lacks the redirect:\n%s", fromNetlink)
	}
}

// TestNFTRedirectKeepsTheOriginalDestination sends a connection to an
// address that only exists in the test's namespace; the nftables redirect
// delivers it to a local listener, which reads where it was going with
// SO_ORIGINAL_DST exactly as the proxy does (conntrack NAT records it).
func TestNFTRedirectKeepsTheOriginalDestination(t *testing.T) {
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("the ip program is not installed (iproute2): it sets up the test's namespace")
	}
	inNewNetns(t, func() error {
		// A veth pair in this namespace only, so 198.18.0.2 has a route
		// (through v0); the redirect rewrites the connection before it
		// would leave v0, and v1 is in the same namespace anyway.
		for _, args := range [][]string{
			{"link", "set", "lo", "up"},
			{"link", "add", "v0", "type", "veth", "peer", "name", "v1"},
			{"addr", "add", "198.18.0.1/30", "dev", "v0"},
			{"link", "set", "v0", "up"},
			{"link", "set", "v1", "up"},
		} {
			if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
				return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, out)
			}
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		defer ln.Close()
		c := defaultConfig()
		c.OutboundPort = uint16(ln.Addr().(*net.TCPAddr).Port)
		c.ProxyUID = 65000 // not us: the test's own connection is redirected
		rulesets, err := PlanAll(c, false)
		if err != nil {
			return err
		}
		if err := InstallNFT(context.Background(), rulesets); err != nil {
			return err
		}
		want := netip.MustParseAddrPort("198.18.0.2:8080")
		client, err := net.DialTimeout("tcp", want.String(), 5*time.Second)
		if err != nil {
			return fmt.Errorf("dialing %s through the redirect: %w", want, err)
		}
		defer client.Close()
		ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
		server, err := ln.Accept()
		if err != nil {
			return fmt.Errorf("the redirect did not reach the listener: %w", err)
		}
		defer server.Close()
		got, err := origdst.Get(server)
		if err != nil {
			return fmt.Errorf("origdst.Get: %w", err)
		}
		if got != want {
			t.Errorf("original destination %s, want %s", got, want)
		}
		if server.RemoteAddr().String() != client.LocalAddr().String() {
			t.Errorf("listener saw %s, client is %s", server.RemoteAddr(), client.LocalAddr())
		}
		return nil
	})
}

// TestInstallNFTWithoutPermission: a process without CAP_NET_ADMIN gets
// ErrPermission, not a fallback.
func TestInstallNFTWithoutPermission(t *testing.T) {
	rulesets, _ := PlanAll(defaultConfig(), false)
	inNewNetns(t, func() error {
		// Drop CAP_NET_ADMIN from this thread only (capset is per thread).
		var hdr unix.CapUserHeader
		hdr.Version = unix.LINUX_CAPABILITY_VERSION_3
		var data [2]unix.CapUserData
		if err := unix.Capget(&hdr, &data[0]); err != nil {
			return err
		}
		data[0].Effective &^= 1 << unix.CAP_NET_ADMIN
		if err := unix.Capset(&hdr, &data[0]); err != nil {
			return err
		}
		err := InstallNFT(context.Background(), rulesets)
		t.Logf("without CAP_NET_ADMIN: %v", err)
		if !errors.Is(err, ErrPermission) || errors.Is(err, ErrNFTablesUnavailable) {
			t.Errorf("InstallNFT without CAP_NET_ADMIN = %v, want ErrPermission", err)
		}
		if !errors.Is(err, syscall.EPERM) {
			t.Errorf("error %v does not carry EPERM", err)
		}
		return nil
	})
}
