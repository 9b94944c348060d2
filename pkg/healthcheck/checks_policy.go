package healthcheck

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"

	policyv1 "github.com/conduitmesh/conduit/pkg/api/policy/v1"
	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// policyObjects are the policy resources the policy checks look at, read
// by the first of them.
type policyObjects struct {
	servers  []*policy.Server
	policies []*policy.AuthorizationPolicy
	// routes tells whether the Gateway API routes are served (false: a
	// policy that targets one applies to nothing).
	routes bool
	// routeList are the HTTPRoutes and GRPCRoutes served, read by the
	// first check that needs them (routesRead).
	routeList  []unstructured.Unstructured
	routesRead bool
}

// policyChecks are the --proxy checks of the policy resources in the data
// plane namespace (or every namespace): they flag objects that cannot do
// what their author meant.
func (s *state) policyChecks() Category {
	dns := s.opts.DataPlaneNamespace
	var objs *policyObjects // nil until read; empty when not served
	upgrade := s.cmd("upgrade")
	return Category{ID: Policy, Checkers: []Checker{
		{
			Description: "policy resources are installed",
			Hint:        fmt.Sprintf("`%s` installs the policy.conduit.io CRDs (Server, AuthorizationPolicy, …) with the control plane", upgrade),
			Warning:     true,
			Check: func(context.Context) error {
				served, err := s.served(policy.ServersResource)
				if err != nil || served {
					return err
				}
				objs = &policyObjects{}
				return fmt.Errorf("the API server does not serve %s: every port has the default inbound policy", policy.ServersResource.GroupVersion())
			},
		},
		{
			Description: "policy resources are readable",
			Hint:        "you need list access to the policy.conduit.io resources: ask your cluster admin, or check them with `kubectl auth can-i list servers.policy.conduit.io`",
			Required:    true,
			Check: func(ctx context.Context) error {
				if objs != nil {
					return nil // not installed: nothing to read
				}
				read, err := s.readPolicy(ctx, dns)
				if err != nil {
					return err
				}
				objs = read
				return nil
			},
		},
		{
			Description: "Servers select pods",
			Hint:        "a Server applies to the pods its podSelector selects: compare the selector with the pods' labels (`kubectl get pods -n NAMESPACE -l SELECTOR`) and fix it, or delete a Server whose workload is gone",
			Warning:     true,
			Check: func(ctx context.Context) error {
				var problems []string
				hint := ""
				for _, srv := range objs.servers {
					sel, err := metav1.LabelSelectorAsSelector(&srv.Spec.PodSelector)
					if err != nil {
						problems = append(problems, fmt.Sprintf("Server %s/%s has an invalid podSelector: %v", srv.Namespace, srv.Name, err))
						continue
					}
					pods, err := s.client.CoreV1().Pods(srv.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String(), Limit: 1})
					if err != nil {
						return err
					}
					if len(pods.Items) == 0 {
						problems = append(problems, fmt.Sprintf("Server %s/%s selects no pod (podSelector %s)", srv.Namespace, srv.Name, metav1.FormatLabelSelector(&srv.Spec.PodSelector)))
						if hint == "" {
							hint = fmt.Sprintf("a Server applies to the pods its podSelector selects: compare the selector with the pods' labels (`kubectl get pods -n %s --show-labels`) and fix it, or delete a Server whose workload is gone", srv.Namespace)
						}
					}
				}
				return withSpecificHint(hint, problemList(problems, "Servers select no pod"))
			},
		},
		{
			Description: "AuthorizationPolicies' authentications exist",
			Hint:        "an AuthorizationPolicy whose required authentication does not exist admits no one: create it, or fix the policy's requiredAuthenticationRefs (`kubectl get meshtlsauthentications,networkauthentications -A` lists those that exist)",
			Warning:     true,
			Check: func(ctx context.Context) error {
				var problems []string
				for _, ap := range objs.policies {
					for _, ref := range ap.Spec.RequiredAuthenticationRefs {
						gvr, ok := authenticationResource(ref)
						if !ok {
							continue
						}
						ns := refNamespace(ref.Namespace, ap.Namespace)
						exists, err := s.exists(ctx, gvr, ns, ref.Name)
						if err != nil {
							return err
						}
						if !exists {
							problems = append(problems, fmt.Sprintf("AuthorizationPolicy %s/%s requires %s %s/%s, which does not exist", ap.Namespace, ap.Name, ref.Kind, ns, ref.Name))
						}
					}
				}
				return problemList(problems, "AuthorizationPolicies require authentications that do not exist")
			},
		},
		{
			Description: "AuthorizationPolicies name existing ServiceAccounts",
			Hint:        "no client has the identity of a ServiceAccount that does not exist: fix the name in the AuthorizationPolicy or its MeshTLSAuthentication (`kubectl get serviceaccounts -n NAMESPACE`), or create the ServiceAccount",
			Warning:     true,
			Check: func(ctx context.Context) error {
				var problems []string
				hint := ""
				missing := func(ap *policy.AuthorizationPolicy, via, ns, name string) error {
					_, err := s.client.CoreV1().ServiceAccounts(ns).Get(ctx, name, metav1.GetOptions{})
					if apierrors.IsNotFound(err) {
						problems = append(problems, fmt.Sprintf("AuthorizationPolicy %s/%s names ServiceAccount %s/%s%s, which does not exist", ap.Namespace, ap.Name, ns, name, via))
						if hint == "" {
							hint = fmt.Sprintf("no client has the identity of a ServiceAccount that does not exist: fix the name in the AuthorizationPolicy or its MeshTLSAuthentication (`kubectl get serviceaccounts -n %s` lists those that exist), or create the ServiceAccount", ns)
						}
						return nil
					}
					return err
				}
				for _, ap := range objs.policies {
					for _, ref := range ap.Spec.RequiredAuthenticationRefs {
						switch {
						case ofKind(ref.Group, ref.Kind, "", policy.KindServiceAccount):
							if err := missing(ap, "", refNamespace(ref.Namespace, ap.Namespace), ref.Name); err != nil {
								return err
							}
						case ofKind(ref.Group, ref.Kind, policy.Group, policy.KindMeshTLSAuthentication):
							authn, err := s.meshTLS(ctx, refNamespace(ref.Namespace, ap.Namespace), ref.Name)
							if err != nil || authn == nil {
								return err // a missing one is the check above's
							}
							for _, id := range authn.Spec.IdentityRefs {
								if id.Kind != policy.KindServiceAccount || id.Name == "*" {
									continue
								}
								via := fmt.Sprintf(" (in MeshTLSAuthentication %s/%s)", authn.Namespace, authn.Name)
								if err := missing(ap, via, refNamespace(id.Namespace, authn.Namespace), id.Name); err != nil {
									return err
								}
							}
						}
					}
				}
				return withSpecificHint(hint, problemList(problems, "AuthorizationPolicies name ServiceAccounts that do not exist"))
			},
		},
		{
			Description: "AuthorizationPolicies' targets exist",
			Hint:        "an AuthorizationPolicy applies to nothing until its spec.targetRef names an existing Server, HTTPRoute or GRPCRoute of its own namespace, or that namespace",
			Warning:     true,
			Check: func(ctx context.Context) error {
				var problems []string
				for _, ap := range objs.policies {
					problem, err := s.targetProblem(ctx, objs, ap)
					if err != nil {
						return err
					}
					if problem != "" {
						problems = append(problems, fmt.Sprintf("AuthorizationPolicy %s/%s targets %s", ap.Namespace, ap.Name, problem))
					}
				}
				return problemList(problems, "AuthorizationPolicies target nothing")
			},
		},
		{
			Description: "Servers with routes declare an HTTP protocol",
			Hint:        serverProtocolHint("NAMESPACE", "NAME", "HTTP/1"),
			Warning:     true,
			Check: func(ctx context.Context) error {
				problems, hint, err := s.serverProtocolProblems(ctx, objs, dns)
				if err != nil {
					return err
				}
				return withSpecificHint(hint, problemList(problems, "Servers have routes that a connection can pass"))
			},
		},
		{
			Description: "Service routes are accepted and resolve their backends",
			Hint: "the controller writes each route's conditions for the Services it names as parents: " +
				"`kubectl get httproute,grpcroute -n NAMESPACE NAME -o yaml` shows them (status.parents); fix the route's parentRefs, " +
				"or its backendRefs (each an existing Service, with one of its ports)",
			Warning: true,
			Check: func(ctx context.Context) error {
				problems, err := s.routeProblems(ctx, objs, dns)
				if err != nil {
					return err
				}
				return problemList(problems, "routes are not accepted or do not resolve their backends")
			},
		},
	}}
}

