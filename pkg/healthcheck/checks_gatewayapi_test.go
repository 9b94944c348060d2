package healthcheck

import (
	"strings"
	"testing"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestGatewayAPICheck(t *testing.T) {
	const key = "gateway-api/Gateway API routes are served"
	for name, c := range map[string]struct {
		served []metav1.APIResource
		opts   Options
		err    string
		hint   string
	}{
		"served": {served: []metav1.APIResource{{Name: "httproutes"}, {Name: "grpcroutes"}}},
		"absent": {
			err:  "the API server does not serve httproutes and grpcroutes in gateway.networking.k8s.io/v1",
			hint: "`conduit upgrade` installs the Gateway API CRDs (standard channel, v",
		},
		"GRPCRoute missing": {
			served: []metav1.APIResource{{Name: "httproutes"}},
			opts:   Options{ProgName: "kubectl conduit"},
			err:    "does not serve grpcroutes in gateway.networking.k8s.io/v1",
			hint:   "`kubectl conduit upgrade` installs",
		},
	} {
		t.Run(name, func(t *testing.T) {
			client := newFakeClient(t, "v1.37.2", installYAML(t, healthyCerts(t)))
			client.Resources = nil
			if c.served != nil {
				client.Resources = []*metav1.APIResourceList{{GroupVersion: "gateway.networking.k8s.io/v1", APIResources: c.served}}
			}
			rep := runChecks(t, client, c.opts, nil)
			got, failed := failures(rep)[key]
			if c.err == "" {
				if failed || outcome(rep)[key] != StatusSuccess {
					t.Fatalf("%s: %+v", key, got)
				}
				return
			}
			if got.Status != StatusWarning || !strings.Contains(got.Error, c.err) || !strings.Contains(got.Hint, c.hint) ||
				!strings.Contains(got.Hint, "standard-install.yaml") {
				t.Errorf("got %+v\nwant a warning saying %q with a hint %q", got, c.err, c.hint)
			}
		})
	}
}
