// Package cluster runs a real Kubernetes control plane on loopback for
// integration tests: etcd, kube-apiserver, kube-controller-manager and kwok,
// built from Go modules into a cache outside the checkout. There is no
// kubelet: kwok fakes a Ready node, "kwok-node-0", and makes the pods bound to
// it Running and Ready, and a small binder stands in for kube-scheduler.
//
// Every cluster has its own ports and run directory, so several test
// packages can run clusters at the same time.
package cluster

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"time"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// NodeName is the fake node kwok manages; the binder binds every pod to it.
const NodeName = "kwok-node-0"

//go:embed kwok-stages.yaml
var kwokStages []byte

// Options configure Start. The zero value is ready to use.
type Options struct {
	// CacheDir holds the built binaries; default CacheDir().
	CacheDir string
	// K8sVersion, EtcdVersion and KwokVersion select the binaries; the
	// defaults are DefaultK8sVersion, DefaultEtcdVersion, DefaultKwokVersion.
	K8sVersion, EtcdVersion, KwokVersion string
	// CoreDNSVersion selects the real node's CoreDNS; default DefaultCoreDNSVersion.
	CoreDNSVersion string
	// HackScript builds missing binaries; default integration/hack/k8s-test-cluster.sh.
	HackScript string
	// BaseDir is where the run directory is created; default os.TempDir().
	BaseDir string
	// KeepDir leaves the run directory (logs, pki; not etcd's data) after
	// Stop, for debugging.
	// CONDUIT_KEEP_CLUSTER=1 in the environment does the same.
	KeepDir bool
	// Log receives build progress and the harness's own messages; nil discards them.
	Log io.Writer
	// StartTimeout bounds starting each component; default 2 minutes.
	StartTimeout time.Duration
	// APIServerArgs are extra kube-apiserver flags (--name=value).
	APIServerArgs []string

	// The fields below serve the real node (StartNode); the zero values give
	// the loopback cluster with kwok.

	// BindAddress is the API server's address; default 127.0.0.1. Another
	// address also turns the endpoint reconciler on, so the kubernetes
	// Service reaches the API server from pods.
	BindAddress string
	// ServiceCIDR is the Service IP range; default 10.96.0.0/16. Its first
	// address is in the API server's certificate.
	ServiceCIDR string
	// NoKwok starts no kwok, fake node or binder: a real kubelet and
	// kube-scheduler join instead.
	NoKwok bool
}