// serverProtocolProblems lists the Servers whose routes (HTTPRoutes and
// GRPCRoutes that name them as parents) a connection can pass: a Server
// that detects relays what is not HTTP to detection under its own
// authorizations, an opaque one never reads requests. The hint names the
// first Server listed.
func (s *state) serverProtocolProblems(ctx context.Context, objs *policyObjects, ns string) (problems []string, hint string, err error) {
	if len(objs.servers) == 0 {
		return nil, "", nil
	}
	list, err := s.routes(ctx, objs, ns)
	if err != nil {
		return nil, "", err
	}
	type route struct {
		what    string // "HTTPRoute app/web"
		ns      string
		http    bool // an HTTPRoute, not a GRPCRoute
		parents []policy.ParentRef
	}
	routes := make([]route, 0, len(list))
	for i := range list {
		u := &list[i]
		r, err := convert[struct {
			Spec struct {
				ParentRefs []policy.ParentRef `json:"parentRefs"`
			} `json:"spec"`
		}](u)
		if err != nil {
			return nil, "", err
		}
		routes = append(routes, route{u.GetKind() + " " + u.GetNamespace() + "/" + u.GetName(), u.GetNamespace(), u.GetKind() == policy.KindHTTPRoute, r.Spec.ParentRefs})
	}
	servers := slices.Clone(objs.servers) // sorted as problemList sorts, for the hint
	slices.SortFunc(servers, func(a, b *policy.Server) int {
		return strings.Compare(a.Namespace+"/"+a.Name, b.Namespace+"/"+b.Name)
	})
	for _, srv := range servers {
		var names []string
		suggest := "gRPC" // what the hint's patch sets: HTTP/1 unless only GRPCRoutes name srv
		for _, r := range routes {
			if policy.ParentIsServer(r.parents, r.ns, srv) {
				names = append(names, r.what)
				if r.http {
					suggest = "HTTP/1"
				}
			}
		}
		if len(names) == 0 {
			continue
		}
		slices.Sort(names)
		of := strings.Join(names, ", ")
		switch proto, _ := policy.ServerProtocol(srv); proto {
		case policyv1.Protocol_DETECT:
			declared := srv.Spec.ProxyProtocol
			if declared == "" {
				declared = "unknown"
			}
			problems = append(problems, fmt.Sprintf("Server %s/%s detects its protocol (proxyProtocol %s): a connection that is not HTTP to detection passes its routes (%s), under the Server's own authorizations", srv.Namespace, srv.Name, declared, of))
		case policyv1.Protocol_OPAQUE:
			problems = append(problems, fmt.Sprintf("Server %s/%s is opaque: its routes (%s) never apply, only the Server's own authorizations", srv.Namespace, srv.Name, of))
		default:
			continue
		}
		if hint == "" {
			hint = serverProtocolHint(srv.Namespace, srv.Name, suggest)
		}
	}
	return problems, hint, nil
}

