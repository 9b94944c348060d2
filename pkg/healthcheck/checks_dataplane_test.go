package healthcheck

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/inject"
)

// The states of a Conduit container, as the kubelet reports them.
var (
	running    = corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	completed  = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 0, Reason: "Completed"}}
	initDenied = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error",
		Message: "conduit-proxy init: starting\nconduit-proxy init: installing the redirect: operation not permitted: run conduit-proxy init as root with the NET_ADMIN capability\n"}}
	badArgs = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 2, Reason: "Error",
		Message: "conduit-proxy init: unexpected argument \"--bogus\": init takes only flags (see --help)\n"}}
	proxyCrashed = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 1, Reason: "Error",
		Message: "level=ERROR msg=\"invalid configuration\" err=\"CONDUIT_PROXY_INBOUND_LISTEN: missing port\"\n"}}
	backOff  = waiting("CrashLoopBackOff", "back-off 40s restarting failed container")
	creating = waiting("ContainerCreating", "")
)

func waiting(reason, msg string) corev1.ContainerState {
	return corev1.ContainerState{Waiting: &corev1.ContainerStateWaiting{Reason: reason, Message: msg}}
}

// podSpec describes an injected pod: conduit-init, then conduit-proxy (a
// native sidecar unless regularProxy), then the app container "web".
type podSpec struct {
	name         string
	regularProxy bool // --native-sidecar=false
	phase        corev1.PodPhase
	init, proxy  corev1.ContainerStatus
	noStatus     bool // not scheduled
	anchors      string
}

func status(s corev1.ContainerState, ready bool) corev1.ContainerStatus {
	return corev1.ContainerStatus{State: s, Ready: ready}
}

// restarted is s after restarts, the last one ended by last.
func restarted(s corev1.ContainerState, last corev1.ContainerState, restarts int32) corev1.ContainerStatus {
	return corev1.ContainerStatus{State: s, LastTerminationState: last, RestartCount: restarts}
}

func (p podSpec) pod() *corev1.Pod {
	always := corev1.ContainerRestartPolicyAlways
	proxy := corev1.Container{Name: ProxyContainerName, Image: "ghcr.io/conduitmesh/conduit-proxy:v1.0.0"}
	if p.anchors != "" {
		proxy.Env = []corev1.EnvVar{{Name: contract.Env(contract.FlagTrustAnchors), Value: p.anchors}}
	}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: p.name, Namespace: "app", UID: types.UID(p.name + "-uid"),
			Labels: map[string]string{"app": "web", ProxyVersionLabel: "v1.0.0"}},
		Spec: corev1.PodSpec{
			InitContainers: []corev1.Container{{Name: InitContainerName, Image: "ghcr.io/conduitmesh/conduit-proxy:v1.0.0"}},
			Containers:     []corev1.Container{{Name: "web", Image: "web"}},
		},
		Status: corev1.PodStatus{Phase: p.phase},
	}
	if p.phase == "" {
		pod.Status.Phase = corev1.PodPending
	}
	if p.noStatus {
		pod.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodScheduled, Status: corev1.ConditionFalse, Reason: "Unschedulable",
			Message: "0/1 nodes are available: 1 Insufficient cpu."}}
		return pod
	}
	p.init.Name, p.proxy.Name = InitContainerName, ProxyContainerName
	web := corev1.ContainerStatus{Name: "web", State: waiting("PodInitializing", "")}
	if pod.Status.Phase == corev1.PodRunning {
		web = corev1.ContainerStatus{Name: "web", State: running, Ready: true}
	}
	pod.Status.InitContainerStatuses = []corev1.ContainerStatus{p.init}
	if p.regularProxy {
		pod.Spec.Containers = append(pod.Spec.Containers, proxy)
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{web, p.proxy}
	} else {
		proxy.RestartPolicy = &always
		pod.Spec.InitContainers = append(pod.Spec.InitContainers, proxy)
		started := p.proxy.Ready
		p.proxy.Started = &started
		pod.Status.InitContainerStatuses = append(pod.Status.InitContainerStatuses, p.proxy)
		pod.Status.ContainerStatuses = []corev1.ContainerStatus{web}
	}
	return pod
}

// healthy is a meshed pod whose conduit-init completed and whose proxy runs
// ready.
func healthy(name string, regularProxy bool) podSpec {
	return podSpec{name: name, regularProxy: regularProxy, phase: corev1.PodRunning, init: status(completed, false), proxy: status(running, true)}
}

