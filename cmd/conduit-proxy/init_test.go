package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/conduitmesh/conduit/pkg/proxy/redirect"
	"github.com/google/go-cmp/cmp"
)

// recordingRunner pretends that the named programs exist and records what
// would run; failWith makes every non-listing call fail with that output.
type recordingRunner struct {
	programs []string
	failWith string
	calls    []string
}

func (r *recordingRunner) LookPath(p string) (string, error) {
	for _, have := range r.programs {
		if have == p {
			return "/usr/sbin/" + p, nil
		}
	}
	return "", exec.ErrNotFound
}

func (r *recordingRunner) Run(_ context.Context, program string, args ...string) ([]byte, error) {
	line := program + " " + strings.Join(args, " ")
	if strings.HasSuffix(line, " -S") {
		return nil, nil
	}
	r.calls = append(r.calls, line)
	if r.failWith != "" {
		return []byte(r.failWith), errors.New("exit status 4")
	}
	return nil, nil
}

func env(vars map[string]string) func(string) string {
	return func(k string) string { return vars[k] }
}

func TestParseInitFlags(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, o *redirect.Init)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, o *redirect.Init) {
			want := redirect.Config{InboundPort: 4143, OutboundPort: 4140, ProxyUID: 2102}
			if diff := cmp.Diff(want, o.Config); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
			if o.Mode != redirect.ModeAuto || o.DryRun || o.IPv6 {
				t.Errorf("mode %q dryRun %v ipv6 %v, want auto false false", o.Mode, o.DryRun, o.IPv6)
			}
		}},
		{
			name: "flags",
			args: []string{"--proxy-uid", "1337", "--skip-inbound-ports", "22,4190-4191", "--skip-outbound-ports=443",
				"--skip-subnets", "10.0.0.0/8", "--redirect-mode", "iptables-legacy", "--dry-run", "--ipv6"},
			check: func(t *testing.T, o *redirect.Init) {
				if o.Config.ProxyUID != 1337 || len(o.Config.SkipInboundPorts) != 2 || len(o.Config.SkipOutboundPorts) != 1 ||
					len(o.Config.SkipSubnets) != 1 || o.Mode != redirect.ModeIptablesLegacy || !o.DryRun || !o.IPv6 {
					t.Errorf("options not taken from flags: %+v", o)
				}
			},
		},
		{
			name: "environment, flags win",
			args: []string{"--proxy-uid", "7"},
			env: map[string]string{"CONDUIT_PROXY_PROXY_UID": "8", "CONDUIT_PROXY_SKIP_SUBNETS": "192.168.0.0/16",
				"CONDUIT_PROXY_DRY_RUN": "true", "CONDUIT_PROXY_INBOUND_PORT": "15001"},
			check: func(t *testing.T, o *redirect.Init) {
				if o.Config.ProxyUID != 7 {
					t.Errorf("proxy uid %d, want the flag's 7", o.Config.ProxyUID)
				}
				if len(o.Config.SkipSubnets) != 1 || !o.DryRun || o.Config.InboundPort != 15001 {
					t.Errorf("options not taken from the environment: %+v", o)
				}
			},
		},
		{name: "bad port list", args: []string{"--skip-outbound-ports", "80,x"}, wantErr: `--skip-outbound-ports: "x" is not a port`},
		{name: "bad subnet", args: []string{"--skip-subnets", "10.0.0.0/40"}, wantErr: `--skip-subnets: "10.0.0.0/40" is not a CIDR`},
		{name: "bad mode", args: []string{"--redirect-mode", "ebpf"}, wantErr: `--redirect-mode: "ebpf" is not a redirect mode: use auto, nft, iptables-nft or iptables-legacy`},
		{name: "mode from the environment", env: map[string]string{"CONDUIT_PROXY_REDIRECT_MODE": "nft"}, check: func(t *testing.T, o *redirect.Init) {
			if o.Mode != redirect.ModeNFT {
				t.Errorf("mode %q, want nft", o.Mode)
			}
		}},
		{name: "port out of range", args: []string{"--inbound-port", "70000"}, wantErr: "--inbound-port 70000 is not a port"},
		{name: "same ports", args: []string{"--inbound-port", "4140"}, wantErr: "must differ"},
		{name: "bad environment", env: map[string]string{"CONDUIT_PROXY_PROXY_UID": "root"}, wantErr: `CONDUIT_PROXY_PROXY_UID="root" is not a valid --proxy-uid`},
		{name: "stray argument", args: []string{"now"}, wantErr: `unexpected argument "now"`},
		{name: "unknown flag", args: []string{"--frobnicate"}, wantErr: "flag provided but not defined"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseInitFlags(tt.args, env(tt.env), io.Discard)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("error = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tt.check(t, o)
		})
	}
}