func serverProtocolHint(ns, name, proto string) string {
	return "a Server with routes should say what its port takes (proxyProtocol HTTP/1, HTTP/2 or gRPC): the proxy then holds every request to the routes and refuses a connection that is not HTTP (" +
		fmt.Sprintf("`kubectl patch server -n %s %s --type merge -p '{\"spec\":{\"proxyProtocol\":\"%s\"}}'`", ns, name, proto) +
		"); or delete the routes of a port that is not HTTP"
}

// routeProblems lists the conditions the controller set to False on the
// HTTPRoutes and GRPCRoutes of ns ("" is every namespace), one line each:
// the route, the parent, the condition, its reason and message. Routes
// are not read when the API server does not serve them (a check of the
// Gateway API category says so).
func (s *state) routeProblems(ctx context.Context, objs *policyObjects, ns string) ([]string, error) {
	list, err := s.routes(ctx, objs, ns)
	if err != nil {
		return nil, err
	}
	var problems []string
	for _, u := range list {
		for _, ps := range policy.ParentStatuses(&u) {
			if ps.ControllerName != contract.RouteControllerName {
				continue // another implementation's
			}
			refNS := u.GetNamespace()
			if ps.ParentRef.Namespace != nil && *ps.ParentRef.Namespace != "" {
				refNS = *ps.ParentRef.Namespace
			}
			for _, c := range ps.Conditions {
				if c.Status != metav1.ConditionFalse {
					continue
				}
				problems = append(problems, fmt.Sprintf("%s %s/%s, parent Service %s/%s: %s is False (%s): %s",
					u.GetKind(), u.GetNamespace(), u.GetName(), refNS, ps.ParentRef.Name, c.Type, c.Reason, c.Message))
			}
		}
	}
	return problems, nil
}

