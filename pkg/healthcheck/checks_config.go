package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

func (s *state) conduitConfig() Category {
	ns := s.opts.ControlPlaneNamespace
	install := fmt.Sprintf("install the control plane with `%s`, or point --conduit-namespace at the namespace it is installed in", s.cmd("install"))
	reapply := fmt.Sprintf("`%s` re-applies every control plane object (add --force-conflicts if they were edited by hand)", s.cmd("upgrade"))
	inventory := fmt.Sprintf("%s=conduit,%s=%s", PartOfLabel, ControlPlaneNSLabel, ns)
	return Category{ID: ConduitConfig, Checkers: []Checker{
		{
			Description: "control plane Namespace exists",
			Hint:        install,
			Fatal:       true,
			Check: func(ctx context.Context) error {
				_, err := s.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("namespace %q does not exist", ns)
				}
				return err
			},
		},
		{
			Description: "control plane ConfigMap conduit-config exists",
			Hint:        install + "; if the ConfigMap was deleted, " + reapply,
			Fatal:       true,
			Check: func(ctx context.Context) error {
				cm, err := s.client.CoreV1().ConfigMaps(ns).Get(ctx, ConfigMapName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("ConfigMap %s/%s does not exist", ns, ConfigMapName)
				}
				if err != nil {
					return err
				}
				if cm.Data["version"] == "" || cm.Data["values"] == "" {
					return fmt.Errorf("ConfigMap %s/%s lacks the install's version or values", ns, ConfigMapName)
				}
				s.config = cm
				return nil
			},
		},
		{
			Description: "install values are readable",
			Hint:        fmt.Sprintf("`%s` reads the install's values from ConfigMap %s/%s: repair them with `kubectl -n %s edit configmap %s`", s.cmd("upgrade"), ns, ConfigMapName, ns, ConfigMapName),
			Check: func(context.Context) error {
				var values map[string]any
				if err := yaml.Unmarshal([]byte(s.config.Data["values"]), &values); err != nil {
					return fmt.Errorf("ConfigMap %s/%s holds unreadable values: %w", ns, ConfigMapName, err)
				}
				return nil
			},
		},
		{
			Description: "control plane ServiceAccount exists",
			Hint:        reapply,
			Check: func(ctx context.Context) error {
				_, err := s.client.CoreV1().ServiceAccounts(ns).Get(ctx, ControllerName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("ServiceAccount %s/%s does not exist", ns, ControllerName)
				}
				return err
			},
		},
		{
			Description: "control plane ClusterRoles and ClusterRoleBindings exist",
			Hint:        reapply,
			Check: func(ctx context.Context) error {
				roles, err := s.client.RbacV1().ClusterRoles().List(ctx, metav1.ListOptions{LabelSelector: inventory})
				if err != nil {
					return err
				}
				bindings, err := s.client.RbacV1().ClusterRoleBindings().List(ctx, metav1.ListOptions{LabelSelector: inventory})
				if err != nil {
					return err
				}
				var missing []string
				if len(roles.Items) == 0 {
					missing = append(missing, "ClusterRole")
				}
				if len(bindings.Items) == 0 {
					missing = append(missing, "ClusterRoleBinding")
				}
				if len(missing) > 0 {
					return fmt.Errorf("no %s labelled %s", strings.Join(missing, " or "), inventory)
				}
				return nil
			},
		},
	}}
}

