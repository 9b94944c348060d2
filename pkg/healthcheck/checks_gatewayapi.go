package healthcheck

import (
	"context"
	"fmt"
	"strings"

	"k8s.io/apimachinery/pkg/runtime/schema"
	"sigs.k8s.io/gateway-api/pkg/consts"

	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// gatewayAPIRoutes are the Gateway API resources the controller reads:
// routes whose parent is a Service (outbound routing) or a Server (per-route
// inbound policy).
var gatewayAPIRoutes = []schema.GroupVersionResource{policy.HTTPRoutesResource, policy.GRPCRoutesResource}

// gatewayAPI checks that the API server serves the Gateway API routes.
func (s *state) gatewayAPI() Category {
	v := consts.BundleVersion
	return Category{ID: GatewayAPI, Checkers: []Checker{
		{
			Description: "Gateway API routes are served",
			Hint: fmt.Sprintf("`%s` installs the Gateway API CRDs (standard channel, %s) where they are absent; "+
				"or install them yourself: kubectl apply --server-side -f https://github.com/kubernetes-sigs/gateway-api/releases/download/%s/standard-install.yaml",
				s.cmd("upgrade"), v, v),
			Warning: true,
			Check: func(context.Context) error {
				var missing []string
				for _, gvr := range gatewayAPIRoutes {
					served, err := s.served(gvr)
					if err != nil {
						return err
					}
					if !served {
						missing = append(missing, gvr.Resource)
					}
				}
				if len(missing) > 0 {
					return fmt.Errorf("the API server does not serve %s in %s: routes, retries and timeouts of Services' routes do not apply",
						strings.Join(missing, " and "), policy.HTTPRoutesResource.GroupVersion())
				}
				return nil
			},
		},
	}}
}