// routes lists the HTTPRoutes and GRPCRoutes of ns ("" is every namespace)
// that the API server serves, once per run (objs keeps them).
func (s *state) routes(ctx context.Context, objs *policyObjects, ns string) ([]unstructured.Unstructured, error) {
	if objs.routesRead {
		return objs.routeList, nil
	}
	if s.dyn == nil {
		dyn, err := s.opts.NewDynamicClient()
		if err != nil {
			return nil, err
		}
		s.dyn = dyn
	}
	var out []unstructured.Unstructured
	for _, gvr := range gatewayAPIRoutes {
		served, err := s.served(gvr)
		if err != nil {
			return nil, err
		}
		if !served {
			continue
		}
		list, err := s.dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", gvr.GroupResource(), err)
		}
		out = append(out, list.Items...)
	}
	objs.routeList, objs.routesRead = out, true
	return out, nil
}

// readPolicy lists the Servers and AuthorizationPolicies of ns ("" is
// every namespace).
func (s *state) readPolicy(ctx context.Context, ns string) (*policyObjects, error) {
	dyn, err := s.opts.NewDynamicClient()
	if err != nil {
		return nil, err
	}
	s.dyn = dyn
	out := &policyObjects{}
	if out.servers, err = listAs[policy.Server](ctx, s, policy.ServersResource, ns); err != nil {
		return nil, err
	}
	if out.policies, err = listAs[policy.AuthorizationPolicy](ctx, s, policy.AuthorizationPoliciesResource, ns); err != nil {
		return nil, err
	}
	if out.routes, err = s.served(policy.HTTPRoutesResource); err != nil {
		return nil, err
	}
	return out, nil
}

func listAs[T any](ctx context.Context, s *state, gvr schema.GroupVersionResource, ns string) ([]*T, error) {
	list, err := s.dyn.Resource(gvr).Namespace(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, fmt.Errorf("listing %s: %w", gvr.GroupResource(), err)
	}
	out := make([]*T, 0, len(list.Items))
	for i := range list.Items {
		t, err := convert[T](&list.Items[i])
		if err != nil {
			return nil, err
		}
		out = append(out, t)
	}
	return out, nil
}