func (s *state) controlPlane(deadline time.Time) Category {
	ns := s.opts.ControlPlaneNamespace
	describe := fmt.Sprintf("see why with `kubectl -n %s describe deploy/%s` and `kubectl -n %s get events`", ns, ControllerName, ns)
	cat := Category{ID: ControlPlane, Checkers: []Checker{
		{
			Description: "controller Deployment exists",
			Hint:        fmt.Sprintf("`%s` re-applies every control plane object, the Deployment included", s.cmd("upgrade")),
			Required:    true,
			Check: func(ctx context.Context) error {
				_, err := s.client.AppsV1().Deployments(ns).Get(ctx, ControllerName, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return fmt.Errorf("Deployment %s/%s does not exist", ns, ControllerName)
				}
				return err
			},
		},
		{
			Description:   "control plane pods are ready",
			Hint:          fmt.Sprintf("inspect them with `kubectl -n %s get pods -l %s` and `kubectl -n %s logs deploy/%s`; `--wait 5m` waits for them", ns, ControlPlaneComponentLabel, ns, ControllerName),
			RetryDeadline: deadline,
			Check: func(ctx context.Context) error {
				pods, err := s.client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: ControlPlaneComponentLabel})
				if err != nil {
					return err
				}
				if len(pods.Items) == 0 {
					return fmt.Errorf("no control plane pods in namespace %q (%s)", ns, describe)
				}
				return notReady(pods.Items)
			},
		},
		{
			Description:   "controller Deployment is available",
			Hint:          describe,
			RetryDeadline: deadline,
			Check: func(ctx context.Context) error {
				d, err := s.client.AppsV1().Deployments(ns).Get(ctx, ControllerName, metav1.GetOptions{})
				if err != nil {
					return err
				}
				want := int32(1)
				if d.Spec.Replicas != nil {
					want = *d.Spec.Replicas
				}
				if d.Status.AvailableReplicas < want || d.Status.UpdatedReplicas < want {
					return fmt.Errorf("Deployment %s/%s has %d of %d replicas available and %d updated", ns, ControllerName, d.Status.AvailableReplicas, want, d.Status.UpdatedReplicas)
				}
				return nil
			},
		},
		{
			Description:   "controller Service has ready endpoints",
			Hint:          fmt.Sprintf("the Service selects no ready pod: compare `kubectl -n %s get svc %s -o yaml` with the pods' labels; `%s` restores both", ns, ControllerName, s.cmd("upgrade")),
			RetryDeadline: deadline,
			Check: func(ctx context.Context) error {
				if _, err := s.client.CoreV1().Services(ns).Get(ctx, ControllerName, metav1.GetOptions{}); err != nil {
					if apierrors.IsNotFound(err) {
						return fmt.Errorf("Service %s/%s does not exist", ns, ControllerName)
					}
					return err
				}
				slices, err := s.client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + ControllerName})
				if err != nil {
					return err
				}
				for _, sl := range slices.Items {
					for _, e := range sl.Endpoints {
						if e.Conditions.Ready == nil || *e.Conditions.Ready {
							return nil
						}
					}
				}
				return fmt.Errorf("Service %s/%s has no ready endpoints", ns, ControllerName)
			},
		},
	}}
	if s.opts.ControllerHealth != nil {
		cat.Checkers = append(cat.Checkers, Checker{
			Description:   "controller API answers health checks",
			Hint:          fmt.Sprintf("make sure a controller listens at %s (--controller-addr); its logs say why it is not serving: `kubectl -n %s logs deploy/%s`", s.opts.ControllerAddr, ns, ControllerName),
			RetryDeadline: deadline,
			Check: func(ctx context.Context) error {
				if err := s.opts.ControllerHealth(ctx); err != nil {
					return fmt.Errorf("controller at %s: %w", s.opts.ControllerAddr, err)
				}
				return nil
			},
		})
	}
	return cat
}

// notReady describes the pods that are not Running and Ready, or returns
// nil.
func notReady(pods []corev1.Pod) error {
	var probs []string
	for _, p := range pods {
		if p.DeletionTimestamp != nil {
			continue
		}
		if why := podProblem(&p); why != "" {
			probs = append(probs, fmt.Sprintf("pod %s/%s %s", p.Namespace, p.Name, why))
		}
	}
	if len(probs) == 0 {
		return nil
	}
	return errors.New(listSome(probs, "; "))
}

// listSome sorts items and joins the first five with sep, saying how many
// more there are.
func listSome(items []string, sep string) string {
	sort.Strings(items)
	if len(items) > 5 {
		items = append(items[:5:5], fmt.Sprintf("and %d more", len(items)-5))
	}
	return strings.Join(items, sep)
}

func podProblem(p *corev1.Pod) string {
	if p.Status.Phase != corev1.PodRunning {
		reason := ""
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && w.Reason != "" {
				reason = ": container " + cs.Name + " is " + w.Reason
				break
			}
		}
		return fmt.Sprintf("is %s%s", phaseOrPending(p.Status.Phase), reason)
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			if c.Status == corev1.ConditionTrue {
				return ""
			}
			if c.Message != "" {
				return "is not ready: " + c.Message
			}
			return "is not ready"
		}
	}
	return "is not ready"
}

func phaseOrPending(p corev1.PodPhase) corev1.PodPhase {
	if p == "" {
		return corev1.PodPending
	}
	return p
}