// logRead is one read of a container's log by the checks.
type logRead struct {
	container string
	previous  bool
	tail      int64
}

// fakeLogs answers log reads with logs[container] (the previous instance's
// under container+" previous"), or fails as an unreachable kubelet would
// for a container not in logs, and records the reads.
func fakeLogs(c *fake.Clientset, logs map[string]string) *[]logRead {
	var reads []logRead
	c.PrependReactor("get", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() != "log" {
			return false, nil, nil
		}
		o := a.(k8stesting.GenericAction).GetValue().(*corev1.PodLogOptions)
		r := logRead{container: o.Container, previous: o.Previous}
		if o.TailLines != nil {
			r.tail = *o.TailLines
		}
		reads = append(reads, r)
		key := o.Container
		if o.Previous {
			key += " previous"
		}
		if l, ok := logs[key]; ok {
			return true, &runtime.Unknown{Raw: []byte(l)}, nil
		}
		return true, nil, errors.New("Get \"https://kwok-node-0:10250/containerLogs/app/web-1/conduit-init\": dial tcp: lookup kwok-node-0: no such host")
	})
	return &reads
}

// runProxyChecks runs the checks with --proxy -n app against a healthy
// install holding pods.
func runProxyChecks(t *testing.T, logs map[string]string, wait time.Duration, pods ...podSpec) (Report, *[]logRead) {
	t.Helper()
	client := newFakeClient(t, "v1.37.2", installYAML(t, healthyCerts(t)), appNamespace)
	for _, p := range pods {
		if _, err := client.CoreV1().Pods("app").Create(context.Background(), p.pod(), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	reads := fakeLogs(client, logs)
	return runChecks(t, client, Options{Proxy: true, DataPlaneNamespace: "app", Wait: wait}, nil), reads
}

const readyCheck = "data-plane/data plane proxies are ready"

func TestProxyFailures(t *testing.T) {
	tests := []struct {
		name  string
		pod   podSpec
		logs  map[string]string
		err   string   // the whole error
		hint  []string // substrings of the hint
		reads []logRead
	}{
		{
			name:  "Init:Error, log unreadable: the termination message's last line",
			pod:   podSpec{name: "web-1", init: status(initDenied, false), proxy: status(waiting("PodInitializing", ""), false)},
			err:   "pod app/web-1 (Init:Error): conduit-init exited with code 1; last log line: conduit-proxy init: installing the redirect: operation not permitted: run conduit-proxy init as root with the NET_ADMIN capability",
			hint:  []string{"conduit-init could not install the pod's traffic redirect: `kubectl logs -n app web-1 -c conduit-init` says why", "NET_ADMIN and NET_RAW", "--dry-run"},
			reads: []logRead{{container: "conduit-init", tail: 1}},
		},
		{
			name:  "Init:Error, log readable",
			pod:   podSpec{name: "web-1", init: status(initDenied, false), proxy: status(waiting("PodInitializing", ""), false)},
			logs:  map[string]string{"conduit-init": "conduit-proxy init: from the log\n"},
			err:   "pod app/web-1 (Init:Error): conduit-init exited with code 1; last log line: conduit-proxy init: from the log",
			reads: []logRead{{container: "conduit-init", tail: 1}},
		},
		{
			name:  "Init:CrashLoopBackOff with bad arguments: the previous instance's log",
			pod:   podSpec{name: "web-1", init: restarted(backOff, badArgs, 3), proxy: status(waiting("PodInitializing", ""), false)},
			logs:  map[string]string{"conduit-init previous": "conduit-proxy init: unexpected argument \"--bogus\" (from the log)\n"},
			err:   "pod app/web-1 (Init:CrashLoopBackOff): conduit-init exited with code 2 and is restarting (CrashLoopBackOff, 3 restarts); last log line: conduit-proxy init: unexpected argument \"--bogus\" (from the log)",
			hint:  []string{"conduit-init rejected its arguments: `kubectl logs -n app web-1 -c conduit-init --previous` names the wrong one", "config.conduit.io/*"},
			reads: []logRead{{container: "conduit-init", previous: true, tail: 1}},
		},
		{
			name:  "conduit-init running again after failing, caught between two runs: still a failure",
			pod:   podSpec{name: "web-1", init: restarted(running, badArgs, 1), proxy: status(waiting("PodInitializing", ""), false)},
			logs:  map[string]string{"conduit-init previous": "conduit-proxy init: flag provided but not defined: -bogus\n"},
			err:   "pod app/web-1 (Init:0/2): conduit-init exited with code 2 and was restarted (1 restart); last log line: conduit-proxy init: flag provided but not defined: -bogus",
			hint:  []string{"conduit-init rejected its arguments: `kubectl logs -n app web-1 -c conduit-init --previous` names the wrong one"},
			reads: []logRead{{container: "conduit-init", previous: true, tail: 1}},
		},
		{
			name:  "the kubelet no longer has the previous instance's log: the termination message's last line",
			pod:   podSpec{name: "web-1", init: restarted(running, badArgs, 1), proxy: status(waiting("PodInitializing", ""), false)},
			logs:  map[string]string{"conduit-init previous": "unable to retrieve container logs for containerd://79e70244bca8\n"},
			err:   "pod app/web-1 (Init:0/2): conduit-init exited with code 2 and was restarted (1 restart); last log line: conduit-proxy init: unexpected argument \"--bogus\": init takes only flags (see --help)",
			reads: []logRead{{container: "conduit-init", previous: true, tail: 1}},
		},
		{
			name:  "CrashLoopBackOff of a regular proxy container",
			pod:   podSpec{name: "web-1", regularProxy: true, phase: corev1.PodRunning, init: status(completed, false), proxy: restarted(backOff, proxyCrashed, 5)},
			err:   `pod app/web-1 (CrashLoopBackOff): conduit-proxy exited with code 1 and is restarting (CrashLoopBackOff, 5 restarts); last log line: level=ERROR msg="invalid configuration" err="CONDUIT_PROXY_INBOUND_LISTEN: missing port"`,
			hint:  []string{"conduit-proxy keeps exiting: `kubectl logs -n app web-1 -c conduit-proxy --previous` says why", "proxy-memory-limit"},
			reads: []logRead{{container: "conduit-proxy", previous: true, tail: 1}},
		},
		{
			name: "CrashLoopBackOff of a native sidecar proxy, OOMKilled",
			pod: podSpec{name: "web-1", init: status(completed, false),
				proxy: restarted(backOff, corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Reason: "OOMKilled"}}, 1)},
			logs:  map[string]string{"conduit-proxy previous": "level=INFO msg=certified\n"},
			err:   "pod app/web-1 (Init:CrashLoopBackOff): conduit-proxy exited with code 137 (OOMKilled) and is restarting (CrashLoopBackOff, 1 restart); last log line: level=INFO msg=certified",
			reads: []logRead{{container: "conduit-proxy", previous: true, tail: 1}},
		},
		{
			name:  "proxy running but not ready: no certificate",
			pod:   podSpec{name: "web-1", init: status(completed, false), proxy: status(running, false)},
			logs:  map[string]string{"conduit-proxy": "level=WARN msg=\"certificate request failed\" err=\"connection refused\" retry_in=8s\n"},
			err:   `pod app/web-1 (Init:1/2): conduit-proxy is running but not ready: it has no identity certificate yet; last log line: level=WARN msg="certificate request failed" err="connection refused" retry_in=8s`,
			hint:  []string{"certified it: `kubectl logs -n app web-1 -c conduit-proxy` says why not", "`conduit check` must pass its control-plane and identity checks"},
			reads: []logRead{{container: "conduit-proxy", tail: 1}},
		},
		{
			name: "image pull error: nothing logged, no log read",
			pod: podSpec{name: "web-1", init: status(completed, false),
				proxy: status(waiting("ImagePullBackOff", `Back-off pulling image "ghcr.io/conduitmesh/conduit-proxy:v9.9.9"`), false)},
			err:  `pod app/web-1 (Init:ImagePullBackOff): conduit-proxy cannot start: ImagePullBackOff: Back-off pulling image "ghcr.io/conduitmesh/conduit-proxy:v9.9.9"`,
			hint: []string{"the kubelet cannot start conduit-proxy: `kubectl describe pod -n app web-1`", "config.conduit.io/proxy-image", "imagePullSecrets"},
		},
		{
			name: "ErrImagePull of conduit-init",
			pod:  podSpec{name: "web-1", init: status(waiting("ErrImagePull", "rpc error: not found"), false), proxy: status(waiting("PodInitializing", ""), false)},
			err:  "pod app/web-1 (Init:ErrImagePull): conduit-init cannot start: ErrImagePull: rpc error: not found",
		},
		{
			name: "CreateContainerConfigError",
			pod: podSpec{name: "web-1", regularProxy: true, init: status(completed, false),
				proxy: status(waiting("CreateContainerConfigError", `secret "x" not found`), false)},
			err: `pod app/web-1 (CreateContainerConfigError): conduit-proxy cannot start: CreateContainerConfigError: secret "x" not found`,
		},
		{
			name: "not scheduled",
			pod:  podSpec{name: "web-1", noStatus: true},
			err:  "pod app/web-1 (Pending): is not scheduled: 0/1 nodes are available: 1 Insufficient cpu.",
			hint: []string{"the pod is still starting: `kubectl describe pod -n app web-1`", "--wait"},
		},
		{
			name:  "conduit-init still running",
			pod:   podSpec{name: "web-1", init: status(running, false), proxy: status(waiting("PodInitializing", ""), false)},
			err:   "pod app/web-1 (Init:0/2): conduit-init is still running",
			reads: []logRead{{container: "conduit-init", tail: 1}},
		},
		{
			name: "proxy being created",
			pod:  podSpec{name: "web-1", init: status(completed, false), proxy: status(creating, false)},
			err:  "pod app/web-1 (Init:1/2): conduit-proxy is waiting to start (ContainerCreating)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rep, reads := runProxyChecks(t, tt.logs, 0, tt.pod, healthy("web-0", false))
			r := failures(rep)[readyCheck]
			if r.Status != StatusError || r.Error != tt.err {
				t.Errorf("got %s %q\nwant error %q", r.Status, r.Error, tt.err)
			}
			for _, h := range tt.hint {
				if !strings.Contains(r.Hint, h) {
					t.Errorf("hint lacks %q:\n%s", h, r.Hint)
				}
			}
			if diff := cmp.Diff(tt.reads, *reads, cmp.AllowUnexported(logRead{})); diff != "" {
				t.Errorf("log reads (-want +got):\n%s", diff)
			}
			if rep.Success {
				t.Error("the run succeeded")
			}
		})
	}
}

