package redirect

import (
	"context"
	"errors"
	"fmt"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// fakeIptables keeps a nat table in memory and understands the commands a
// Plan uses, failing the way iptables does.
type fakeIptables struct {
	programs map[string]string // program -> "--version" output
	chains   map[string][]string
	denied   bool
	calls    []string
}

func newFake(programs ...string) *fakeIptables {
	f := &fakeIptables{programs: map[string]string{}, chains: map[string][]string{"PREROUTING": nil, "OUTPUT": nil}}
	for _, p := range programs {
		f.programs[p] = "iptables v1.8.9 (nf_tables)"
	}
	return f
}

func (f *fakeIptables) LookPath(p string) (string, error) {
	if _, ok := f.programs[p]; ok {
		return "/usr/sbin/" + p, nil
	}
	return "", exec.ErrNotFound
}

func (f *fakeIptables) Run(_ context.Context, program string, args ...string) ([]byte, error) {
	f.calls = append(f.calls, program+" "+strings.Join(args, " "))
	if args[0] == "--version" {
		return []byte(f.programs[program]), nil
	}
	if f.denied {
		return []byte("iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"), errors.New("exit status 4")
	}
	// Strip "-w 5 -t nat".
	if len(args) < 5 || args[0] != "-w" || args[2] != "-t" || args[3] != "nat" {
		return []byte("unexpected arguments"), errors.New("exit status 2")
	}
	op, chain, rule := args[4], "", ""
	if len(args) > 5 {
		chain, rule = args[5], strings.Join(args[6:], " ")
	}
	rules, exists := f.chains[chain]
	fail := func(msg string) ([]byte, error) { return []byte(msg), errors.New("exit status 1") }
	switch op {
	case "-S":
		return nil, nil
	case "-N":
		if exists {
			return fail("iptables: Chain already exists.")
		}
		f.chains[chain] = nil
	case "-F":
		if !exists {
			return fail("iptables: No chain/target/match by that name.")
		}
		f.chains[chain] = nil
	case "-A":
		if !exists {
			return fail("iptables: No chain/target/match by that name.")
		}
		f.chains[chain] = append(rules, rule)
	case "-C":
		if !slices.Contains(rules, rule) {
			return fail("iptables: Bad rule (does a matching rule exist in that chain?).")
		}
	default:
		return fail("unknown op " + op)
	}
	return nil, nil
}

func TestInstallIsIdempotent(t *testing.T) {
	ctx := context.Background()
	c := defaultConfig()
	c.SkipOutboundPorts = []PortRange{{443, 443}}
	rs, err := Plan(c, IPv4)
	if err != nil {
		t.Fatal(err)
	}
	steps := Steps(rs)
	f := newFake("iptables-nft")
	if err := InstallIptables(ctx, f, "iptables-nft", steps); err != nil {
		t.Fatalf("first InstallIptables: %v", err)
	}
	once := fmt.Sprint(f.chains)
	if err := InstallIptables(ctx, f, "iptables-nft", steps); err != nil {
		t.Fatalf("second InstallIptables: %v", err)
	}
	if diff := cmp.Diff(once, fmt.Sprint(f.chains)); diff != "" {
		t.Errorf("second InstallIptables changed the table (-once +twice):\n%s", diff)
	}
	if got := len(f.chains["PREROUTING"]); got != 1 {
		t.Errorf("PREROUTING has %d rules, want 1 jump", got)
	}
	if got := len(f.chains["OUTPUT"]); got != 1 {
		t.Errorf("OUTPUT has %d rules, want 1 jump", got)
	}
	if got := len(f.chains[OutboundChain]); got != 5 {
		t.Errorf("%s has %d rules, want 5: %q", OutboundChain, got, f.chains[OutboundChain])
	}
}

func TestInstallReportsPermission(t *testing.T) {
	rs, _ := Plan(defaultConfig(), IPv4)
	steps := Steps(rs)
	f := newFake("iptables-nft")
	f.denied = true
	err := InstallIptables(context.Background(), f, "iptables-nft", steps)
	if !errors.Is(err, ErrPermission) {
		t.Fatalf("InstallIptables error = %v, want ErrPermission", err)
	}
	if !strings.Contains(err.Error(), "iptables-nft") {
		t.Errorf("error %q does not name the program", err)
	}
}

func TestInstallNamesTheFailingCommand(t *testing.T) {
	f := newFake("iptables-nft")
	err := InstallIptables(context.Background(), f, "iptables-nft", []Step{{Args: []string{"-w", "5", "-t", "nat", "-A", "MISSING", "-j", "RETURN"}}})
	if err == nil || !strings.Contains(err.Error(), "iptables-nft -w 5 -t nat -A MISSING -j RETURN") || !strings.Contains(err.Error(), "No chain") {
		t.Fatalf("InstallIptables error = %v, want the command and iptables' message", err)
	}
}

func TestProgram(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name     string
		programs []string
		mode     Mode
		family   Family
		want     string
		wantErr  error
	}{
		{name: "auto prefers nft", programs: []string{"iptables-legacy", "iptables-nft"}, mode: ModeAuto, want: "iptables-nft"},
		{name: "auto with only legacy", programs: []string{"iptables-legacy"}, mode: ModeAuto, want: "iptables-legacy"},
		{name: "auto with only plain", programs: []string{"iptables"}, mode: ModeAuto, want: "iptables"},
		{name: "auto ipv6", programs: []string{"ip6tables-legacy", "ip6tables-nft"}, mode: ModeAuto, family: IPv6, want: "ip6tables-nft"},
		{name: "legacy", programs: []string{"iptables-legacy", "iptables-nft"}, mode: ModeIptablesLegacy, want: "iptables-legacy"},
		{name: "nft through plain name", programs: []string{"iptables"}, mode: ModeIptablesNFT, want: "iptables"},
		{name: "legacy missing", programs: []string{"iptables"}, mode: ModeIptablesLegacy, wantErr: ErrNotInstalled},
		{name: "nothing installed", mode: ModeAuto, wantErr: ErrNotInstalled},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Program(ctx, newFake(tt.programs...), tt.mode, tt.family)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Program error = %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("Program = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestProgramAutoFollowsExistingLegacyRules(t *testing.T) {
	f := &legacyHasRules{newFake("iptables-legacy", "iptables-nft")}
	got, err := Program(context.Background(), f, ModeAuto, IPv4)
	if err != nil || got != "iptables-legacy" {
		t.Fatalf("Program = %q, %v; want iptables-legacy", got, err)
	}
}

type legacyHasRules struct{ *fakeIptables }

func (l *legacyHasRules) Run(ctx context.Context, program string, args ...string) ([]byte, error) {
	if program == "iptables-legacy" && slices.Contains(args, "-S") {
		return []byte("-P OUTPUT ACCEPT\n-A OUTPUT -j ISTIO_OUTPUT\n"), nil
	}
	return l.fakeIptables.Run(ctx, program, args...)
}
