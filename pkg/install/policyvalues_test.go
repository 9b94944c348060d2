package install

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestPolicyValues: the policy values reach the controller as flags, and
// bad ones are rejected by path before anything renders.
func TestPolicyValues(t *testing.T) {
	objs, _ := renderForTest(t, ValueOptions{Set: []string{"policy.defaultInboundPolicy=deny", "policy.clusterNetworks={10.1.0.0/16,fd00::/8}"}})
	ctr := byKey(objs)["Deployment conduit/conduit-controller"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	var args []string
	for _, a := range ctr["args"].([]any) {
		args = append(args, a.(string))
	}
	for _, want := range []string{"--default-inbound-policy=deny", "--cluster-networks=10.1.0.0/16,fd00::/8"} {
		if !slices.Contains(args, want) {
			t.Errorf("controller args %v lack %s", args, want)
		}
	}

	for _, tc := range []struct {
		set           string
		path, problem string
	}{
		{"policy.defaultInboundPolicy=allow", "policy.defaultInboundPolicy", `"allow" is not one of "all-unauthenticated", "all-authenticated", "cluster-authenticated", "cluster-unauthenticated", "deny"`},
		{"policy.clusterNetworks={10.0.0.0/8,10.0.0.0/33}", "policy.clusterNetworks[1]", `"10.0.0.0/33" is not a CIDR`},
		{"policy.clusterNetworks={10.0.0.0}", "policy.clusterNetworks[0]", `"10.0.0.0" is not a CIDR`},
		{"policy.clusterNetworks={fd00::/129}", "policy.clusterNetworks[0]", `"fd00::/129" is not a CIDR`},
		{"policy.clusterNetworks=null", "", ""}, // no flag: the controller's default
		{"policy=null", "", ""},
		{"policy.clusterNetwork={10.0.0.0/8}", "policy.clusterNetwork", "the chart has no such value"},
	} {
		t.Run(tc.set, func(t *testing.T) {
			_, _, err := RenderInstall(InstallOptions{Values: ValueOptions{Set: []string{tc.set}}, Version: "v1.2.3", Now: testNow})
			if tc.path == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			var ve *ValueError
			if !errors.As(err, &ve) || ve.Path != tc.path || !strings.Contains(ve.Problem, tc.problem) {
				t.Errorf("err = %v, want %s: %s", err, tc.path, tc.problem)
			}
		})
	}
	empty := filepath.Join(t.TempDir(), "empty.yaml")
	if err := os.WriteFile(empty, []byte("policy:\n  clusterNetworks: []\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := RenderInstall(InstallOptions{Values: ValueOptions{ValuesFiles: []string{empty}}, Version: "v1.2.3", Now: testNow})
	var ve *ValueError
	if !errors.As(err, &ve) || ve.Path != "policy.clusterNetworks" {
		t.Errorf("an empty clusterNetworks: err = %v, want it rejected (the cluster-* policies would admit no one)", err)
	}
}
