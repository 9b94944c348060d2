package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The real node's addresses. Everything comes from 198.18.0.0/15
// (RFC 2544, benchmarking): the whole range is routed to a bridge with no
// ports before anything starts, so no packet to a pod or Service address
// can leave the machine, and the pod bridge forwards nowhere else.
const (
	NodeIP       = "198.19.255.1"   // on nodeBridge; the API server and kubelet listen here
	PodCIDR      = "198.18.0.0/24"  // pods, on podBridge
	PodGateway   = "198.18.0.1"     // podBridge's address
	NodeSvcCIDR  = "198.19.0.0/24"  // Services
	DNSServiceIP = "198.19.0.10"    // kube-dns
	nodeRange    = "198.18.0.0/15"  // routed locally before any traffic
	RealNodeName = "conduit-node-0" // the real node
	nodeBridge   = "cn-node0"
	podBridge    = "cn-br0"
	guardChain   = "CN-GUARD"
	kubeletPort  = 30250
	// nodeState holds what outlives a crashed test run: the lock, the run
	// dir of the node that is up (so the next run tears it down), the
	// original sysctls, containerd's sockets and state.
	nodeState = "/run/conduit-node"
	// containerdSock is the node's containerd socket. containerd passes it
	// to every shim it starts as -address, which is how teardownNode finds
	// shims whose shim.pid files are gone.
	containerdSock = nodeState + "/containerd.sock"
)

// NodeOptions configure StartNode.
type NodeOptions struct {
	Options
	// Images are OCI image archives imported into containerd before the
	// node registers (nothing is ever pulled).
	Images []string
	// KubeProxyMode is iptables (default) or nftables.
	KubeProxyMode string
}

// Node is a real single-node cluster: the control plane of Start (on
// NodeIP, no kwok), containerd with runc and the CNI bridge plugin, a
// kubelet, kube-proxy, kube-scheduler and CoreDNS. Stop tears all of it
// down: processes, containers, network namespaces, bridges, iptables
// chains, mounts, cgroups and sysctls.
type Node struct {
	*Cluster
	// Containerd is containerd's socket (for ctr --address).
	Containerd string
	opts       NodeOptions
	bins       Binaries
	procs      []*process // containerd, scheduler, kubelet, kube-proxy
	lock       *os.File
	dir        string // the node's run dir; the cluster's is inside
}

// ErrNotRoot is returned by StartNode when the test does not run as root.
var ErrNotRoot = errors.New("a real node needs root (network namespaces, bridges, iptables, mounts)")

// nodePrograms are the host programs the node needs, with their Debian package.
var nodePrograms = [][2]string{
	{"containerd", "containerd"}, {"runc", "runc"}, {"ctr", "containerd"},
	{"/usr/lib/cni/bridge", "containernetworking-plugins"}, {"/usr/lib/cni/host-local", "containernetworking-plugins"},
	{"/usr/lib/cni/portmap", "containernetworking-plugins"}, {"/usr/lib/cni/loopback", "containernetworking-plugins"},
	{"iptables", "iptables"}, {"conntrack", "conntrack"}, {"socat", "socat"}, {"ip", "iproute2"},
}

// NodePrerequisites reports what is missing to run a real node here, as a
// reason to skip with; "" when everything is in place.
func NodePrerequisites() string {
	if os.Geteuid() != 0 {
		return ErrNotRoot.Error()
	}
	var missing []string
	for _, p := range nodePrograms {
		if _, err := exec.LookPath(p[0]); err != nil {
			missing = append(missing, p[1])
		}
	}
	if len(missing) > 0 {
		return "missing Debian packages for the real node: apt-get install " + strings.Join(dedupe(missing), " ")
	}
	return ""
}

func dedupe(s []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, v := range s {
		if !seen[v] {
			seen[v] = true
			out = append(out, v)
		}
	}
	return out
}

