package cluster

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeBuildScript "builds" by writing stub executables where the real
// script puts the binaries, and counts its runs.
const fakeBuildScript = `#!/usr/bin/env bash
set -euo pipefail
[ "$1" = build ]
echo run >> "$K8S_CACHE_DIR/runs"
mkdir -p "$K8S_CACHE_DIR/bin/k8s-v$K8S_VERSION" "$K8S_CACHE_DIR/bin/etcd-v$ETCD_VERSION" "$K8S_CACHE_DIR/bin/kwok-v$KWOK_VERSION" "$K8S_CACHE_DIR/bin/coredns-v$COREDNS_VERSION"
for f in "bin/k8s-v$K8S_VERSION/kube-apiserver" "bin/k8s-v$K8S_VERSION/kube-controller-manager" "bin/etcd-v$ETCD_VERSION/etcd" "bin/kwok-v$KWOK_VERSION/kwok" \
    "bin/k8s-v$K8S_VERSION/kubelet" "bin/k8s-v$K8S_VERSION/kube-proxy" "bin/k8s-v$K8S_VERSION/kube-scheduler" "bin/coredns-v$COREDNS_VERSION/coredns"; do
  printf '#!/bin/sh\n' > "$K8S_CACHE_DIR/$f"; chmod +x "$K8S_CACHE_DIR/$f"
done
`

func TestEnsureBinariesBuildsOnceByVersion(t *testing.T) {
	cache := t.TempDir()
	script := filepath.Join(t.TempDir(), "build.sh")
	if err := os.WriteFile(script, []byte(fakeBuildScript), 0o755); err != nil {
		t.Fatal(err)
	}
	opts := Options{CacheDir: cache, HackScript: script, K8sVersion: "1.99.0", EtcdVersion: "9.9.9", KwokVersion: "0.0.1", CoreDNSVersion: "8.8.8"}

	// Concurrent callers (test packages) build once, under the lock.
	var wg sync.WaitGroup
	errs := make([]error, 4)
	bins := make([]Binaries, 4)
	for i := range 4 {
		wg.Go(func() { bins[i], errs[i] = EnsureBinaries(context.Background(), opts) })
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("caller %d: %v", i, err)
		}
		if bins[i] != bins[0] {
			t.Errorf("caller %d got %+v, caller 0 %+v", i, bins[i], bins[0])
		}
	}
	want := Binaries{
		APIServer:         filepath.Join(cache, "bin/k8s-v1.99.0/kube-apiserver"),
		ControllerManager: filepath.Join(cache, "bin/k8s-v1.99.0/kube-controller-manager"),
		Etcd:              filepath.Join(cache, "bin/etcd-v9.9.9/etcd"),
		Kwok:              filepath.Join(cache, "bin/kwok-v0.0.1/kwok"),
		Kubelet:           filepath.Join(cache, "bin/k8s-v1.99.0/kubelet"),
		KubeProxy:         filepath.Join(cache, "bin/k8s-v1.99.0/kube-proxy"),
		Scheduler:         filepath.Join(cache, "bin/k8s-v1.99.0/kube-scheduler"),
		CoreDNS:           filepath.Join(cache, "bin/coredns-v8.8.8/coredns"),
	}
	if bins[0] != want {
		t.Errorf("got %+v\nwant %+v", bins[0], want)
	}
	if runs := countRuns(t, cache); runs != 1 {
		t.Errorf("the build script ran %d times, want once", runs)
	}

	// Another version is another build.
	opts.KwokVersion = "0.0.2"
	if _, err := EnsureBinaries(context.Background(), opts); err != nil {
		t.Fatal(err)
	}
	if runs := countRuns(t, cache); runs != 2 {
		t.Errorf("the build script ran %d times after a version change, want twice", runs)
	}
}

func TestEnsureBinariesReportsAFailedBuild(t *testing.T) {
	script := filepath.Join(t.TempDir(), "build.sh")
	if err := os.WriteFile(script, []byte("#!/usr/bin/env bash\necho 'go: module lookup disabled' >&2\nexit 3\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	_, err := EnsureBinaries(context.Background(), Options{CacheDir: t.TempDir(), HackScript: script, Log: &log})
	if err == nil || !strings.Contains(err.Error(), "building the Kubernetes binaries with "+script+" build: exit status 3") {
		t.Errorf("got %v", err)
	}
	if !strings.Contains(log.String(), "go: module lookup disabled") {
		t.Errorf("the build's output was not passed on: %q", log.String())
	}
}

func countRuns(t *testing.T, cache string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(cache, "runs"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.Count(string(b), "run")
}
