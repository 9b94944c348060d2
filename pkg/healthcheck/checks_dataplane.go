package healthcheck

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/pki"
)

func (s *state) dataPlane(deadline time.Time) Category {
	dns := s.opts.DataPlaneNamespace
	where := "any namespace"
	if dns != "" {
		where = fmt.Sprintf("namespace %q", dns)
	}
	nsFlag := "-n NAMESPACE"
	if dns != "" {
		nsFlag = "-n " + dns
	}
	var checks []Checker
	if dns != "" {
		checks = append(checks, Checker{
			Description: "data plane namespace exists",
			Hint:        "pass the namespace of your meshed workloads with -n, or leave -n out to check all namespaces",
			Required:    true,
			Check: func(ctx context.Context) error {
				_, err := s.client.CoreV1().Namespaces().Get(ctx, dns, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("namespace %q does not exist", dns)
				}
				return err
			},
		})
	}
	var proxies []corev1.Pod // found by the first check, read by the second
	checks = append(checks,
		Checker{
			Description:   "data plane proxies are ready",
			Hint:          fmt.Sprintf("see why with `kubectl get pods %s -l %s` and `kubectl describe pod %s NAME`", nsFlag, ProxyVersionLabel, nsFlag),
			Required:      true,
			RetryDeadline: deadline,
			Check: func(ctx context.Context) error {
				pods, err := s.client.CoreV1().Pods(dns).List(ctx, metav1.ListOptions{LabelSelector: ProxyVersionLabel})
				if err != nil {
					return err
				}
				proxies = pods.Items
				if len(proxies) == 0 {
					return withHint(
						fmt.Sprintf("mesh workloads with `kubectl %s get deploy -o yaml | %s inject - | kubectl apply -f -`, or annotate their namespace with conduit.io/inject=enabled and restart them", nsFlag, s.opts.ProgName),
						"no meshed pods (label %s) in %s", ProxyVersionLabel, where)
				}
				return s.proxiesReady(ctx, proxies)
			},
		},
		Checker{
			Description: "data plane proxies run the control plane's version",
			Hint:        "restart the meshed workloads so the injector gives them the current proxy, e.g. `kubectl -n NAMESPACE rollout restart deploy/NAME`",
			Warning:     true,
			Check: func(context.Context) error {
				installed := s.installedVersion()
				var stale []string
				for _, p := range proxies {
					if v := p.Labels[ProxyVersionLabel]; v != installed && p.DeletionTimestamp == nil {
						stale = append(stale, fmt.Sprintf("%s/%s (%s)", p.Namespace, p.Name, v))
					}
				}
				if len(stale) == 0 {
					return nil
				}
				return withHint(
					"restart those workloads so the injector gives them the current proxy, e.g. `kubectl -n NAMESPACE rollout restart deploy/NAME`",
					"proxies not on the control plane's version %s: %s", installed, listSome(stale, ", "))
			},
		},
	)
	return Category{ID: DataPlane, Checkers: checks}
}

// proxiesReady fails when a meshed pod's conduit-init or conduit-proxy does
// not work, with one line per failing pod (its status, the container, what
// happened and the container's last log line) and a hint per kind of
// failure.
func (s *state) proxiesReady(ctx context.Context, pods []corev1.Pod) error {
	var failures []*podFailure
	for i := range pods {
		f := diagnose(&pods[i])
		if f == nil {
			continue
		}
		if f.kind == kindNotReady || f.kind == kindProxyFailed {
			if s.staleAnchors(f.pod) {
				f.what += "; its trust anchors are not the control plane's (it started before they changed)"
			}
		}
		failures = append(failures, f)
	}
	if len(failures) == 0 {
		return nil
	}
	sort.Slice(failures, func(i, j int) bool {
		a, b := failures[i].pod, failures[j].pod
		return a.Namespace < b.Namespace || a.Namespace == b.Namespace && a.Name < b.Name
	})
	s.lastLines(ctx, failures)
	lines := make([]string, len(failures))
	for i, f := range failures {
		lines[i] = f.line()
	}
	text := lines[0]
	if len(lines) > 1 {
		text = fmt.Sprintf("%d of %d meshed pods are not ready:\n%s", len(failures), len(pods), strings.Join(lines, "\n"))
	}
	return &HintError{Err: errors.New(text), Hint: s.failureHints(failures)}
}