// StartNode brings a real node up. Only one runs on a machine at a time
// (fixed bridges and addresses); a second caller waits for the first to
// stop. A node left behind by a killed test run is torn down first.
func StartNode(ctx context.Context, o NodeOptions) (_ *Node, err error) {
	if why := NodePrerequisites(); why != "" {
		if os.Geteuid() != 0 {
			return nil, ErrNotRoot
		}
		return nil, errors.New(why)
	}
	o.defaults()
	if o.KubeProxyMode == "" {
		o.KubeProxyMode = "iptables"
	}
	t0 := time.Now()
	if err := os.MkdirAll(nodeState, 0o700); err != nil {
		return nil, fmt.Errorf("creating %s: %w", nodeState, err)
	}
	lock, err := os.OpenFile(filepath.Join(nodeState, "lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("opening the node lock: %w", err)
	}
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		lock.Close()
		return nil, fmt.Errorf("locking %s: %w", lock.Name(), err)
	}
	n := &Node{opts: o, lock: lock, Containerd: containerdSock}
	// A run that was killed (SIGKILL, a timeout) left its node behind.
	if prev, err := os.ReadFile(filepath.Join(nodeState, "rundir")); err == nil {
		fmt.Fprintf(o.Log, "node: tearing down the node a previous run left in %s\n", prev)
		if err := teardownNode(string(prev), o.Log); err != nil {
			fmt.Fprintf(o.Log, "node: previous teardown: %v\n", err)
		}
	}
	defer func() {
		if err != nil {
			if stopErr := n.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	if n.bins, err = EnsureBinaries(ctx, o.Options); err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(o.BaseDir, "conduit-node-")
	if err != nil {
		return nil, fmt.Errorf("creating the node's run dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(nodeState, "rundir"), []byte(dir), 0o600); err != nil {
		return nil, err
	}
	n.dir = dir
	if _, err := os.Stat("/run/netns"); err != nil {
		// containerd makes it (and ip netns bind-mounts it onto itself):
		// teardown removes it again if it is empty then.
		if err := os.WriteFile(filepath.Join(nodeState, "made-run-netns"), nil, 0o600); err != nil {
			return nil, err
		}
	}
	if _, err := os.Stat("/var/lib/cni"); err != nil {
		// containerd's CNI library caches results there
		if err := os.WriteFile(filepath.Join(nodeState, "made-var-lib-cni"), nil, 0o600); err != nil {
			return nil, err
		}
	}
	if err := saveSysctls(); err != nil {
		return nil, err
	}
	if err := netUp(dir); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "node: %s routed to %s, pod bridge guarded\n", nodeRange, nodeBridge)
	if err := n.startContainerd(ctx, dir); err != nil {
		return nil, err
	}
	own, err := n.nodeImages(ctx, dir)
	if err != nil {
		return nil, err
	}
	for _, img := range append(own, o.Images...) {
		if err := n.ImportImage(ctx, img); err != nil {
			return nil, err
		}
	}
	co := o.Options
	co.BaseDir = dir
	co.BindAddress = NodeIP
	co.ServiceCIDR = NodeSvcCIDR
	co.NoKwok = true
	co.APIServerArgs = append([]string{
		"--kubelet-preferred-address-types=InternalIP",
		"--kubelet-port=" + strconv.Itoa(kubeletPort),
	}, co.APIServerArgs...)
	c, err := Start(ctx, co)
	if err != nil {
		return nil, err
	}
	n.Cluster = c
	fmt.Fprintf(o.Log, "node: control plane ready at %s after %s\n", c.Server, time.Since(t0).Round(time.Millisecond))
	if err := n.startScheduler(); err != nil {
		return nil, err
	}
	if err := n.startKubelet(ctx, dir); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "node: %s Ready after %s\n", RealNodeName, time.Since(t0).Round(time.Millisecond))
	if err := n.startKubeProxy(ctx, dir); err != nil {
		return nil, err
	}
	if err := n.startDNS(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(o.Log, "node: up after %s (run dir %s)\n", time.Since(t0).Round(time.Millisecond), dir)
	return n, nil
}

// run runs a host program (ip, iptables, ctr) and returns its error with its output.
func run(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// netUp routes the whole test range to a port-less bridge before anything
// can send to it, gives the node its IP there, drops everything the pod
// bridge would forward elsewhere, and writes the CNI configuration.
func netUp(dir string) error {
	steps := [][]string{
		{"ip", "link", "add", nodeBridge, "type", "bridge"},
		{"ip", "addr", "add", NodeIP + "/32", "dev", nodeBridge},
		{"ip", "link", "set", nodeBridge, "up"},
		{"ip", "route", "replace", nodeRange, "dev", nodeBridge},
		{"iptables", "-w", "-N", guardChain},
		{"iptables", "-w", "-A", guardChain, "-i", podBridge, "-o", podBridge, "-j", "RETURN"},
		{"iptables", "-w", "-A", guardChain, "-i", podBridge, "-j", "DROP"},
		{"iptables", "-w", "-I", "FORWARD", "1", "-j", guardChain},
	}
	for _, s := range steps {
		if err := run(s[0], s[1:]...); err != nil {
			return fmt.Errorf("node network: %w", err)
		}
	}
	conf := fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "conduit-node",
  "plugins": [
    {"type": "bridge", "bridge": %q, "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": %q,
              "ranges": [[{"subnet": %q, "gateway": %q}]],
              "routes": [{"dst": %q}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, podBridge, filepath.Join(dir, "cni", "ipam"), PodCIDR, PodGateway, nodeRange)
	if err := os.MkdirAll(filepath.Join(dir, "cni", "net.d"), 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "cni", "net.d", "10-conduit-node.conflist"), []byte(conf), 0o644)
}

func (n *Node) startContainerd(ctx context.Context, dir string) error {
	state := filepath.Join(nodeState, "containerd")
	conf := fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = %q
[ttrpc]
  address = "%s.ttrpc"
[debug]
  address = ""
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = %q
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  tolerate_missing_hugetlb_controller = true
  # Without CAP_SYS_RESOURCE (this kind of VM), the sandbox's oom_score_adj
  # of -998 makes runc fail ("can't get final child's PID from pipe").
  restrict_oom_score_adj = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = %q
`, filepath.Join(dir, "containerd"), state, n.Containerd, n.Containerd, PauseImage, filepath.Join(dir, "cni", "net.d"))
	path := filepath.Join(dir, "containerd.toml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := startProcess(dir, "containerd", "containerd", "--config", path, "--log-level", "warn")
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	return waitFor(ctx, n.opts.StartTimeout, p, func(ctx context.Context) bool {
		return exec.CommandContext(ctx, "ctr", "--address", n.Containerd, "version").Run() == nil
	})
}

// ImportImage imports an OCI image archive into the node's containerd
// (namespace k8s.io, where the kubelet looks).
func (n *Node) ImportImage(ctx context.Context, archive string) error {
	out, err := exec.CommandContext(ctx, "ctr", "--address", n.Containerd, "-n", "k8s.io", "images", "import", archive).CombinedOutput()
	if err != nil {
		return fmt.Errorf("importing %s into containerd: %v: %s", archive, err, strings.TrimSpace(string(out)))
	}
	return nil
}

func (n *Node) startScheduler() error {
	kc, err := n.UserKubeconfig("system:kube-scheduler")
	if err != nil {
		return err
	}
	p, err := startProcess(n.dir, "kube-scheduler", n.bins.Scheduler,
		"--kubeconfig="+kc, "--authentication-kubeconfig="+kc, "--authorization-kubeconfig="+kc,
		"--bind-address=127.0.0.1", "--secure-port=0", "--leader-elect=false")
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	return nil
}

func (n *Node) startKubelet(ctx context.Context, dir string) error {
	kc, err := n.UserKubeconfig("system:node:"+RealNodeName, "system:nodes")
	if err != nil {
		return err
	}
	resolv := filepath.Join(dir, "resolv.conf")
	if err := os.WriteFile(resolv, nil, 0o644); err != nil {
		return err
	}
	conf := fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://%s
address: %s
port: %d
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 0
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
  x509: {clientCAFile: %s}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [%s]
resolvConf: %s
podLogsDir: %s
podCIDR: %s
maxPods: 60
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard: {memory.available: "100Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
registerNode: true
`, n.Containerd, NodeIP, kubeletPort, n.pki.path(caCertFile), DNSServiceIP, resolv, filepath.Join(dir, "pod-logs"), PodCIDR)
	path := filepath.Join(dir, "kubelet.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := startProcess(dir, "kubelet", n.bins.Kubelet, "--config="+path, "--kubeconfig="+kc,
		"--root-dir="+filepath.Join(dir, "kubelet"), "--hostname-override="+RealNodeName, "--node-ip="+NodeIP, "--v=1")
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	return waitFor(ctx, 3*time.Minute, p, func(ctx context.Context) bool {
		node, err := n.Client.CoreV1().Nodes().Get(ctx, RealNodeName, metav1.GetOptions{})
		if err != nil {
			return false
		}
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				return true
			}
		}
		return false
	})
}

func (n *Node) startKubeProxy(ctx context.Context, dir string) error {
	kc, err := n.UserKubeconfig("system:kube-proxy", "system:node-proxier")
	if err != nil {
		return err
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	conf := fmt.Sprintf(`apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: %s
clientConnection: {kubeconfig: %s}
hostnameOverride: %s
bindAddress: %s
clusterCIDR: %s
metricsBindAddress: 127.0.0.1:%d
healthzBindAddress: 127.0.0.1:%d
conntrack: {maxPerCore: 0}
nodePortAddresses: ["%s/32"]
iptables: {masqueradeAll: false, localhostNodePorts: false}
`, n.opts.KubeProxyMode, kc, RealNodeName, NodeIP, PodCIDR, ports[0], ports[1], NodeIP)
	path := filepath.Join(dir, "kube-proxy.yaml")
	if err := os.WriteFile(path, []byte(conf), 0o644); err != nil {
		return err
	}
	p, err := startProcess(dir, "kube-proxy", n.bins.KubeProxy, "--config="+path, "--v=1")
	if err != nil {
		return err
	}
	n.procs = append(n.procs, p)
	healthz := "http://127.0.0.1:" + strconv.Itoa(ports[1]) + "/healthz"
	return waitFor(ctx, time.Minute, p, func(ctx context.Context) bool {
		return httpOK(ctx, nil, healthz, "", "")
	})
}

// Logs are the node's component logs, for a failed test.
func (n *Node) Logs() []string {
	var out []string
	for _, name := range []string{"containerd", "kubelet", "kube-proxy", "kube-scheduler"} {
		out = append(out, filepath.Join(n.dir, name+".log"))
	}
	return out
}

// Stop tears the node down, and only what it made: the kubelet and
// kube-proxy first, every container through containerd, the control plane,
// containerd and its shims, then mounts, network namespaces, links,
// iptables chains, cgroups and sysctls. It is safe to call twice.
func (n *Node) Stop() error {
	if n.lock == nil {
		return nil
	}
	var errs []error
	// kubelet and kube-proxy, so nothing restarts what goes next
	for i := len(n.procs) - 1; i >= 0; i-- {
		if n.procs[i].name == "containerd" {
			continue
		}
		if err := n.procs[i].stop(10 * time.Second); err != nil {
			errs = append(errs, err)
		}
	}
	n.removeContainers()
	if n.Cluster != nil {
		if err := n.Cluster.Stop(); err != nil {
			errs = append(errs, err)
		}
	}
	for _, p := range n.procs {
		if p.name == "containerd" {
			if err := p.stop(10 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
	}
	dir := n.dir
	if err := teardownNode(dir, n.opts.Log); err != nil {
		errs = append(errs, err)
	}
	if dir != "" && !n.opts.KeepDir {
		if err := os.RemoveAll(dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", dir, err))
		}
	}
	os.Remove(filepath.Join(nodeState, "rundir"))
	n.lock.Close()
	n.lock = nil
	return errors.Join(errs...)
}

// removeContainers kills every container's task through containerd while
// it still runs.
func (n *Node) removeContainers() {
	ctr := func(args ...string) string {
		out, _ := exec.Command("ctr", append([]string{"--address", n.Containerd, "-n", "k8s.io"}, args...)...).Output()
		return string(out)
	}
	if exec.Command("ctr", "--address", n.Containerd, "version").Run() != nil {
		return
	}
	tasks := strings.Fields(ctr("tasks", "ls", "-q"))
	for _, t := range tasks {
		ctr("tasks", "kill", "-s", "SIGKILL", t)
	}
	time.Sleep(500 * time.Millisecond)
	for _, t := range tasks {
		ctr("tasks", "delete", "-f", t)
	}
}

// teardownNode removes what a node made outside its processes. It only
// touches what carries the node's names (dir, nodeState, the cn- links,
// CN-GUARD, and the KUBE-/CNI- chains, which no one else makes on a test
// machine), and goes on past failures so one leftover does not hide others.
func teardownNode(dir string, log io.Writer) error {
	var errs []error
	// Shims that outlived containerd (they are its grandchildren, not ours:
	// the PID files containerd wrote say which, and so does the -address on
	// their command lines when the PID files are gone).
	var pids []int
	shims, _ := filepath.Glob(filepath.Join(nodeState, "containerd", "io.containerd.runtime.v2.task", "*", "*", "shim.pid"))
	for _, f := range shims {
		if b, err := os.ReadFile(f); err == nil {
			if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 1 {
				pids = append(pids, pid)
			}
		}
	}
	killed := map[int]bool{}
	for _, pid := range append(pids, shimsByAddress("/proc")...) {
		if !killed[pid] {
			killed[pid] = true
			syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // gone already is fine
		}
	}
	// Containers' processes: every process in a kubepods cgroup.
	killCgroupProcs()
	// Mounts under the node's dirs (overlay rootfs, shm, volumes, netns),
	// deepest first.
	if mounts, err := os.ReadFile("/proc/self/mounts"); err == nil {
		var ours []string
		for _, line := range strings.Split(string(mounts), "\n") {
			f := strings.Fields(line)
			if len(f) < 2 {
				continue
			}
			m := unescapeMount(f[1])
			if (dir != "" && strings.HasPrefix(m, dir+"/")) || strings.HasPrefix(m, nodeState+"/") || strings.HasPrefix(m, "/run/netns/cni-") {
				ours = append(ours, m)
			}
		}
		for i := len(ours) - 1; i >= 0; i-- {
			if err := syscall.Unmount(ours[i], syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) && !errors.Is(err, syscall.ENOENT) {
				errs = append(errs, fmt.Errorf("unmounting %s: %w", ours[i], err))
			}
		}
	}
	// CRI network namespaces (cni-<uuid>): the only ones containerd makes.
	// A netns file can hide under another mount of the same path (ip netns
	// bind-mounts /run/netns onto itself): unmount until it can go.
	nss, _ := filepath.Glob("/run/netns/cni-*")
	for _, p := range nss {
		var err error
		for range 5 {
			syscall.Unmount(p, syscall.MNT_DETACH) //nolint:errcheck // may not be mounted
			if err = os.Remove(p); err == nil || errors.Is(err, os.ErrNotExist) {
				err = nil
				break
			}
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("removing netns %s: %w", p, err))
		}
	}
	if _, err := os.Stat(filepath.Join(nodeState, "made-run-netns")); err == nil {
		if left, _ := os.ReadDir("/run/netns"); len(left) == 0 {
			for range 5 {
				if syscall.Unmount("/run/netns", syscall.MNT_DETACH) != nil {
					break
				}
			}
			if err := os.Remove("/run/netns"); err == nil || errors.Is(err, os.ErrNotExist) {
				os.Remove(filepath.Join(nodeState, "made-run-netns"))
			}
		}
	}
	// go-cni's result cache and the kubelet's log links live at fixed paths.
	for _, pat := range []string{"/var/lib/cni/results/conduit-node-*", "/var/lib/cni/results/cni-loopback-*"} {
		results, _ := filepath.Glob(pat)
		for _, p := range results {
			os.Remove(p)
		}
	}
	if _, err := os.Stat(filepath.Join(nodeState, "made-var-lib-cni")); err == nil {
		os.Remove("/var/lib/cni/results") // only when empty
		if os.Remove("/var/lib/cni") == nil {
			os.Remove(filepath.Join(nodeState, "made-var-lib-cni"))
		}
	}
	if dir != "" {
		links, _ := filepath.Glob("/var/log/containers/*.log")
		for _, l := range links {
			if t, err := os.Readlink(l); err == nil && strings.HasPrefix(t, dir+"/") {
				os.Remove(l)
			}
		}
	}
	// veths on the pod bridge go with their namespaces; the bridges now.
	for _, l := range []string{podBridge, nodeBridge} {
		if _, err := net.InterfaceByName(l); err == nil {
			if err := run("ip", "link", "del", l); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if exec.Command("ip", "route", "show", nodeRange).Run() == nil {
		exec.Command("ip", "route", "del", nodeRange).Run() //nolint:errcheck // gone with the bridge
	}
	errs = append(errs, cleanupIPTables("iptables"), cleanupIPTables("ip6tables"))
	cleanupNFT()
	removeCgroups()
	if err := restoreSysctls(); err != nil {
		errs = append(errs, err)
	}
	os.RemoveAll(filepath.Join(nodeState, "containerd"))
	socks, _ := filepath.Glob(filepath.Join(nodeState, "containerd.sock*"))
	for _, p := range socks {
		os.Remove(p)
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("node teardown: %w", err)
	}
	fmt.Fprintf(log, "node: torn down\n")
	return nil
}

// shimsByAddress returns the processes in procfs (/proc, or a fake one in
// tests) whose command line has -address followed by the node's containerd
// socket, as containerd starts its shims (-address=<socket> counts too).
// It skips this process and those that exit while it reads.
func shimsByAddress(procfs string) []int {
	ents, err := os.ReadDir(procfs)
	if err != nil {
		return nil
	}
	self := os.Getpid()
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid <= 1 || pid == self {
			continue
		}
		b, err := os.ReadFile(filepath.Join(procfs, e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		for i, a := range args {
			if a == "-address="+containerdSock || (a == "-address" && i+1 < len(args) && args[i+1] == containerdSock) {
				pids = append(pids, pid)
				break
			}
		}
	}
	return pids
}

func unescapeMount(s string) string {
	return strings.NewReplacer(`\040`, " ", `\011`, "\t", `\012`, "\n", `\134`, `\`).Replace(s)
}

// cgroupRoots are where the kubelet's cgroupfs driver puts pods (cgroup v1
// per controller, or v2's unified tree).
func cgroupDirs() []string {
	var out []string
	for _, pat := range []string{"/sys/fs/cgroup/*/kubepods", "/sys/fs/cgroup/kubepods", "/sys/fs/cgroup/*/kubepods.slice", "/sys/fs/cgroup/kubepods.slice"} {
		m, _ := filepath.Glob(pat)
		out = append(out, m...)
	}
	return out
}

func killCgroupProcs() {
	for _, root := range cgroupDirs() {
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error { //nolint:errcheck // best effort
			if err != nil || d.IsDir() || d.Name() != "cgroup.procs" {
				return nil
			}
			b, _ := os.ReadFile(p)
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
					syscall.Kill(pid, syscall.SIGKILL) //nolint:errcheck // best effort
				}
			}
			return nil
		})
	}
}

func removeCgroups() {
	for _, root := range cgroupDirs() {
		var dirs []string
		filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error { //nolint:errcheck // best effort
			if err == nil && d.IsDir() {
				dirs = append(dirs, p)
			}
			return nil
		})
		for i := len(dirs) - 1; i >= 0; i-- {
			for range 20 { // a killed process leaves its cgroup a moment later
				if err := syscall.Rmdir(dirs[i]); err == nil || errors.Is(err, syscall.ENOENT) {
					break
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
	}
}

// cleanupIPTables removes CN-GUARD and the KUBE-* and CNI-* chains (the
// kubelet's canaries, kube-proxy's rules, the portmap plugin's) and every
// jump to them.
func cleanupIPTables(ipt string) error {
	if _, err := exec.LookPath(ipt); err != nil {
		return nil
	}
	ours := func(chain string) bool {
		return chain == guardChain || strings.HasPrefix(chain, "KUBE-") || strings.HasPrefix(chain, "CNI-")
	}
	var errs []error
	for _, table := range []string{"filter", "nat", "mangle", "raw"} {
		out, err := exec.Command(ipt+"-save", "-t", table).Output()
		if err != nil {
			continue
		}
		var chains []string
		for _, line := range strings.Split(string(out), "\n") {
			f := strings.Fields(line)
			switch {
			case len(f) > 0 && strings.HasPrefix(f[0], ":") && ours(f[0][1:]):
				chains = append(chains, f[0][1:])
			case len(f) > 3 && f[0] == "-A" && !ours(f[1]):
				// a jump from a built-in chain into one of ours
				for i := range f {
					if (f[i] == "-j" || f[i] == "-g") && i+1 < len(f) && ours(f[i+1]) {
						args := append([]string{"-w", "-t", table, "-D"}, splitRule(line[3:])...)
						if err := run(ipt, args...); err != nil {
							errs = append(errs, err)
						}
						break
					}
				}
			}
		}
		for _, c := range chains {
			run(ipt, "-w", "-t", table, "-F", c) //nolint:errcheck // reported by -X
		}
		for _, c := range chains {
			if err := run(ipt, "-w", "-t", table, "-X", c); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// splitRule splits an iptables-save rule into arguments, keeping quoted
// strings (comments) whole.
func splitRule(s string) []string {
	var out []string
	var cur strings.Builder
	quoted, have := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '\\' && quoted && i+1 < len(s):
			i++
			cur.WriteByte(s[i])
		case c == '"':
			quoted, have = !quoted, true
		case c == ' ' && !quoted:
			if have {
				out = append(out, cur.String())
				cur.Reset()
				have = false
			}
		default:
			cur.WriteByte(c)
			have = true
		}
	}
	if have {
		out = append(out, cur.String())
	}
	return out
}

// cleanupNFT deletes the tables kube-proxy's nftables mode makes.
func cleanupNFT() {
	if _, err := exec.LookPath("nft"); err != nil {
		return
	}
	for _, t := range [][2]string{{"ip", "kube-proxy"}, {"ip6", "kube-proxy"}} {
		exec.Command("nft", "delete", "table", t[0], t[1]).Run() //nolint:errcheck // absent is fine
	}
}

// nodeSysctls are the kernel settings the kubelet, kube-proxy or the CNI
// plugins change on the host; they are restored on teardown.
var nodeSysctls = []string{
	"net/ipv4/ip_forward", "net/ipv4/conf/all/route_localnet", "vm/overcommit_memory",
	"kernel/panic", "kernel/panic_on_oops", "vm/panic_on_oom", "kernel/keys/root_maxkeys",
	"kernel/keys/root_maxbytes", "net/bridge/bridge-nf-call-iptables", "net/bridge/bridge-nf-call-ip6tables",
	"net/netfilter/nf_conntrack_max", "net/netfilter/nf_conntrack_tcp_timeout_established",
	"net/netfilter/nf_conntrack_tcp_timeout_close_wait",
}

func saveSysctls() error {
	path := filepath.Join(nodeState, "sysctl.orig")
	if _, err := os.Stat(path); err == nil {
		return nil // an earlier node's originals, not yet restored
	}
	var b strings.Builder
	for _, k := range nodeSysctls {
		if v, err := os.ReadFile("/proc/sys/" + k); err == nil {
			fmt.Fprintf(&b, "%s=%s\n", k, strings.TrimSpace(string(v)))
		}
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

func restoreSysctls() error {
	path := filepath.Join(nodeState, "sysctl.orig")
	b, err := os.ReadFile(path)
	if err != nil {
		return nil
	}
	var errs []error
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		cur, err := os.ReadFile("/proc/sys/" + k)
		if err != nil || strings.TrimSpace(string(cur)) == v {
			continue
		}
		if err := os.WriteFile("/proc/sys/"+k, []byte(v), 0o644); err != nil {
			errs = append(errs, fmt.Errorf("restoring %s=%s: %w", k, v, err))
		}
	}
	if len(errs) == 0 {
		os.Remove(path)
	}
	return errors.Join(errs...)
}

// NodeLeftovers lists what a node left on the machine after Stop: links,
// routes, network namespaces, mounts, iptables chains, nft tables,
// cgroups, processes. Empty means the teardown was complete.
func NodeLeftovers() []string {
	var left []string
	for _, l := range []string{podBridge, nodeBridge} {
		if _, err := net.InterfaceByName(l); err == nil {
			left = append(left, "link "+l)
		}
	}
	if out, _ := exec.Command("ip", "route", "show", nodeRange).Output(); strings.TrimSpace(string(out)) != "" {
		left = append(left, "route "+nodeRange)
	}
	nss, _ := filepath.Glob("/run/netns/cni-*")
	for _, p := range nss {
		left = append(left, "netns "+p)
	}
	if mounts, err := os.ReadFile("/proc/self/mounts"); err == nil {
		for _, line := range strings.Split(string(mounts), "\n") {
			if f := strings.Fields(line); len(f) > 1 && (strings.Contains(f[1], "/conduit-node-") || strings.HasPrefix(f[1], nodeState+"/") || strings.HasPrefix(f[1], "/run/netns/cni-")) {
				left = append(left, "mount "+f[1])
			}
		}
	}
	for _, ipt := range []string{"iptables", "ip6tables"} {
		out, _ := exec.Command(ipt + "-save").Output()
		for _, line := range strings.Split(string(out), "\n") {
			if strings.HasPrefix(line, ":KUBE-") || strings.HasPrefix(line, ":CNI-") || strings.HasPrefix(line, ":"+guardChain) {
				left = append(left, ipt+" chain "+strings.Fields(line)[0][1:])
			}
		}
	}
	if out, _ := exec.Command("nft", "list", "tables").Output(); strings.Contains(string(out), "kube-proxy") {
		left = append(left, "nft table kube-proxy")
	}
	for _, d := range cgroupDirs() {
		left = append(left, "cgroup "+d)
	}
	shims, _ := filepath.Glob(filepath.Join(nodeState, "containerd", "io.containerd.runtime.v2.task", "*", "*", "shim.pid"))
	for _, f := range shims {
		left = append(left, "shim "+f)
	}
	for _, pid := range shimsByAddress("/proc") {
		left = append(left, fmt.Sprintf("shim pid %d (-address %s)", pid, containerdSock))
	}
	return left
}
