package healthcheck

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func (s *state) version() Category {
	ns := s.opts.ControlPlaneNamespace
	prog := s.opts.ProgName
	return Category{ID: Version, Checkers: []Checker{
		{
			Description: "control plane and CLI versions match",
			Hint:        fmt.Sprintf("upgrade the control plane to this CLI's version with `%s`", s.cmd("upgrade")),
			Warning:     true,
			Check: func(context.Context) error {
				installed := s.installedVersion()
				if installed == s.opts.CLIVersion {
					return nil
				}
				return withHint(
					fmt.Sprintf("upgrade the control plane to this CLI's version with `%s`, or use a %s %s CLI", s.cmd("upgrade"), prog, installed),
					"control plane is %s but the CLI is %s", installed, s.opts.CLIVersion)
			},
		},
		{
			Description: "control plane pods run the installed version",
			Hint:        fmt.Sprintf("wait for the rollout with `kubectl -n %s rollout status deploy/%s`; `%s` re-applies the installed version", ns, ControllerName, s.cmd("upgrade")),
			Warning:     true,
			Check: func(ctx context.Context) error {
				pods, err := s.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: ControlPlaneComponentLabel})
				if err != nil {
					return err
				}
				installed := s.installedVersion()
				var stale []string
				for _, p := range pods.Items {
					if v := p.Labels[VersionLabel]; v != installed && p.DeletionTimestamp == nil {
						stale = append(stale, fmt.Sprintf("%s (%s)", p.Name, orNone(v)))
					}
				}
				if len(stale) > 0 {
					return fmt.Errorf("pods not on the installed version %s: %s", installed, listSome(stale, ", "))
				}
				return nil
			},
		},
	}}
}

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
			Hint:          fmt.Sprintf("see why with `kubectl %s get pods -l %s` and `kubectl %s logs NAME -c %s`", nsFlag, ProxyVersionLabel, nsFlag, ProxyContainerName),
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
				if err := notReady(proxies, ProxyContainerName); err != nil {
					return withHint(
						fmt.Sprintf("see why with `kubectl %s describe pod NAME` and `kubectl %s logs NAME -c %s`; `--wait 5m` waits for them", nsFlag, nsFlag, ProxyContainerName),
						"%w", err)
				}
				return nil
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

func orNone(v string) string {
	if v == "" {
		return "no version label"
	}
	return v
}
