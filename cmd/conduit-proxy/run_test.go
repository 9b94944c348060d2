package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
	"github.com/conduitmesh/conduit/pkg/proxy/sidecar"
)

func TestParseRunOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, o *sidecar.Config)
		wantErr string
	}{
		{
			name: "defaults",
			check: func(t *testing.T, o *sidecar.Config) {
				if o.InboundListen != "0.0.0.0:4143" || o.OutboundListen != "127.0.0.1:4140" || o.AdminListen != "0.0.0.0:4191" {
					t.Errorf("listeners %q %q %q", o.InboundListen, o.OutboundListen, o.AdminListen)
				}
				if o.ShutdownGrace != 20*time.Second || o.DetectTimeout != 10*time.Second || o.MemoryLimit != 7<<20 || o.GCPercent != 50 {
					t.Errorf("grace %v detect %v memory %v", o.ShutdownGrace, o.DetectTimeout, o.MemoryLimit)
				}
				if o.FailFastTimeout != 3*time.Second {
					t.Errorf("fail-fast timeout %v, want Linkerd's 3s", o.FailFastTimeout)
				}
			},
		},
		{
			name: "environment fills unset flags, flags win",
			args: []string{"--inbound-target", "127.0.0.1:9000"},
			env: map[string]string{
				"CONDUIT_PROXY_INBOUND_TARGET":        "127.0.0.1:1",
				"CONDUIT_PROXY_ADMIN_LISTEN":          "127.0.0.1:5191",
				"CONDUIT_PROXY_OUTBOUND_ROUTE":        "web=127.0.0.1:8080,api:9090=127.0.0.1:9091",
				"CONDUIT_PROXY_OPAQUE_PORTS":          "1234,2000-2002",
				"CONDUIT_PROXY_SHUTDOWN_GRACE_PERIOD": "3s",
				"CONDUIT_PROXY_MEMORY_LIMIT":          "12MiB",
				"CONDUIT_PROXY_HTTP1_FAST_PATH":       "false",
			},
			check: func(t *testing.T, o *sidecar.Config) {
				if o.InboundTarget != "127.0.0.1:9000" {
					t.Errorf("inbound target %q: the flag must win", o.InboundTarget)
				}
				if o.AdminListen != "127.0.0.1:5191" || o.ShutdownGrace != 3*time.Second || o.MemoryLimit != 12<<20 || o.HTTP1FastPath {
					t.Errorf("admin %q grace %v memory %v", o.AdminListen, o.ShutdownGrace, o.MemoryLimit)
				}
				eps, err := o.Routes.Static.Endpoints(context.Background(), "api:9090")
				if err != nil || len(eps) != 1 || eps[0].Addr != "127.0.0.1:9091" {
					t.Errorf("api route: %v %v", eps, err)
				}
				if _, err := o.Routes.Static.Endpoints(context.Background(), "web:80"); err != nil {
					t.Errorf("web route: %v", err)
				}
				if got := o.OpaquePorts.String(); got != "1234,2000,2001,2002" {
					t.Errorf("opaque ports %s", got)
				}
			},
		},
		{
			name: "repeated routes add endpoints",
			args: []string{"--outbound-route", "web=127.0.0.1:1", "--outbound-route", "web=127.0.0.1:2"},
			check: func(t *testing.T, o *sidecar.Config) {
				eps, _ := o.Routes.Static.Endpoints(context.Background(), "web:80")
				if len(eps) != 2 {
					t.Errorf("endpoints %v", eps)
				}
				var _ resolve.Resolver = o.Routes.Static
			},
		},
		{name: "bad route", args: []string{"--outbound-route", "web"}, wantErr: `route "web": want AUTHORITY=HOST:PORT`},
		{name: "bad port", args: []string{"--opaque-ports", "70000"}, wantErr: `port "70000"`},
		{name: "bad duration in env", env: map[string]string{"CONDUIT_PROXY_DETECT_TIMEOUT": "soon"}, wantErr: "CONDUIT_PROXY_DETECT_TIMEOUT"},
		{name: "bad size", args: []string{"--memory-limit", "lots"}, wantErr: `size "lots"`},
		{
			name: "caps from the environment",
			env:  map[string]string{"CONDUIT_PROXY_MAX_MEMORY": "64MiB", "CONDUIT_PROXY_MAX_CONNECTIONS": "500", "CONDUIT_PROXY_BODY_IDLE_TIMEOUT": "5s"},
			check: func(t *testing.T, o *sidecar.Config) {
				if o.MaxMemory != 64<<20 || o.MaxConnections != 500 || o.MaxRequests != 0 || o.BodyIdleTimeout != 5*time.Second {
					t.Errorf("max memory %v connections %d requests %d body idle %v", o.MaxMemory, o.MaxConnections, o.MaxRequests, o.BodyIdleTimeout)
				}
			},
		},
		{
			name: "fail-fast wait from the environment",
			env:  map[string]string{"CONDUIT_PROXY_FAILFAST_TIMEOUT": "1500ms"},
			check: func(t *testing.T, o *sidecar.Config) {
				if o.FailFastTimeout != 1500*time.Millisecond {
					t.Errorf("fail-fast timeout %v, want 1.5s", o.FailFastTimeout)
				}
			},
		},
		{name: "negative fail-fast wait", args: []string{"--failfast-timeout", "-1s"}, wantErr: "--failfast-timeout -1s: must not be negative"},
		{name: "max memory too small", args: []string{"--max-memory", "8MiB"}, wantErr: "--max-memory 8388608: want at least 32MiB"},
		{name: "negative cap", args: []string{"--max-requests", "-1"}, wantErr: "--max-requests -1"},
		{name: "bad log level", args: []string{"--log-level", "loud"}, wantErr: `--log-level "loud"`},
		{name: "bad log format", args: []string{"--log-format", "xml"}, wantErr: `--log-format "xml"`},
		{name: "stray argument", args: []string{"extra"}, wantErr: `unexpected argument "extra"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			o, err := parseRunOptions(tt.args, env(tt.env), &stderr)
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tt.wantErr)
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

func TestRunMainErrors(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"bad flag", []string{"--no-such-flag"}, 2, "flag provided but not defined"},
		{"listener in use", []string{"--inbound-listen", busy.Addr().String(), "--admin-listen", "127.0.0.1:0", "--outbound-listen", "127.0.0.1:0"}, 1, "inbound listener"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			code := runMain(ctx, tt.args, &stdout, &stderr)
			if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
				t.Errorf("exit %d, stderr %q; want %d and %q", code, stderr.String(), tt.code, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}