// failureHints gives one hint per kind of failure, in a fixed order, with
// the commands for the first pod of that kind.
func (s *state) failureHints(failures []*podFailure) string {
	first := map[failureKind]*podFailure{}
	for _, f := range failures {
		if first[f.kind] == nil {
			first[f.kind] = f
		}
	}
	var hints []string
	for _, k := range []failureKind{kindInitFailed, kindProxyFailed, kindCannotStart, kindNotReady, kindNoProxy, kindStarting} {
		if f := first[k]; f != nil {
			hints = append(hints, s.hint(f))
		}
	}
	return strings.Join(hints, "\n")
}

func (s *state) hint(f *podFailure) string {
	ns, pod, c := f.pod.Namespace, f.pod.Name, f.container
	logs := fmt.Sprintf("`kubectl logs -n %s %s -c %s`", ns, pod, c)
	if f.previous {
		logs = fmt.Sprintf("`kubectl logs -n %s %s -c %s --previous`", ns, pod, c)
	}
	describe := fmt.Sprintf("`kubectl describe pod -n %s %s`", ns, pod)
	switch f.kind {
	case kindInitFailed:
		if f.exitCode == 2 {
			return fmt.Sprintf("%s rejected its arguments: %s names the wrong one. They come from the workload's config.conduit.io/* annotations "+
				"(skip-inbound-ports, skip-outbound-ports, proxy-uid, proxy-*-port) or the same flags of `%s inject`: fix them and restart the workload",
				c, logs, s.opts.ProgName)
		}
		return fmt.Sprintf("%s could not install the pod's traffic redirect: %s says why. It must run as root with the NET_ADMIN and NET_RAW capabilities "+
			"to load nftables rules (iptables as a fallback): a policy or container runtime that removes them, or a kernel without nf_tables, stops it; "+
			"`conduit-proxy init --dry-run` prints the rules it installs (README, \"The proxy\": --redirect-mode)", c, logs)
	case kindProxyFailed:
		return fmt.Sprintf("%s keeps exiting: %s says why. OOMKilled means it needs more memory (annotation config.conduit.io/proxy-memory-limit); "+
			"a configuration error names the setting (the workload's config.conduit.io/* annotations)", c, logs)
	case kindCannotStart:
		return fmt.Sprintf("the kubelet cannot start %s: %s shows why in its events. For an image pull error check the image and tag "+
			"(annotations config.conduit.io/proxy-image and proxy-version, or the injector's `%s install --proxy-image`), "+
			"that the node can reach the registry, and the pod's imagePullSecrets", c, describe, s.opts.ProgName)
	case kindNotReady:
		return fmt.Sprintf("a proxy is ready only once the controller's identity service has certified it: %s says why not. "+
			"`%s` must pass its control-plane and identity checks, and a pod started before the trust anchors changed must be restarted "+
			"(`kubectl rollout restart -n %s deploy/NAME`)", logs, s.cmd("check"), ns)
	case kindNoProxy:
		return fmt.Sprintf("the pod has the %s label but no %s: restart its workload so the injector adds the proxy (`kubectl rollout restart -n %s deploy/NAME`), or remove the label",
			ProxyVersionLabel, ProxyContainerName, ns)
	default:
		return fmt.Sprintf("the pod is still starting: %s shows what it waits for; `--wait 5m` waits for it", describe)
	}
}

// staleAnchors reports whether the pod's proxy was given trust anchors
// other than the control plane's (it then cannot verify the identity
// service, nor be verified). Unknown either way is false.
func (s *state) staleAnchors(p *corev1.Pod) bool {
	if len(s.anchors) == 0 {
		return false
	}
	for _, c := range append(append([]corev1.Container{}, p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name != ProxyContainerName {
			continue
		}
		for _, e := range c.Env {
			if e.Name != contract.Env(contract.FlagTrustAnchors) || e.Value == "" {
				continue
			}
			certs, err := pki.Parse([]byte(e.Value))
			if err != nil {
				return false
			}
			return !sameCerts(certs, s.anchors)
		}
	}
	return false
}

func sameCerts(a, b []*x509.Certificate) bool {
	if len(a) != len(b) {
		return false
	}
	for _, c := range a {
		if !containsCert(b, c) {
			return false
		}
	}
	return true
}
