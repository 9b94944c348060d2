package cluster

import (
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// TestShimsByAddress finds shims in a fake procfs by the -address on their
// command lines, and nothing else.
func TestShimsByAddress(t *testing.T) {
	procfs := t.TempDir()
	// PIDs above the largest pid_max, so none is this process.
	procs := map[string][]string{
		"5000001":                 {"/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc", "-address", containerdSock},
		"5000002":                 {"/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc", "-address=" + containerdSock},
		"5000003":                 {"/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "abc", "-address", "/run/containerd/containerd.sock"},
		"5000004":                 {"/usr/bin/containerd-shim-runc-v2", "-address", containerdSock + ".ttrpc"},
		"5000005":                 {"socat", "-address", "-", "UNIX-CONNECT:" + containerdSock, containerdSock},
		"5000006":                 {"ctr", containerdSock, "-address"},
		"self":                    {"/usr/bin/containerd-shim-runc-v2", "-address", containerdSock},
		strconv.Itoa(os.Getpid()): {"/usr/bin/containerd-shim-runc-v2", "-address", containerdSock},
	}
	for pid, args := range procs {
		if err := os.MkdirAll(filepath.Join(procfs, pid), 0o755); err != nil {
			t.Fatal(err)
		}
		cmdline := strings.Join(args, "\x00") + "\x00"
		if err := os.WriteFile(filepath.Join(procfs, pid, "cmdline"), []byte(cmdline), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A process that exited between the directory read and the cmdline read.
	if err := os.MkdirAll(filepath.Join(procfs, "5000007"), 0o755); err != nil {
		t.Fatal(err)
	}
	got := shimsByAddress(procfs)
	slices.Sort(got)
	if want := []int{5000001, 5000002}; !slices.Equal(got, want) {
		t.Errorf("shimsByAddress = %v, want %v", got, want)
	}
	if got := shimsByAddress(filepath.Join(procfs, "missing")); got != nil {
		t.Errorf("shimsByAddress of a missing procfs = %v, want nothing", got)
	}
}
