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

// TestLoadChartStampsVersion: the chart is the chart of the CLI's version,
// as the release packages it (hack/mkchart): appVersion is the version, the
// chart version is it without "v" when SemVer, and a Helm install that sets
// no controlPlaneVersion gets that version's images.
func TestLoadChartStampsVersion(t *testing.T) {
	for _, tc := range []struct{ version, wantChart, wantApp string }{
		{"v1.2.3", "1.2.3", "v1.2.3"},
		{"v0.3.1-next", "0.3.1-next", "v0.3.1-next"},
		{"v0.3.0-2-g12b7b85-dirty", "0.3.0-2-g12b7b85-dirty", "v0.3.0-2-g12b7b85-dirty"},
		{"dev", "0.1.0", "dev"},         // Chart.yaml's version
		{"12b7b85", "0.1.0", "12b7b85"}, // git describe without a tag
		{"v01.2.3", "0.1.0", "v01.2.3"}, // not SemVer
		{"", "0.1.0", "dev"},            // Chart.yaml as it is
	} {
		ch, err := LoadChart(tc.version)
		if err != nil {
			t.Fatal(err)
		}
		if ch.Metadata.Version != tc.wantChart || ch.Metadata.AppVersion != tc.wantApp {
			t.Errorf("LoadChart(%q): version %q appVersion %q, want %q and %q", tc.version, ch.Metadata.Version, ch.Metadata.AppVersion, tc.wantChart, tc.wantApp)
		}
		if err := ch.Validate(); err != nil {
			t.Errorf("LoadChart(%q): %v", tc.version, err)
		}
	}

	_, vals := renderForTest(t, ValueOptions{})
	delete(vals, "controlPlaneVersion") // as a Helm user leaves it
	ch, err := LoadChart("v9.9.9")
	if err != nil {
		t.Fatal(err)
	}
	objs, err := Render(ch, vals)
	if err != nil {
		t.Fatal(err)
	}
	m := byKey(objs)
	if v := m["ConfigMap conduit/"+ConfigMapName]["data"].(map[string]any)["version"]; v != "v9.9.9" {
		t.Errorf("conduit-config version = %v, want the chart's appVersion v9.9.9", v)
	}
	c := m["Deployment conduit/conduit-controller"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	if img := c["image"]; img != "ghcr.io/conduitmesh/conduit-controller:v9.9.9" {
		t.Errorf("controller image = %v", img)
	}
}
