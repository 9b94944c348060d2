package install

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
)

var testNow = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func renderForTest(t *testing.T, vo ValueOptions) ([]*unstructured.Unstructured, map[string]any) {
	t.Helper()
	objs, vals, err := RenderInstall(InstallOptions{Values: vo, Version: "v1.2.3", Now: testNow})
	if err != nil {
		t.Fatalf("RenderInstall: %v", err)
	}
	return objs, vals
}

func byKey(objs []*unstructured.Unstructured) map[string]map[string]any {
	m := map[string]map[string]any{}
	for _, o := range objs {
		m[KeyOf(o).String()] = o.Object
	}
	return m
}

// TestRenderMatchesHelmTemplate renders the chart directory with Helm's own
// `helm template` path (action.Install, DryRun + ClientOnly) and compares
// the objects with what the CLI renders from the embedded copy.
func TestRenderMatchesHelmTemplate(t *testing.T) {
	for _, tc := range []struct {
		name string
		vo   ValueOptions
	}{
		{"default", ValueOptions{}},
		{"ha", ValueOptions{HA: true}},
		{"set", ValueOptions{Namespace: "mesh", Set: []string{"webhook.timeoutSeconds=5,controller.podLabels.team=net"}, Replicas: 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			objs, vals := renderForTest(t, tc.vo)
			ch, err := loader.Load("../../manifests")
			if err != nil {
				t.Fatal(err)
			}
			inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
			inst.DryRun, inst.ClientOnly, inst.Replace = true, true, true
			inst.ReleaseName = ReleaseName
			inst.Namespace = Namespace(objs)
			rel, err := inst.Run(ch, vals)
			if err != nil {
				t.Fatalf("helm template: %v", err)
			}
			helmObjs, err := DecodeObjects(strings.NewReader(rel.Manifest))
			if err != nil {
				t.Fatal(err)
			}
			// Only the CLI can tell the user's values from the chart's
			// defaults: Helm keeps them in its release instead.
			ours := byKey(objs)
			delete(ours["ConfigMap "+Namespace(objs)+"/"+ConfigMapName]["data"].(map[string]any), UserValuesKey)
			if diff := cmp.Diff(byKey(helmObjs), ours); diff != "" {
				t.Errorf("conduit install -o yaml differs from helm template (-helm +conduit):\n%s", diff)
			}
		})
	}
}