func (o *Options) defaults() {
	if o.K8sVersion == "" {
		o.K8sVersion = DefaultK8sVersion
	}
	if o.EtcdVersion == "" {
		o.EtcdVersion = DefaultEtcdVersion
	}
	if o.KwokVersion == "" {
		o.KwokVersion = DefaultKwokVersion
	}
	if o.CoreDNSVersion == "" {
		o.CoreDNSVersion = DefaultCoreDNSVersion
	}
	if o.StartTimeout == 0 {
		o.StartTimeout = 2 * time.Minute
	}
	if os.Getenv("CONDUIT_KEEP_CLUSTER") == "1" {
		o.KeepDir = true
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	if o.BindAddress == "" {
		o.BindAddress = "127.0.0.1"
	}
	if o.ServiceCIDR == "" {
		o.ServiceCIDR = "10.96.0.0/16"
	}
}

// Cluster is a running control plane. Stop it when done.
type Cluster struct {
	Dir        string       // run dir with pki, logs
	Kubeconfig string       // admin kubeconfig path
	RESTConfig *rest.Config // admin
	Client     kubernetes.Interface
	Server     string // https://<Options.BindAddress>:PORT

	opts     Options
	pki      *pki
	procs    []*process // in start order
	stopBind context.CancelFunc
	bindDone chan struct{}
	egress   *egressGuard // the loopback cluster's; nil on the real node
	stopOnce sync.Once
	stopErr  error
}

// Start builds (or reuses from the cache) etcd, kube-apiserver,
// kube-controller-manager and kwok, and starts them on free loopback ports.
// When it returns, the node kwok-node-0 is Ready, the "default" namespace has
// its ServiceAccount, and pods without a node are bound to kwok-node-0.
func Start(ctx context.Context, opts Options) (_ *Cluster, err error) {
	opts.defaults()
	t0 := time.Now()
	bins, err := EnsureBinaries(ctx, opts)
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp(opts.BaseDir, "conduit-cluster-")
	if err != nil {
		return nil, fmt.Errorf("creating the cluster run dir: %w", err)
	}
	c := &Cluster{Dir: dir, opts: opts}
	defer func() {
		if err != nil {
			if stopErr := c.Stop(); stopErr != nil {
				err = errors.Join(err, stopErr)
			}
		}
	}()
	sans, err := apiServerIPs(opts)
	if err != nil {
		return nil, err
	}
	if c.pki, err = newPKI(filepath.Join(dir, "pki"), sans); err != nil {
		return nil, err
	}
	adminToken := randomToken()
	if err := os.WriteFile(c.pki.path(tokensFile), []byte(adminToken+`,admin,admin-uid,"system:masters"`+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("writing the token file: %w", err)
	}

	if !opts.NoKwok {
		if c.egress, err = startEgressGuard(dir); err != nil {
			return nil, err
		}
	}
	etcdURL, err := c.startEtcd(ctx, bins.Etcd)
	if err != nil {
		return nil, err
	}
	if err := c.startAPIServer(ctx, bins.APIServer, etcdURL, adminToken); err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Log, "cluster: kube-apiserver ready at %s after %s (run dir %s)\n", c.Server, time.Since(t0).Round(time.Millisecond), dir)
	if !opts.NoKwok {
		if err := c.createNode(ctx); err != nil {
			return nil, err
		}
	}
	if err := c.startControllerManager(bins.ControllerManager); err != nil {
		return nil, err
	}
	if !opts.NoKwok {
		if err := c.startKwok(bins.Kwok); err != nil {
			return nil, err
		}
		c.startBinder()
	}
	if err := c.waitReady(ctx); err != nil {
		return nil, err
	}
	fmt.Fprintf(opts.Log, "cluster: ready after %s\n", time.Since(t0).Round(time.Millisecond))
	return c, nil
}

// Stop stops the components Start started (and only those), then removes
// the run directory unless Options.KeepDir. It is safe to call twice.
func (c *Cluster) Stop() error {
	c.stopOnce.Do(func() {
		var errs []error
		if c.stopBind != nil {
			c.stopBind()
			<-c.bindDone
		}
		for i := len(c.procs) - 1; i >= 0; i-- {
			if err := c.procs[i].stop(15 * time.Second); err != nil {
				errs = append(errs, err)
			}
		}
		if c.egress != nil {
			c.egress.stop()
		}
		if c.opts.KeepDir {
			// The logs and pki are what explain a failure; etcd's data
			// (tens of MB) is not.
			os.RemoveAll(filepath.Join(c.Dir, "etcd-data")) //nolint:errcheck // best effort
			fmt.Fprintf(c.opts.Log, "cluster: kept run dir %s (logs, pki)\n", c.Dir)
		} else if err := os.RemoveAll(c.Dir); err != nil {
			errs = append(errs, fmt.Errorf("removing %s: %w", c.Dir, err))
		}
		c.stopErr = errors.Join(errs...)
	})
	return c.stopErr
}

// RefusedEgress lists the connections the API server of the loopback cluster
// tried to make to the cluster network (a webhook's Service, a kwok pod's
// logs), all refused: each is a test that would have sent packets off the
// machine.
func (c *Cluster) RefusedEgress() []string {
	if c.egress == nil {
		return nil
	}
	return c.egress.Refused()
}

// RouteEgress makes the loopback cluster's API server reach target
// ("10.96.0.12:443", a Service's ClusterIP and port) at local, a listener
// the test runs on loopback, until the returned function is called. It
// fails on the real node, whose API server dials the cluster directly.
func (c *Cluster) RouteEgress(target, local string) (func(), error) {
	if c.egress == nil {
		return nil, errors.New("cluster: RouteEgress needs the loopback cluster's egress guard")
	}
	return c.egress.route(target, local), nil
}

// Keep makes Stop leave the run directory (logs, pki) in place, e.g. after
// a failed test run. Call it before Stop.
func (c *Cluster) Keep() { c.opts.KeepDir = true }

// PIDs are the process ids of the running components, by name.
func (c *Cluster) PIDs() map[string]int {
	out := make(map[string]int, len(c.procs))
	for _, p := range c.procs {
		out[p.name] = p.cmd.Process.Pid
	}
	return out
}

// portRetries is how often a component is restarted on new ports when a
// port it was given got taken by someone else first.
const portRetries = 3

func (c *Cluster) startEtcd(ctx context.Context, bin string) (string, error) {
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return "", err
		}
		client := "http://127.0.0.1:" + strconv.Itoa(ports[0])
		peer := "http://127.0.0.1:" + strconv.Itoa(ports[1])
		p, err := startProcess(c.Dir, "etcd", bin,
			"--name=default",
			"--data-dir="+filepath.Join(c.Dir, "etcd-data"),
			"--listen-client-urls="+client, "--advertise-client-urls="+client,
			"--listen-peer-urls="+peer, "--initial-advertise-peer-urls="+peer,
			"--initial-cluster=default="+peer,
			"--unsafe-no-fsync",
			"--log-level=warn",
		)
		if err != nil {
			return "", err
		}
		err = waitFor(ctx, c.opts.StartTimeout, p, func(ctx context.Context) bool {
			return httpOK(ctx, nil, client+"/health", "", `"health":"true"`)
		})
		if err == nil {
			c.procs = append(c.procs, p)
			return client, nil
		}
		p.stop(5 * time.Second) //nolint:errcheck // reported through err
		if !p.portInUse() || attempt == portRetries {
			return "", err
		}
		os.RemoveAll(filepath.Join(c.Dir, "etcd-data"))
	}
}

