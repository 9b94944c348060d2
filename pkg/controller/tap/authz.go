package tap

import (
	"context"
	"fmt"

	authnv1 "k8s.io/api/authentication/v1"
	authzv1 "k8s.io/api/authorization/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/conduitmesh/conduit/pkg/controller/stats"
)

// RBAC coordinates of the tap permission: a Role or ClusterRole rule
// {apiGroups: [tap.conduit.io], resources: [tap], verbs: [watch]} grants it.
const (
	TapGroup    = "tap.conduit.io"
	TapResource = "tap"
	TapVerb     = "watch"
)

// KubeAuthorizer authenticates the caller's bearer token with a TokenReview
// and checks the tap permission on the target's namespace with a
// SubjectAccessReview.
//
// A caller without a token is admitted only over loopback, that is through
// a port-forward into the controller's pod, which the API server allowed
// (pods/portforward in the control plane namespace is an administrator's
// permission); the CLI checks the tap permission itself first
// (SelfSubjectAccessReview) so such users still get RBAC's answer. Pods
// reaching the controller's Service without a token are refused.
type KubeAuthorizer struct {
	Client kubernetes.Interface
}

// Authorize implements Authorizer.
func (a KubeAuthorizer) Authorize(ctx context.Context, caller Caller, target stats.Ref) error {
	token := caller.Token
	if token == "" {
		if caller.Loopback {
			return nil
		}
		return fmt.Errorf("%w: no credentials: tap %s needs a bearer token authorized to %s %s.%s in namespace %s",
			ErrForbidden, target, TapVerb, TapResource, TapGroup, target.Namespace)
	}
	tr, err := a.Client.AuthenticationV1().TokenReviews().Create(ctx,
		&authnv1.TokenReview{Spec: authnv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("reviewing the caller's token: %w", err)
	}
	if !tr.Status.Authenticated {
		return fmt.Errorf("%w: the caller's token is not valid: %s", ErrForbidden, tr.Status.Error)
	}
	u := tr.Status.User
	extra := map[string]authzv1.ExtraValue{}
	for k, v := range u.Extra {
		extra[k] = authzv1.ExtraValue(v)
	}
	ns := target.Namespace
	if target.Type == stats.TypeNamespace {
		ns = target.Name
	}
	sar, err := a.Client.AuthorizationV1().SubjectAccessReviews().Create(ctx, &authzv1.SubjectAccessReview{
		Spec: authzv1.SubjectAccessReviewSpec{
			User: u.Username, Groups: u.Groups, UID: u.UID, Extra: extra,
			ResourceAttributes: &authzv1.ResourceAttributes{
				Namespace: ns, Verb: TapVerb, Group: TapGroup, Resource: TapResource,
			},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		return fmt.Errorf("checking the tap permission: %w", err)
	}
	if !sar.Status.Allowed {
		where := " in namespace " + ns
		if ns == "" {
			where = ""
		}
		return fmt.Errorf("%w: user %q cannot tap %s%s (needs verb %q on resource %q in API group %q)",
			ErrForbidden, u.Username, target, where, TapVerb, TapResource, TapGroup)
	}
	return nil
}
