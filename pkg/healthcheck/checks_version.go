package healthcheck

import (
	"context"
	"fmt"

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

func orNone(v string) string {
	if v == "" {
		return "no version label"
	}
	return v
}