func convert[T any](u *unstructured.Unstructured) (*T, error) {
	out := new(T)
	if err := runtime.DefaultUnstructuredConverter.FromUnstructured(u.Object, out); err != nil {
		return nil, fmt.Errorf("reading %s %s/%s: %w", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return out, nil
}

// served reports whether the API server serves gvr.
func (s *state) served(gvr schema.GroupVersionResource) (bool, error) {
	list, err := s.client.Discovery().ServerResourcesForGroupVersion(gvr.GroupVersion().String())
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("asking the API server whether it serves %s: %w", gvr.GroupResource(), err)
	}
	for _, r := range list.APIResources {
		if r.Name == gvr.Resource {
			return true, nil
		}
	}
	return false, nil
}

func (s *state) exists(ctx context.Context, gvr schema.GroupVersionResource, ns, name string) (bool, error) {
	_, err := s.dyn.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

// meshTLS reads a MeshTLSAuthentication; nil when it does not exist.
func (s *state) meshTLS(ctx context.Context, ns, name string) (*policy.MeshTLSAuthentication, error) {
	u, err := s.dyn.Resource(policy.MeshTLSAuthenticationsResource).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return convert[policy.MeshTLSAuthentication](u)
}

// targetProblem says what is wrong with the policy's target, "" when it
// exists.
func (s *state) targetProblem(ctx context.Context, objs *policyObjects, ap *policy.AuthorizationPolicy) (string, error) {
	t := ap.Spec.TargetRef
	var gvr schema.GroupVersionResource
	switch {
	case ofKind(t.Group, t.Kind, "", policy.KindNamespace):
		if t.Name != ap.Namespace {
			return fmt.Sprintf("Namespace %s, but a policy applies only in its own namespace %s", t.Name, ap.Namespace), nil
		}
		return "", nil
	case ofKind(t.Group, t.Kind, policy.Group, policy.KindServer):
		gvr = policy.ServersResource
	case ofKind(t.Group, t.Kind, policy.GatewayGroup, policy.KindHTTPRoute):
		gvr = policy.HTTPRoutesResource
	case ofKind(t.Group, t.Kind, policy.GatewayGroup, policy.KindGRPCRoute):
		gvr = policy.GRPCRoutesResource
	default:
		return fmt.Sprintf("a %s, which is not a Server, HTTPRoute, GRPCRoute or Namespace", t.Kind), nil
	}
	if gvr != policy.ServersResource {
		served := objs.routes
		if gvr == policy.GRPCRoutesResource {
			var err error
			if served, err = s.served(gvr); err != nil {
				return "", err
			}
		}
		if !served {
			return fmt.Sprintf("%s %s/%s, but the API server does not serve %s (the Gateway API CRDs are not installed)", t.Kind, ap.Namespace, t.Name, gvr.GroupResource()), nil
		}
	}
	exists, err := s.exists(ctx, gvr, ap.Namespace, t.Name)
	if err != nil || exists {
		return "", err
	}
	return fmt.Sprintf("%s %s/%s, which does not exist", t.Kind, ap.Namespace, t.Name), nil
}

// authenticationResource is the resource of a required authentication
// that is an object of the policy API (not a ServiceAccount).
func authenticationResource(ref policy.NamespaceRef) (schema.GroupVersionResource, bool) {
	switch {
	case ofKind(ref.Group, ref.Kind, policy.Group, policy.KindMeshTLSAuthentication):
		return policy.MeshTLSAuthenticationsResource, true
	case ofKind(ref.Group, ref.Kind, policy.Group, policy.KindNetworkAuthentication):
		return policy.NetworkAuthenticationsResource, true
	}
	return schema.GroupVersionResource{}, false
}

// ofKind reports whether a reference names kind of group; a reference
// without a group means the kind's own, as the controller reads it.
func ofKind(refGroup, refKind, group, kind string) bool {
	return refKind == kind && (refGroup == "" || refGroup == group)
}

func refNamespace(ns, referrer string) string {
	if ns == "" {
		return referrer
	}
	return ns
}

// withSpecificHint gives err (when not nil) hint instead of its
// checker's.
func withSpecificHint(hint string, err error) error {
	if err == nil || hint == "" {
		return err
	}
	return &HintError{Err: err, Hint: hint}
}

// problemList is nil without problems, the problem itself when there is
// one, else "N <what>:" and one problem a line (at most five).
func problemList(problems []string, what string) error {
	switch len(problems) {
	case 0:
		return nil
	case 1:
		return errors.New(problems[0])
	}
	slices.Sort(problems)
	return fmt.Errorf("%d %s:\n%s", len(problems), what, listSome(problems, "\n"))
}
