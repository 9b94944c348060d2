package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/conduitmesh/conduit/pkg/proxy/resolve"
)

func TestParseRunOptions(t *testing.T) {
	tests := []struct {
		name    string
		args    []string
		env     map[string]string
		check   func(t *testing.T, o *runOptions)
		wantErr string
	}{
		{
			name: "defaults",
			check: func(t *testing.T, o *runOptions) {
				if o.inboundListen != "0.0.0.0:4143" || o.outboundListen != "127.0.0.1:4140" || o.adminListen != "0.0.0.0:4191" {
					t.Errorf("listeners %q %q %q", o.inboundListen, o.outboundListen, o.adminListen)
				}
				if o.shutdownGrace != 20*time.Second || o.detectTimeout != 10*time.Second || o.memoryLimit != 6<<20 || o.gcPercent != 50 {
					t.Errorf("grace %v detect %v memory %v", o.shutdownGrace, o.detectTimeout, o.memoryLimit)
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
			check: func(t *testing.T, o *runOptions) {
				if o.inboundTarget != "127.0.0.1:9000" {
					t.Errorf("inbound target %q: the flag must win", o.inboundTarget)
				}
				if o.adminListen != "127.0.0.1:5191" || o.shutdownGrace != 3*time.Second || o.memoryLimit != 12<<20 || o.http1FastPath {
					t.Errorf("admin %q grace %v memory %v", o.adminListen, o.shutdownGrace, o.memoryLimit)
				}
				eps, err := o.routes.s.Endpoints(context.Background(), "api:9090")
				if err != nil || len(eps) != 1 || eps[0].Addr != "127.0.0.1:9091" {
					t.Errorf("api route: %v %v", eps, err)
				}
				if _, err := o.routes.s.Endpoints(context.Background(), "web:80"); err != nil {
					t.Errorf("web route: %v", err)
				}
				if got := o.opaquePorts.String(); got != "1234,2000,2001,2002" {
					t.Errorf("opaque ports %s", got)
				}
			},
		},
		{
			name: "repeated routes add endpoints",
			args: []string{"--outbound-route", "web=127.0.0.1:1", "--outbound-route", "web=127.0.0.1:2"},
			check: func(t *testing.T, o *runOptions) {
				eps, _ := o.routes.s.Endpoints(context.Background(), "web:80")
				if len(eps) != 2 {
					t.Errorf("endpoints %v", eps)
				}
				var _ resolve.Resolver = o.routes.s
			},
		},
		{name: "bad route", args: []string{"--outbound-route", "web"}, wantErr: `route "web": want AUTHORITY=HOST:PORT`},
		{name: "bad port", args: []string{"--opaque-ports", "70000"}, wantErr: `port "70000"`},
		{name: "bad duration in env", env: map[string]string{"CONDUIT_PROXY_DETECT_TIMEOUT": "soon"}, wantErr: "CONDUIT_PROXY_DETECT_TIMEOUT"},
		{name: "bad size", args: []string{"--memory-limit", "lots"}, wantErr: `size "lots"`},
		{
			name: "caps from the environment",
			env:  map[string]string{"CONDUIT_PROXY_MAX_MEMORY": "64MiB", "CONDUIT_PROXY_MAX_CONNECTIONS": "500", "CONDUIT_PROXY_BODY_IDLE_TIMEOUT": "5s"},
			check: func(t *testing.T, o *runOptions) {
				if o.maxMemory != 64<<20 || o.maxConnections != 500 || o.maxRequests != 0 || o.bodyIdleTimeout != 5*time.Second {
					t.Errorf("max memory %v connections %d requests %d body idle %v", o.maxMemory, o.maxConnections, o.maxRequests, o.bodyIdleTimeout)
				}
			},
		},
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

func TestContainerMemoryLimit(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"cgroup v2 limit", map[string]string{"/sys/fs/cgroup/memory.max": "67108864\n"}, 64 << 20},
		{"cgroup v2 without a limit", map[string]string{"/sys/fs/cgroup/memory.max": "max\n"}, 0},
		{"cgroup v1 limit", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "134217728\n"}, 128 << 20},
		{"cgroup v1 without a limit", map[string]string{"/sys/fs/cgroup/memory/memory.limit_in_bytes": "9223372036854771712\n"}, 0},
		{"no cgroup files", nil, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			read := func(path string) ([]byte, error) {
				if v, ok := tt.files[path]; ok {
					return []byte(v), nil
				}
				return nil, os.ErrNotExist
			}
			if got := containerMemoryLimit(read); got != tt.want {
				t.Errorf("containerMemoryLimit = %d, want %d", got, tt.want)
			}
		})
	}
}