func TestHealthyProxiesPass(t *testing.T) {
	job := healthy("job-1", false)
	job.phase = corev1.PodSucceeded
	job.proxy = status(completed, false)
	appFailed := healthy("job-2", false)
	appFailed.phase = corev1.PodFailed
	appFailed.proxy = status(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 143, Reason: "Error"}}, false)
	rep, reads := runProxyChecks(t, nil, 0, healthy("web-1", false), healthy("web-2", true), job, appFailed)
	if f := failures(rep); len(f) > 0 || !rep.Success {
		t.Errorf("healthy proxies: %+v", f)
	}
	if len(*reads) > 0 {
		t.Errorf("logs read of healthy pods: %+v", *reads)
	}
}

func TestFailedJobPodWithFailedInit(t *testing.T) {
	p := podSpec{name: "job-1", phase: corev1.PodFailed, init: status(initDenied, false), proxy: status(waiting("PodInitializing", ""), false)}
	rep, _ := runProxyChecks(t, nil, 0, p)
	if r := failures(rep)[readyCheck]; !strings.HasPrefix(r.Error, "pod app/job-1 (Init:Error): conduit-init exited with code 1") {
		t.Errorf("got %q", r.Error)
	}
}

func TestStaleTrustAnchorsAreNamed(t *testing.T) {
	other := makeCert(t, certSpec{cn: "old-root", notBefore: testNow.Add(-days(400)), notAfter: testNow.Add(days(3650)), ca: true}, nil)
	p := podSpec{name: "web-1", init: status(completed, false), proxy: status(running, false), anchors: other.CertPEM}
	rep, _ := runProxyChecks(t, map[string]string{"conduit-proxy": "x\n"}, 0, p)
	want := "pod app/web-1 (Init:1/2): conduit-proxy is running but not ready: it has no identity certificate yet; its trust anchors are not the control plane's (it started before they changed); last log line: x"
	if r := failures(rep)[readyCheck]; r.Error != want {
		t.Errorf("got  %q\nwant %q", r.Error, want)
	}
}

