package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"strings"
	"testing"

	"github.com/conduitmesh/conduit/pkg/proxy/iptables"
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
		check   func(t *testing.T, o *initOptions)
		wantErr string
	}{
		{name: "defaults", check: func(t *testing.T, o *initOptions) {
			want := iptables.Config{InboundPort: 4143, OutboundPort: 4140, ProxyUID: 2102}
			if diff := cmp.Diff(want, o.config); diff != "" {
				t.Errorf("config (-want +got):\n%s", diff)
			}
			if o.mode != iptables.ModeAuto || o.dryRun || o.ipv6 {
				t.Errorf("mode %q dryRun %v ipv6 %v, want auto false false", o.mode, o.dryRun, o.ipv6)
			}
		}},
		{
			name: "flags",
			args: []string{"--proxy-uid", "1337", "--skip-inbound-ports", "22,4190-4191", "--skip-outbound-ports=443",
				"--skip-subnets", "10.0.0.0/8", "--iptables-mode", "legacy", "--dry-run", "--ipv6"},
			check: func(t *testing.T, o *initOptions) {
				if o.config.ProxyUID != 1337 || len(o.config.SkipInboundPorts) != 2 || len(o.config.SkipOutboundPorts) != 1 ||
					len(o.config.SkipSubnets) != 1 || o.mode != iptables.ModeLegacy || !o.dryRun || !o.ipv6 {
					t.Errorf("options not taken from flags: %+v", o)
				}
			},
		},
		{
			name: "environment, flags win",
			args: []string{"--proxy-uid", "7"},
			env: map[string]string{"CONDUIT_PROXY_PROXY_UID": "8", "CONDUIT_PROXY_SKIP_SUBNETS": "192.168.0.0/16",
				"CONDUIT_PROXY_DRY_RUN": "true", "CONDUIT_PROXY_INBOUND_PORT": "15001"},
			check: func(t *testing.T, o *initOptions) {
				if o.config.ProxyUID != 7 {
					t.Errorf("proxy uid %d, want the flag's 7", o.config.ProxyUID)
				}
				if len(o.config.SkipSubnets) != 1 || !o.dryRun || o.config.InboundPort != 15001 {
					t.Errorf("options not taken from the environment: %+v", o)
				}
			},
		},
		{name: "bad port list", args: []string{"--skip-outbound-ports", "80,x"}, wantErr: `--skip-outbound-ports: "x" is not a port`},
		{name: "bad subnet", args: []string{"--skip-subnets", "10.0.0.0/40"}, wantErr: `--skip-subnets: "10.0.0.0/40" is not a CIDR`},
		{name: "bad mode", args: []string{"--iptables-mode", "ebpf"}, wantErr: `--iptables-mode: "ebpf" is not an iptables mode`},
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

func TestRunInitDryRunTouchesNothing(t *testing.T) {
	o, err := parseInitFlags([]string{"--dry-run", "--ipv6", "--skip-outbound-ports", "443"}, env(nil), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	r := &recordingRunner{programs: []string{"iptables-nft", "iptables-legacy", "ip6tables-nft", "ip6tables-legacy"}}
	var out bytes.Buffer
	if err := runInit(context.Background(), o, r, &out); err != nil {
		t.Fatal(err)
	}
	if len(r.calls) != 0 {
		t.Errorf("dry run ran commands: %q", r.calls)
	}
	v4, _ := iptables.Plan(o.config, iptables.IPv4)
	v6, _ := iptables.Plan(o.config, iptables.IPv6)
	want := "# conduit-proxy init --dry-run: nothing was changed; these commands would be run\n" +
		iptables.Render("iptables-nft", v4) + iptables.Render("ip6tables-nft", v6)
	if diff := cmp.Diff(want, out.String()); diff != "" {
		t.Errorf("dry run output (-want +got):\n%s", diff)
	}
}

func TestRunInitDryRunWithoutIptables(t *testing.T) {
	o, _ := parseInitFlags([]string{"--dry-run"}, env(nil), io.Discard)
	var out bytes.Buffer
	if err := runInit(context.Background(), o, &recordingRunner{}, &out); err != nil {
		t.Fatalf("dry run without iptables: %v", err)
	}
	if !strings.Contains(out.String(), "\niptables -w 5 -t nat -N CONDUIT_PROXY_INBOUND") {
		t.Errorf("dry run output does not show iptables commands:\n%s", out.String())
	}
}

func TestRunInitInstalls(t *testing.T) {
	o, _ := parseInitFlags(nil, env(nil), io.Discard)
	r := &recordingRunner{programs: []string{"iptables-legacy"}}
	var out bytes.Buffer
	if err := runInit(context.Background(), o, r, &out); err != nil {
		t.Fatal(err)
	}
	steps, _ := iptables.Plan(o.config, iptables.IPv4)
	if len(r.calls) != len(steps) {
		t.Errorf("ran %d commands, want one per step (%d): %q", len(r.calls), len(steps), r.calls)
	}
	for _, c := range r.calls {
		if !strings.HasPrefix(c, "iptables-legacy -w 5 -t nat ") {
			t.Errorf("command %q does not use iptables-legacy on the nat table", c)
		}
	}
	if got := out.String(); !strings.Contains(got, "redirect installed with iptables-legacy") || strings.Count(got, "\n") != 1 {
		t.Errorf("stdout = %q, want one summary line", got)
	}
}

func TestRunInitErrors(t *testing.T) {
	tests := []struct {
		name   string
		runner *recordingRunner
		want   []string
	}{
		{
			name:   "no permission",
			runner: &recordingRunner{programs: []string{"iptables-nft"}, failWith: "iptables v1.8.9 (nf_tables): Could not fetch rule set generation id: Permission denied (you must be root)"},
			want:   []string{"permission denied", "iptables-nft", "run conduit-proxy init as root or with the NET_ADMIN and NET_RAW capabilities"},
		},
		{
			name:   "no iptables",
			runner: &recordingRunner{},
			want:   []string{"iptables not found", "install the iptables package"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			o, _ := parseInitFlags(nil, env(nil), io.Discard)
			var out bytes.Buffer
			err := runInit(context.Background(), o, tt.runner, &out)
			if err == nil {
				t.Fatal("runInit succeeded, want an error")
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
		})
	}
}
