package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"syscall"
)

// Default component versions. The binaries are built from Go modules (see
// integration/hack/k8s-test-cluster.sh) and cached by version.
const (
	DefaultK8sVersion  = "1.37.2"
	DefaultEtcdVersion = "3.7.3"
	DefaultKwokVersion = "0.8.0"
	// DefaultCoreDNSVersion is the real node's cluster DNS (StartNode).
	DefaultCoreDNSVersion = "1.15.0"
)

// Binaries are the paths of the executables a cluster runs. The hack
// script builds the real node's (kubelet, kube-proxy, kube-scheduler,
// CoreDNS) with the others: they share most of their packages.
type Binaries struct {
	APIServer         string
	ControllerManager string
	Etcd              string
	Kwok              string

	Kubelet   string
	KubeProxy string
	Scheduler string
	CoreDNS   string
}

func (b Binaries) all() []string {
	return []string{b.APIServer, b.ControllerManager, b.Etcd, b.Kwok, b.Kubelet, b.KubeProxy, b.Scheduler, b.CoreDNS}
}

func (b Binaries) missing() []string {
	var out []string
	for _, p := range b.all() {
		if st, err := os.Stat(p); err != nil || st.IsDir() || st.Mode()&0o111 == 0 {
			out = append(out, p)
		}
	}
	return out
}

// CacheDir is where the binaries are cached: $CONDUIT_K8S_CACHE, else
// $XDG_CACHE_HOME/conduit-k8s, else ~/.cache/conduit-k8s.
func CacheDir() (string, error) {
	if d := os.Getenv("CONDUIT_K8S_CACHE"); d != "" {
		return d, nil
	}
	d, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("finding a cache dir for the Kubernetes binaries (set CONDUIT_K8S_CACHE): %w", err)
	}
	return filepath.Join(d, "conduit-k8s"), nil
}

// binaryPaths is the cache layout the hack script writes.
func binaryPaths(cache string, o *Options) Binaries {
	k8s := filepath.Join(cache, "bin", "k8s-v"+o.K8sVersion)
	return Binaries{
		APIServer:         filepath.Join(k8s, "kube-apiserver"),
		ControllerManager: filepath.Join(k8s, "kube-controller-manager"),
		Etcd:              filepath.Join(cache, "bin", "etcd-v"+o.EtcdVersion, "etcd"),
		Kwok:              filepath.Join(cache, "bin", "kwok-v"+o.KwokVersion, "kwok"),
		Kubelet:           filepath.Join(k8s, "kubelet"),
		KubeProxy:         filepath.Join(k8s, "kube-proxy"),
		Scheduler:         filepath.Join(k8s, "kube-scheduler"),
		CoreDNS:           filepath.Join(cache, "bin", "coredns-v"+o.CoreDNSVersion, "coredns"),
	}
}

// EnsureBinaries returns the cached binaries for the versions in opts,
// building the missing ones first with the hack script. Concurrent callers
// (several test packages) take a file lock so only one builds. A cold build
// takes several minutes on two cores.
func EnsureBinaries(ctx context.Context, opts Options) (Binaries, error) {
	opts.defaults()
	cache := opts.CacheDir
	if cache == "" {
		var err error
		if cache, err = CacheDir(); err != nil {
			return Binaries{}, err
		}
	}
	bins := binaryPaths(cache, &opts)
	if len(bins.missing()) == 0 {
		return bins, nil
	}
	if err := os.MkdirAll(cache, 0o755); err != nil {
		return Binaries{}, fmt.Errorf("creating the Kubernetes binary cache: %w", err)
	}
	lock, err := os.OpenFile(filepath.Join(cache, ".build.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return Binaries{}, fmt.Errorf("opening the build lock: %w", err)
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return Binaries{}, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck // released on close anyway
	// Another process may have built them while we waited for the lock.
	if len(bins.missing()) == 0 {
		return bins, nil
	}
	script := opts.HackScript
	if script == "" {
		if script, err = defaultHackScript(); err != nil {
			return Binaries{}, err
		}
	}
	log := opts.Log
	if log == nil {
		log = io.Discard
	}
	fmt.Fprintf(log, "cluster: building %v into %s (cold: several minutes)\n", bins.missing(), cache)
	cmd := exec.CommandContext(ctx, "bash", script, "build")
	cmd.Env = append(os.Environ(),
		"K8S_CACHE_DIR="+cache,
		"K8S_VERSION="+opts.K8sVersion,
		"ETCD_VERSION="+opts.EtcdVersion,
		"KWOK_VERSION="+opts.KwokVersion,
		"COREDNS_VERSION="+opts.CoreDNSVersion,
		"K8S_BUILD_NODE=1",
		"K8S_BUILD_LOCKED=1", // this process holds the lock the script would take
	)
	cmd.Stdout, cmd.Stderr = log, log
	if err := cmd.Run(); err != nil {
		return Binaries{}, fmt.Errorf("building the Kubernetes binaries with %s build: %w", script, err)
	}
	if m := bins.missing(); len(m) > 0 {
		return Binaries{}, fmt.Errorf("%s build finished but %v are missing", script, m)
	}
	return bins, nil
}

// defaultHackScript finds integration/hack/k8s-test-cluster.sh next to this
// package's source.
func defaultHackScript() (string, error) {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return "", errors.New("cannot locate integration/hack/k8s-test-cluster.sh: set Options.HackScript")
	}
	p := filepath.Join(filepath.Dir(file), "..", "hack", "k8s-test-cluster.sh")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("cannot locate the build script (set Options.HackScript): %w", err)
	}
	return p, nil
}