func (c *Cluster) startAPIServer(ctx context.Context, bin, etcdURL, adminToken string) error {
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		c.Server = "https://" + net.JoinHostPort(c.opts.BindAddress, strconv.Itoa(ports[0]))
		reconciler := "none"
		if c.opts.BindAddress != "127.0.0.1" {
			reconciler = "lease"
		}
		args := append([]string{
			"--bind-address=" + c.opts.BindAddress,
			"--advertise-address=" + c.opts.BindAddress,
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--endpoint-reconciler-type=" + reconciler,
			"--etcd-servers=" + etcdURL,
			"--cert-dir=" + filepath.Join(c.Dir, "apiserver-certs"),
			"--tls-cert-file=" + c.pki.path(apiserverCertFile),
			"--tls-private-key-file=" + c.pki.path(apiserverKeyFile),
			"--client-ca-file=" + c.pki.path(caCertFile),
			"--token-auth-file=" + c.pki.path(tokensFile),
			"--authorization-mode=Node,RBAC",
			"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
			"--service-account-key-file=" + c.pki.path(saPubFile),
			"--service-account-signing-key-file=" + c.pki.path(saKeyFile),
			"--api-audiences=https://kubernetes.default.svc.cluster.local",
			"--service-cluster-ip-range=" + c.opts.ServiceCIDR,
			"--allow-privileged=true",
			"--enable-admission-plugins=NamespaceLifecycle,LimitRanger,ServiceAccount,DefaultTolerationSeconds,DefaultStorageClass,ResourceQuota,NodeRestriction,MutatingAdmissionWebhook,ValidatingAdmissionWebhook,ValidatingAdmissionPolicy",
			"--profiling=false",
		}, c.opts.APIServerArgs...)
		if c.egress != nil {
			args = append(args, "--egress-selector-config-file="+c.egress.config)
		}
		p, err := startProcess(c.Dir, "kube-apiserver", bin, args...)
		if err != nil {
			return err
		}
		if err := c.writeAdminKubeconfig(adminToken); err != nil {
			p.stop(5 * time.Second) //nolint:errcheck // reported through err
			return err
		}
		err = waitFor(ctx, c.opts.StartTimeout, p, func(ctx context.Context) bool {
			return httpOK(ctx, c.pki.caPEM, c.Server+"/readyz", adminToken, "ok")
		})
		if err == nil {
			c.procs = append(c.procs, p)
			return nil
		}
		p.stop(5 * time.Second) //nolint:errcheck // reported through err
		if !p.portInUse() || attempt == portRetries {
			return err
		}
	}
}

func (c *Cluster) startControllerManager(bin string) error {
	p, err := startProcess(c.Dir, "kube-controller-manager", bin,
		"--kubeconfig="+c.Kubeconfig,
		"--secure-port=0",
		"--leader-elect=false",
		"--controllers=*",
		"--use-service-account-credentials=false",
		"--service-account-private-key-file="+c.pki.path(saKeyFile),
		"--root-ca-file="+c.pki.path(caCertFile),
		"--cluster-signing-cert-file="+c.pki.path(caCertFile),
		"--cluster-signing-key-file="+c.pki.path(caKeyFile),
		"--service-cluster-ip-range="+c.opts.ServiceCIDR,
	)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

func (c *Cluster) startKwok(bin string) error {
	stages := filepath.Join(c.Dir, "kwok-stages.yaml")
	if err := os.WriteFile(stages, kwokStages, 0o644); err != nil {
		return fmt.Errorf("writing kwok stages: %w", err)
	}
	p, err := startProcess(c.Dir, "kwok", bin,
		"--kubeconfig="+c.Kubeconfig,
		"--config="+stages,
		"--manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake",
		"--cidr=10.244.0.1/16",
		"--node-ip=10.240.0.1",
		"--node-lease-duration-seconds=40",
	)
	if err != nil {
		return err
	}
	c.procs = append(c.procs, p)
	return nil
}

// waitFor polls ready until it is true, the process dies, or the timeout.
func waitFor(ctx context.Context, timeout time.Duration, p *process, ready func(context.Context) bool) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if ready(ctx) {
			return nil
		}
		select {
		case <-p.done:
			return p.failure(fmt.Sprintf("exited before becoming ready (%v)", p.waitErr))
		case <-ctx.Done():
			return p.failure(fmt.Sprintf("not ready after %s", timeout))
		case <-tick.C:
		}
	}
}

// processDied reports a component that exited on its own.
func (c *Cluster) processDied() error {
	for _, p := range c.procs {
		if p.exited() {
			return p.failure(fmt.Sprintf("exited unexpectedly (%v)", p.waitErr))
		}
	}
	return nil
}

// apiServerIPs are the addresses in the API server's certificate: loopback,
// the bind address and the first Service IP (the kubernetes Service).
func apiServerIPs(o Options) ([]net.IP, error) {
	_, svc, err := net.ParseCIDR(o.ServiceCIDR)
	if err != nil || svc.IP.To4() == nil {
		return nil, fmt.Errorf("cluster: ServiceCIDR %q is not an IPv4 CIDR", o.ServiceCIDR)
	}
	first := make(net.IP, 4)
	copy(first, svc.IP.To4())
	first[3]++
	ips := []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback, first}
	if ip := net.ParseIP(o.BindAddress); ip != nil && !ip.IsLoopback() {
		ips = append(ips, ip)
	}
	return ips, nil
}