// TestManyFailingPodsOutput pins the output of several failing pods: every
// one listed, the hint of each kind once.
func TestManyFailingPodsOutput(t *testing.T) {
	pods := []podSpec{
		healthy("web-0", false),
		{name: "web-1", init: status(initDenied, false), proxy: status(waiting("PodInitializing", ""), false)},
		{name: "web-2", init: restarted(backOff, initDenied, 4), proxy: status(waiting("PodInitializing", ""), false)},
		{name: "web-3", regularProxy: true, phase: corev1.PodRunning, init: status(completed, false), proxy: restarted(backOff, proxyCrashed, 2)},
		{name: "web-4", init: status(completed, false), proxy: status(running, false)},
	}
	rep, _ := runProxyChecks(t, map[string]string{"conduit-proxy": "level=WARN msg=\"certificate request failed\"\n"}, 0, pods...)
	var b strings.Builder
	PrintBasic(&b, rep, false, true)
	golden(t, "check_proxy_failures.golden", b.String())
}

// TestCrashedLogsAreReadOnce: while --wait retries, the log of a container
// instance that exited is read once.
func TestCrashedLogsAreReadOnce(t *testing.T) {
	p := podSpec{name: "web-1", init: restarted(backOff, initDenied, 2), proxy: status(waiting("PodInitializing", ""), false)}
	client := newFakeClient(t, "v1.37.2", installYAML(t, healthyCerts(t)), appNamespace)
	if _, err := client.CoreV1().Pods("app").Create(context.Background(), p.pod(), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	reads := fakeLogs(client, map[string]string{"conduit-init previous": "denied\n"})
	clock := testNow
	opts := Options{Proxy: true, DataPlaneNamespace: "app", Wait: time.Minute,
		NewClient: func() (kubernetes.Interface, error) { return client, nil }, CLIVersion: "v1.0.0",
		Now: func() time.Time { return clock }}
	obs := ObserverFuncs{RetryingFunc: func(Result, time.Time) {}}
	runner := Runner{RetryInterval: time.Millisecond, Now: func() time.Time {
		clock = clock.Add(time.Second)
		return clock
	}}
	rep := runner.Run(context.Background(), Categories(opts), obs)
	if r := failures(rep)[readyCheck]; !strings.HasSuffix(r.Error, "last log line: denied") {
		t.Errorf("got %q", r.Error)
	}
	if len(*reads) != 1 {
		t.Errorf("%d log reads over the retries; want 1", len(*reads))
	}
}

func TestPodStatus(t *testing.T) {
	tests := []struct {
		pod  podSpec
		want string
	}{
		{healthy("a", false), "Running"},
		{healthy("a", true), "Running"},
		{podSpec{init: status(initDenied, false)}, "Init:Error"},
		{podSpec{init: restarted(backOff, initDenied, 1)}, "Init:CrashLoopBackOff"},
		{podSpec{init: status(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 3}}, false)}, "Init:ExitCode:3"},
		{podSpec{init: status(corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{ExitCode: 137, Signal: 9}}, false)}, "Init:Signal:9"},
		{podSpec{init: status(completed, false), proxy: status(running, false)}, "Init:1/2"},
		{podSpec{init: status(completed, false), proxy: status(running, true)}, "PodInitializing"},
		{podSpec{regularProxy: true, phase: corev1.PodRunning, init: status(completed, false), proxy: restarted(backOff, proxyCrashed, 1)}, "CrashLoopBackOff"},
		{podSpec{noStatus: true}, "Pending"},
	}
	for _, tt := range tests {
		if got := podStatus(tt.pod.pod()); got != tt.want {
			t.Errorf("%+v: got %q, want %q", tt.pod, got, tt.want)
		}
	}
}

func TestLastNonEmptyLine(t *testing.T) {
	tests := map[string]string{
		"":                       "",
		"one\ntwo\n\n  \n":       "two",
		"\x1b[31mred\x1b[0m\r\n": "red",
		"a\x00b":                 "ab",
		strings.Repeat("x", 400): strings.Repeat("x", 300) + "…",
	}
	for in, want := range tests {
		if got := lastNonEmptyLine(in); got != want {
			t.Errorf("lastNonEmptyLine(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestNamesMatchTheInjector: the checks look for what the injector adds.
func TestNamesMatchTheInjector(t *testing.T) {
	got := []string{InitContainerName, ProxyContainerName, contract.Env(contract.FlagTrustAnchors), ProxyVersionLabel}
	want := []string{inject.InitContainerName, inject.ProxyContainerName, contract.Env(contract.FlagTrustAnchors), inject.LabelProxyVersion}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("names (-injector +checks):\n%s", diff)
	}
}