// fakeNFT stands in for the netlink back end: it records the rulesets it
// was given and fails with err.
type fakeNFT struct {
	err   error
	calls [][]redirect.Ruleset
}

func (f *fakeNFT) install(_ context.Context, rs []redirect.Ruleset) error {
	f.calls = append(f.calls, rs)
	return f.err
}

func backends(nft *fakeNFT, r *recordingRunner) redirect.Backends {
	return redirect.Backends{NFT: nft.install, Runner: r}
}

func TestRunInitDryRunTouchesNothing(t *testing.T) {
	tests := []struct {
		mode string
		want func(v4, v6 redirect.Ruleset) string
	}{
		{mode: "auto", want: func(v4, v6 redirect.Ruleset) string {
			return "# conduit-proxy init --dry-run: nothing was changed; this nftables ruleset would be loaded over netlink\n" +
				"# in one transaction (the same as nft -f)\n" +
				"# (--redirect-mode auto runs iptables programs instead only if the kernel has no nf_tables)\n" +
				redirect.RenderNFT([]redirect.Ruleset{v4, v6})
		}},
		{mode: "iptables-nft", want: func(v4, v6 redirect.Ruleset) string {
			return "# conduit-proxy init --dry-run: nothing was changed; these commands would be run\n" +
				redirect.RenderIptables("iptables-nft", redirect.Steps(v4)) + redirect.RenderIptables("ip6tables-nft", redirect.Steps(v6))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			o, err := parseInitFlags([]string{"--dry-run", "--ipv6", "--skip-outbound-ports", "443", "--redirect-mode", tt.mode}, env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			r := &recordingRunner{programs: []string{"iptables-nft", "iptables-legacy", "ip6tables-nft", "ip6tables-legacy"}}
			nft := &fakeNFT{}
			var out bytes.Buffer
			if err := o.Run(context.Background(), backends(nft, r), &out); err != nil {
				t.Fatal(err)
			}
			if len(r.calls) != 0 || len(nft.calls) != 0 {
				t.Errorf("dry run changed something: commands %q, netlink installs %d", r.calls, len(nft.calls))
			}
			v4, _ := redirect.Plan(o.Config, redirect.IPv4)
			v6, _ := redirect.Plan(o.Config, redirect.IPv6)
			if diff := cmp.Diff(tt.want(v4, v6), out.String()); diff != "" {
				t.Errorf("dry run output (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRunInitDryRunWithoutIptables(t *testing.T) {
	o, _ := parseInitFlags([]string{"--dry-run", "--redirect-mode", "iptables-legacy"}, env(nil), io.Discard)
	var out bytes.Buffer
	if err := o.Run(context.Background(), backends(&fakeNFT{}, &recordingRunner{}), &out); err != nil {
		t.Fatalf("dry run without iptables: %v", err)
	}
	if !strings.Contains(out.String(), "\niptables-legacy -w 5 -t nat -N CONDUIT_PROXY_INBOUND") {
		t.Errorf("dry run output does not show iptables-legacy commands:\n%s", out.String())
	}
}

func TestRunInitInstalls(t *testing.T) {
	unavailable := fmt.Errorf("%w in this kernel (netlink: operation not supported)", redirect.ErrNFTablesUnavailable)
	tests := []struct {
		name     string
		args     []string
		nftErr   error
		programs []string
		wantNFT  int    // netlink installs
		wantRuns string // prefix of every iptables command, "" for none
		wantLine string
	}{
		{name: "auto uses nftables", args: []string{"--ipv6"}, programs: []string{"iptables-legacy"}, wantNFT: 1,
			wantLine: "redirect installed with nftables over netlink (table ip conduit, table ip6 conduit): inbound TCP → 4143"},
		{name: "auto falls back without nf_tables", nftErr: unavailable, programs: []string{"iptables-legacy"}, wantNFT: 1,
			wantRuns: "iptables-legacy -w 5 -t nat ",
			wantLine: "redirect installed with iptables-legacy (nf_tables is not available in this kernel (netlink: operation not supported)): inbound"},
		{name: "iptables mode runs no netlink", args: []string{"--redirect-mode", "iptables-legacy"}, programs: []string{"iptables-legacy", "iptables-nft"},
			wantRuns: "iptables-legacy -w 5 -t nat ", wantLine: "redirect installed with iptables-legacy: inbound"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseInitFlags(tt.args, env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			r := &recordingRunner{programs: tt.programs}
			nft := &fakeNFT{err: tt.nftErr}
			var out bytes.Buffer
			if err := o.Run(context.Background(), backends(nft, r), &out); err != nil {
				t.Fatal(err)
			}
			if len(nft.calls) != tt.wantNFT {
				t.Errorf("%d netlink installs, want %d", len(nft.calls), tt.wantNFT)
			}
			if tt.wantRuns == "" && len(r.calls) != 0 {
				t.Errorf("ran iptables: %q", r.calls)
			}
			if tt.wantRuns != "" {
				rs, _ := redirect.Plan(o.Config, redirect.IPv4)
				if len(r.calls) != len(redirect.Steps(rs)) {
					t.Errorf("ran %d commands, want one per step (%d): %q", len(r.calls), len(redirect.Steps(rs)), r.calls)
				}
				for _, c := range r.calls {
					if !strings.HasPrefix(c, tt.wantRuns) {
						t.Errorf("command %q does not start with %q", c, tt.wantRuns)
					}
				}
			}
			if got := out.String(); !strings.Contains(got, tt.wantLine) || strings.Count(got, "\n") != 1 {
				t.Errorf("stdout = %q, want one line containing %q", got, tt.wantLine)
			}
		})
	}
}

func TestRunInitErrors(t *testing.T) {
	unavailable := fmt.Errorf("%w in this kernel (netlink: operation not supported)", redirect.ErrNFTablesUnavailable)
	denied := fmt.Errorf("%w: nftables cannot change this network namespace (netlink receive: operation not permitted)", redirect.ErrPermission)
	tests := []struct {
		name   string
		args   []string
		nft    *fakeNFT
		runner *recordingRunner
		want   []string
	}{
		{
			name:   "nftables not permitted",
			nft:    &fakeNFT{err: denied},
			runner: &recordingRunner{programs: []string{"iptables-nft"}},
			want:   []string{"permission denied", "operation not permitted", "run conduit-proxy init as root with the NET_ADMIN capability"},
		},
		{
			name:   "iptables not permitted",
			args:   []string{"--redirect-mode", "iptables-nft"},
			nft:    &fakeNFT{},
			runner: &recordingRunner{programs: []string{"iptables-nft"}, failWith: "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"},
			want:   []string{"permission denied", "iptables-nft", "run conduit-proxy init as root with the NET_ADMIN capability", "NET_RAW"},
		},
		{
			name:   "no nf_tables and no iptables",
			nft:    &fakeNFT{err: unavailable},
			runner: &recordingRunner{},
			want:   []string{"nf_tables is not available", "iptables not found", "load the nf_tables and nft_chain_nat modules", "iptables package"},
		},
		{
			name:   "nft mode does not fall back",
			args:   []string{"--redirect-mode", "nft"},
			nft:    &fakeNFT{err: unavailable},
			runner: &recordingRunner{programs: []string{"iptables-nft"}},
			want:   []string{"nf_tables is not available"},
		},
		{
			name:   "no iptables in an iptables mode",
			args:   []string{"--redirect-mode", "iptables-legacy"},
			nft:    &fakeNFT{},
			runner: &recordingRunner{},
			want:   []string{"iptables not found", "iptables-legacy is not installed"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, err := parseInitFlags(tt.args, env(nil), io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			err = o.Run(context.Background(), backends(tt.nft, tt.runner), &out)
			if err == nil {
				t.Fatal("Init.Run succeeded, want an error")
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans several lines: %q", err)
			}
			if out.Len() != 0 {
				t.Errorf("stdout = %q, want nothing on failure", out.String())
			}
			if len(tt.runner.calls) != 0 && tt.runner.failWith == "" {
				t.Errorf("ran iptables: %q", tt.runner.calls)
			}
		})
	}
}
