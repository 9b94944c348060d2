package healthcheck

import (
	"fmt"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// failureKind is what keeps a meshed pod's Conduit containers from working;
// each kind has its own hint.
type failureKind int

const (
	// kindStarting: the pod is not scheduled yet, or its containers are
	// being created or wait for the ones before them.
	kindStarting failureKind = iota
	// kindInitFailed: conduit-init exited with an error (Init:Error,
	// Init:CrashLoopBackOff).
	kindInitFailed
	// kindProxyFailed: conduit-proxy exited (Error, CrashLoopBackOff).
	kindProxyFailed
	// kindCannotStart: the kubelet cannot start the container (image
	// pull, invalid configuration).
	kindCannotStart
	// kindNotReady: conduit-proxy runs but is not ready, which means it
	// holds no certificate from the identity service.
	kindNotReady
	// kindNoProxy: the pod runs, but has no conduit-proxy.
	kindNoProxy
)

// podFailure says why one meshed pod's Conduit containers do not work.
type podFailure struct {
	pod *corev1.Pod
	// status is the pod's status as `kubectl get pods` shows it.
	status string
	kind   failureKind
	// container is the failing Conduit container; "" when the problem is
	// the pod's (not scheduled).
	container string
	// what happened to it, a phrase after its name: "exited with code 1".
	what string
	// exitCode is the container's last exit code, if it exited.
	exitCode int32

	// hasLog is set when the container ran, so it may have logged.
	hasLog bool
	// previous asks for the log of the container's previous instance: the
	// current one waits to restart.
	previous bool
	// exited is set when the instance whose log is read has exited: its
	// log no longer changes.
	exited bool
	// restarts counts the container's restarts (part of the log's identity).
	restarts int32
	// message is the termination message, which carries the last lines of
	// the log (terminationMessagePolicy: FallbackToLogsOnError) when the
	// log cannot be read.
	message string
	// lastLine is the container's last log line, once read.
	lastLine string
}

// waitingToStart are the waiting reasons of a container that is on its way.
var waitingToStart = map[string]bool{"": true, "ContainerCreating": true, "PodInitializing": true}

// diagnose returns why the Conduit containers of the meshed pod p do not
// work, or nil when they do. Pods that are going away or have finished are
// fine; a failed pod is reported only when conduit-init failed it.
func diagnose(p *corev1.Pod) *podFailure {
	if p.DeletionTimestamp != nil || p.Status.Phase == corev1.PodSucceeded {
		return nil
	}
	f := &podFailure{pod: p, status: podStatus(p)}
	proxySeen := false
	for _, cs := range p.Status.InitContainerStatuses {
		switch cs.Name {
		case InitContainerName:
			if f.inspect(cs, kindInitFailed) {
				return f
			}
		case ProxyContainerName:
			proxySeen = true
			if p.Status.Phase != corev1.PodFailed && f.inspect(cs, kindProxyFailed) {
				return f
			}
		}
	}
	if p.Status.Phase == corev1.PodFailed {
		return nil // stopped for good, not by Conduit: no proxy to check
	}
	for _, cs := range p.Status.ContainerStatuses {
		if cs.Name == ProxyContainerName {
			proxySeen = true
			if f.inspect(cs, kindProxyFailed) {
				return f
			}
		}
	}
	if proxySeen {
		return nil
	}
	if phaseOrPending(p.Status.Phase) == corev1.PodPending {
		f.kind, f.what = kindStarting, "is not running yet"
		for _, c := range p.Status.Conditions {
			if c.Type == corev1.PodScheduled && c.Status != corev1.ConditionTrue && c.Message != "" {
				f.what = "is not scheduled: " + c.Message
			}
		}
		return f
	}
	f.kind, f.what = kindNoProxy, "has no "+ProxyContainerName+" container status"
	return f
}

// inspect fills f and returns true when cs, the status of a Conduit
// container, shows a problem; failed is the kind of a crash.
func (f *podFailure) inspect(cs corev1.ContainerStatus, failed failureKind) bool {
	f.container, f.restarts = cs.Name, cs.RestartCount
	last := cs.LastTerminationState.Terminated
	switch st := cs.State; {
	case st.Terminated != nil:
		t := st.Terminated
		if t.ExitCode == 0 && failed == kindInitFailed {
			return false // conduit-init installed the redirect
		}
		f.kind, f.what = failed, exitText(t)
		f.exitCode, f.hasLog, f.exited, f.message = t.ExitCode, true, true, t.Message
	case st.Waiting != nil && !waitingToStart[st.Waiting.Reason] && st.Waiting.Reason != "CrashLoopBackOff":
		f.kind, f.what = kindCannotStart, "cannot start: "+st.Waiting.Reason
		if m := strings.TrimSpace(st.Waiting.Message); m != "" {
			f.what += ": " + m
		}
	case st.Waiting != nil && (last != nil || st.Waiting.Reason == "CrashLoopBackOff"):
		// Exited and waiting to be restarted: the previous instance logged why.
		reason := st.Waiting.Reason
		if reason == "" {
			reason = "waiting"
		}
		f.kind, f.what = failed, fmt.Sprintf("%s and is restarting (%s, %s)", exitText(last), reason, restarts(cs.RestartCount))
		if last != nil {
			f.exitCode, f.hasLog, f.previous, f.exited, f.message = last.ExitCode, true, true, true, last.Message
		}
	case st.Waiting != nil:
		f.kind, f.what = kindStarting, "is waiting to start"
		if st.Waiting.Reason != "" {
			f.what += " (" + st.Waiting.Reason + ")"
		}
	case last != nil && last.ExitCode != 0 && (failed == kindInitFailed || !cs.Ready):
		// Running again after a failure (the kubelet restarts it with a
		// back-off, and it fails again): a crash loop caught between two
		// runs. The previous instance logged why.
		f.kind, f.what = failed, fmt.Sprintf("%s and was restarted (%s)", exitText(last), restarts(cs.RestartCount))
		f.exitCode, f.hasLog, f.previous, f.exited, f.message = last.ExitCode, true, true, true, last.Message
	case failed == kindInitFailed:
		// Running: still installing the redirect, which takes a moment.
		f.kind, f.what, f.hasLog = kindStarting, "is still running", true
	case !cs.Ready:
		f.kind, f.what, f.hasLog = kindNotReady, "is running but not ready: it has no identity certificate yet", true
	default:
		return false
	}
	return true
}

func exitText(t *corev1.ContainerStateTerminated) string {
	if t == nil {
		return "exited"
	}
	s := fmt.Sprintf("exited with code %d", t.ExitCode)
	if t.Signal != 0 {
		s = fmt.Sprintf("was killed by signal %d", t.Signal)
	}
	if t.Reason != "" && t.Reason != "Error" && t.Reason != "Completed" {
		s += " (" + t.Reason + ")" // OOMKilled, ContainerCannotRun, …
	}
	return s
}

func restarts(n int32) string {
	if n == 1 {
		return "1 restart"
	}
	return fmt.Sprintf("%d restarts", n)
}

// line is the failure in one line: the pod, its status, the container,
// what happened to it and its last log line.
func (f *podFailure) line() string {
	var b strings.Builder
	fmt.Fprintf(&b, "pod %s/%s (%s): ", f.pod.Namespace, f.pod.Name, f.status)
	if f.container != "" && f.kind != kindNoProxy {
		b.WriteString(f.container + " ")
	}
	b.WriteString(f.what)
	if f.lastLine != "" {
		b.WriteString("; last log line: " + f.lastLine)
	}
	return b.String()
}

// podStatus is the pod's status as the STATUS column of `kubectl get pods`
// shows it: the first init container that has not completed (Init:Error,
// Init:CrashLoopBackOff, Init:1/2), else the first container that is
// waiting or has terminated (CrashLoopBackOff, Error; one that is merely
// being created only when no other is), else the phase.
func podStatus(p *corev1.Pod) string {
	if p.DeletionTimestamp != nil {
		return "Terminating"
	}
	sidecar := map[string]bool{}
	for _, c := range p.Spec.InitContainers {
		sidecar[c.Name] = c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
	}
	for i, cs := range p.Status.InitContainerStatuses {
		t, w := cs.State.Terminated, cs.State.Waiting
		switch {
		case sidecar[cs.Name] && cs.Started != nil && *cs.Started:
			continue
		case t != nil && t.ExitCode == 0 && !sidecar[cs.Name]:
			continue
		case t != nil:
			return "Init:" + terminatedReason(t)
		case w != nil && !waitingToStart[w.Reason]:
			return "Init:" + w.Reason
		default:
			return fmt.Sprintf("Init:%d/%d", i, len(p.Spec.InitContainers))
		}
	}
	starting := ""
	for _, cs := range p.Status.ContainerStatuses {
		if w := cs.State.Waiting; w != nil && waitingToStart[w.Reason] && starting == "" {
			starting = w.Reason
		} else if w != nil {
			return w.Reason
		}
		if t := cs.State.Terminated; t != nil && p.Status.Phase != corev1.PodSucceeded {
			return terminatedReason(t)
		}
	}
	if starting != "" {
		return starting
	}
	if p.Status.Reason != "" {
		return p.Status.Reason // Evicted, NodeLost
	}
	return string(phaseOrPending(p.Status.Phase))
}

func terminatedReason(t *corev1.ContainerStateTerminated) string {
	switch {
	case t.Reason != "":
		return t.Reason
	case t.Signal != 0:
		return fmt.Sprintf("Signal:%d", t.Signal)
	default:
		return fmt.Sprintf("ExitCode:%d", t.ExitCode)
	}
}
