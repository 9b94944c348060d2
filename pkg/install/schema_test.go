package install

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"k8s.io/client-go/kubernetes/fake"
)

// TestRenderRejectsBadValues: a value values.schema.json rejects fails the
// install with one line that names the value as --set spells it, what is
// wrong and what to do.
func TestRenderRejectsBadValues(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	if err := os.WriteFile(typo, []byte("webhook:\n  failurPolicy: Fail\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		vo   ValueOptions
		want ValueError // Problem and Fix: substrings
	}{
		{"wrong type", ValueOptions{SetString: []string{"controller.replicas=3"}},
			ValueError{Path: "controller.replicas", Problem: "it is a string, the chart needs an integer", Fix: "use --set rather than --set-string"}},
		{"string wanted", ValueOptions{Set: []string{`controller.podLabels.app\.kubernetes\.io/version=2`}},
			ValueError{Path: `controller.podLabels.app\.kubernetes\.io/version`, Problem: "it is a number, the chart needs a string", Fix: "use --set-string"}},
		{"map wanted", ValueOptions{Set: []string{"controller=big"}},
			ValueError{Path: "controller", Problem: "the chart needs an object", Fix: "--set controller.<key>=<value>"}},
		{"unknown key", ValueOptions{Set: []string{"controller.replica=3"}},
			ValueError{Path: "controller.replica", Problem: "the chart has no such value", Fix: "(controller has image, nodeSelector, podAnnotations, podAntiAffinity, podDisruptionBudget, podLabels, replicas, resources, tolerations, uid), or remove it (--set controller.replica=null)"}},
		{"unknown key in a values file", ValueOptions{ValuesFiles: []string{typo}},
			ValueError{Path: "webhook.failurPolicy", Problem: "no such value", Fix: "failurePolicy"}},
		{"unknown top-level keys", ValueOptions{Set: []string{"zzz=1,aaa=2"}},
			ValueError{Path: "aaa", Problem: "no such value", Fix: "the chart has controlPlaneVersion, controller,", Others: []string{"zzz"}}},
		{"bad enum", ValueOptions{Set: []string{"webhook.failurePolicy=Sometimes"}},
			ValueError{Path: "webhook.failurePolicy", Problem: `"Sometimes" is not one of "Ignore", "Fail"`, Fix: "use one of those"}},
		{"bad enum from --ha's overrides on", ValueOptions{HA: true, Set: []string{"controller.image.pullPolicy=always"}},
			ValueError{Path: "controller.image.pullPolicy", Problem: `"always" is not one of "Always", "IfNotPresent", "Never"`}},
		{"bad duration", ValueOptions{Set: []string{"identity.issuer.issuanceLifetime=1d"}},
			ValueError{Path: "identity.issuer.issuanceLifetime", Problem: `"1d" is not a Go duration such as 24h0m0s`, Fix: "correct it"}},
		{"a lifetime the controller refuses", ValueOptions{Set: []string{"identity.issuer.issuanceLifetime=30s"}},
			ValueError{Path: "identity.issuer.issuanceLifetime", Problem: "30s is shorter than the 1m0s the controller needs", Fix: "give at least 1m0s"}},
		{"bad quantity", ValueOptions{Set: []string{"controller.resources.limits.memory=lots"}},
			ValueError{Path: "controller.resources.limits.memory", Problem: `"lots" is not a Kubernetes quantity`}},
		{"out of range", ValueOptions{Set: []string{"webhook.timeoutSeconds=60"}},
			ValueError{Path: "webhook.timeoutSeconds", Problem: "60 is more than 30"}},
		{"list item", ValueOptions{Set: []string{"webhook.otherMeshContainers={ok,Not_OK}"}},
			ValueError{Path: "webhook.otherMeshContainers[1]", Problem: `"Not_OK" is not a container name`}},
		{"image with a tag", ValueOptions{ProxyImage: "ghcr.io/me/proxy:v1"},
			ValueError{Path: "proxy.image.name", Problem: "is not an image repository without tag"}},
		{"a certificate of the wrong type is not replaced by a generated one", ValueOptions{Set: []string{"webhook.crtPEM=1"}},
			ValueError{Path: "webhook.crtPEM", Problem: "it is a number, the chart needs a string"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, _, err := RenderInstall(InstallOptions{Values: tc.vo, Version: "v1.2.3", Now: testNow})
			var ve *ValueError
			if !errors.As(err, &ve) {
				t.Fatalf("err = %v (%d objects), want a *ValueError", err, len(objs))
			}
			if ve.Path != tc.want.Path || !strings.Contains(ve.Problem, tc.want.Problem) || !strings.Contains(ve.Fix, tc.want.Fix) ||
				!cmp.Equal(ve.Others, tc.want.Others) {
				t.Errorf("got  %#v\nwant %#v (Problem and Fix as substrings)", *ve, tc.want)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || !strings.HasPrefix(msg, "invalid chart value "+tc.want.Path+": ") {
				t.Errorf("message is not one line starting with the path:\n%s", msg)
			}
		})
	}
}

// TestRenderUpgradeRejectsBadValues: a bad --set fails before the cluster
// is read (here there is no install at all), and a recorded value that the
// new chart no longer has is named with the way to drop it, which works.
func TestRenderUpgradeRejectsBadValues(t *testing.T) {
	ctx := context.Background()
	empty := &Client{Kube: fake.NewClientset()}
	_, _, err := empty.RenderUpgrade(ctx, "conduit", UpgradeOptions{Version: "v1.3.0", Now: testNow, Values: ValueOptions{Set: []string{"webhook.failurePolicy=fail"}}})
	var ve *ValueError
	if !errors.As(err, &ve) || ve.Path != "webhook.failurePolicy" {
		t.Fatalf("err = %v, want the bad value before 'not installed'", err)
	}

	installed, _ := renderForTest(t, ValueOptions{})
	cm := byKey(installed)["ConfigMap conduit/"+ConfigMapName]["data"].(map[string]any)
	cm[UserValuesKey] = cm[UserValuesKey].(string) + "retired: true\n" // a value of an older chart
	c := fakeInstalled(t, installed)
	_, _, err = c.RenderUpgrade(ctx, "conduit", UpgradeOptions{Version: "v1.3.0", Now: testNow})
	if !errors.As(err, &ve) || ve.Path != "retired" || !strings.Contains(ve.Fix, "--set retired=null") {
		t.Fatalf("err = %v, want the recorded value named with its remedy", err)
	}
	if _, _, err := c.RenderUpgrade(ctx, "conduit", UpgradeOptions{Version: "v1.3.0", Now: testNow, Values: ValueOptions{Set: []string{"retired=null"}}}); err != nil {
		t.Errorf("--set retired=null did not drop it: %v", err)
	}
}

// TestSchemaMatchesValuesYAML: every value of values.yaml is in
// values.schema.json (every render checks that, with the defaults) and
// every object the schema closes (additionalProperties false) names exactly
// the keys values.yaml gives it, so neither file has a value the other
// lacks.
func TestSchemaMatchesValuesYAML(t *testing.T) {
	ch, err := LoadChart("v1.2.3")
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(ch.Schema, &schema); err != nil {
		t.Fatal(err)
	}
	var walk func(path string, node map[string]any, vals map[string]any)
	walk = func(path string, node map[string]any, vals map[string]any) {
		if ref, ok := node["$ref"].(string); ok {
			node = schemaNode(schema, ref)
		}
		props, closed := node["properties"].(map[string]any)
		if !closed || node["additionalProperties"] != false {
			return
		}
		if diff := cmp.Diff(sortedKeys(props), sortedKeys(vals)); diff != "" {
			t.Errorf("%s: keys differ (-values.schema.json +values.yaml):\n%s", path, diff)
		}
		for k, sub := range props {
			if m, ok := vals[k].(map[string]any); ok {
				walk(joinPath(path, k), sub.(map[string]any), m)
			}
		}
	}
	walk("(root)", schema, ch.Values)

}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
