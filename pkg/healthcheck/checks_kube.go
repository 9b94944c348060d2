package healthcheck

import (
	"context"
	"fmt"
	"strings"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	authorizationv1 "k8s.io/api/authorization/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilversion "k8s.io/apimachinery/pkg/util/version"

	"github.com/conduitmesh/conduit/pkg/install"
)

func (s *state) kubernetesAPI(deadline time.Time) Category {
	return Category{ID: KubernetesAPI, Checkers: []Checker{
		{
			Description: "can initialize the client",
			Hint:        "check the kubeconfig: `kubectl config current-context` shows which cluster is used; pass --kubeconfig or --context to choose another",
			Fatal:       true,
			Check: func(context.Context) error {
				c, err := s.opts.NewClient()
				if err != nil {
					return err
				}
				s.client = c
				return nil
			},
		},
		{
			Description:   "can query the Kubernetes API",
			Hint:          "make sure the API server is reachable with these credentials: `kubectl version` must show a server version",
			Fatal:         true,
			RetryDeadline: deadline,
			Check: func(context.Context) error {
				// The discovery client has no context; the runner's attempt
				// timeout and --request-timeout bound it.
				_, err := s.client.Discovery().ServerVersion()
				return err
			},
		},
	}}
}

func (s *state) kubernetesVersion() Category {
	return Category{ID: KubernetesVersion, Checkers: []Checker{{
		Description: "is running the minimum Kubernetes API version",
		Hint:        fmt.Sprintf("upgrade the cluster to Kubernetes %s or later", strings.TrimSuffix(MinKubernetesVersion, ".0")),
		Check: func(context.Context) error {
			info, err := s.client.Discovery().ServerVersion()
			if err != nil {
				return err
			}
			v, err := utilversion.ParseGeneric(info.GitVersion)
			if err != nil {
				return fmt.Errorf("cannot parse the server version %q: %w", info.GitVersion, err)
			}
			if minimum := utilversion.MustParseGeneric(MinKubernetesVersion); v.LessThan(minimum) {
				return fmt.Errorf("Kubernetes %s is older than the minimum supported %s", info.GitVersion, minimum)
			}
			return nil
		},
	}}}
}

func (s *state) preKubernetesSetup() Category {
	ns := s.opts.ControlPlaneNamespace
	prog := s.opts.ProgName
	checks := []Checker{{
		Description: "control plane namespace does not already exist",
		Hint: fmt.Sprintf("Conduit may already be installed there: `%s` checks it, `%s` updates it, `%s` removes it; or install into another namespace with `%s install -L NAME`",
			s.cmd("check"), s.cmd("upgrade"), s.cmd("uninstall"), prog),
		Check: func(ctx context.Context) error {
			live, err := s.client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			switch {
			case err == nil && live.DeletionTimestamp != nil:
				return &install.TerminatingError{Key: install.NamespaceKey(ns)}
			case err == nil:
				return fmt.Errorf("namespace %q already exists", ns)
			case apierrors.IsNotFound(err):
				return nil
			default:
				return fmt.Errorf("looking up namespace %q: %w", ns, err)
			}
		},
	}}
	var user string // who we are, for the messages; looked up once
	for _, r := range s.opts.InstallResources {
		checks = append(checks, Checker{
			Description: fmt.Sprintf("can create %ss", r.Kind),
			Hint:        "installing needs permission to create every object of the control plane: ask a cluster administrator (installing usually takes cluster-admin)",
			Check: func(ctx context.Context) error {
				if user == "" {
					user = s.whoAmI(ctx)
				}
				return s.canCreate(ctx, r, user)
			},
		})
	}
	return Category{ID: PreKubernetesSetup, Checkers: checks}
}

// whoAmI names the current user for messages, or "the current user".
func (s *state) whoAmI(ctx context.Context) string {
	r, err := s.client.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authenticationv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil || r.Status.UserInfo.Username == "" {
		return "the current user"
	}
	return fmt.Sprintf("user %q", r.Status.UserInfo.Username)
}

func (s *state) canCreate(ctx context.Context, r Resource, user string) error {
	ns := ""
	if r.Namespaced {
		ns = s.opts.ControlPlaneNamespace
	}
	resource := r.Resource
	if r.Group != "" {
		resource += "." + r.Group
	}
	var missing []string
	// Server-side apply needs both to create an object.
	for _, verb := range []string{"create", "patch"} {
		review := &authorizationv1.SelfSubjectAccessReview{Spec: authorizationv1.SelfSubjectAccessReviewSpec{
			ResourceAttributes: &authorizationv1.ResourceAttributes{Namespace: ns, Verb: verb, Group: r.Group, Resource: r.Resource},
		}}
		res, err := s.client.AuthorizationV1().SelfSubjectAccessReviews().Create(ctx, review, metav1.CreateOptions{})
		if err != nil {
			return fmt.Errorf("asking the API server whether %s can %s %s: %w", user, verb, resource, err)
		}
		if !res.Status.Allowed {
			missing = append(missing, verb)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	where := "cluster-wide"
	if ns != "" {
		where = fmt.Sprintf("in namespace %q", ns)
	}
	verbs := strings.Join(missing, ",")
	return withHint(
		fmt.Sprintf("installing needs RBAC permission to %s %s %s: ask a cluster administrator to grant it (installing a control plane usually takes cluster-admin, e.g. `kubectl create clusterrolebinding conduit-installer --clusterrole=cluster-admin --user=NAME`)", verbs, resource, where),
		"%s cannot %s %s %s (missing RBAC permission: verbs %s on %s)", user, verbs, resource, where, verbs, resource)
}
