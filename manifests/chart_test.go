package manifests_test

import (
	"fmt"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/action"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"

	"github.com/conduitmesh/conduit/manifests"
	"github.com/conduitmesh/conduit/pkg/install"
)

// TestHelmLint is `helm lint --strict manifests` (with and without
// values-ha.yaml): no error and no warning. Helm's lint renders the
// templates and checks the values against values.schema.json.
func TestHelmLint(t *testing.T) {
	ha, err := chartutil.ReadValuesFile(manifests.HAValuesFile)
	if err != nil {
		t.Fatal(err)
	}
	for name, vals := range map[string]map[string]any{"defaults": {}, manifests.HAValuesFile: ha} {
		t.Run(name, func(t *testing.T) {
			for _, m := range lint.All(".", vals, "conduit", false).Messages {
				if m.Severity >= support.WarningSev {
					t.Errorf("helm lint: %s", m)
				}
			}
		})
	}
}

// TestHelmLintRejectsBadValues: Helm users get the schema's check too.
func TestHelmLintRejectsBadValues(t *testing.T) {
	bad := map[string]any{"webhook": map[string]any{"failurePolicy": "Sometimes"}}
	var msgs []string
	for _, m := range lint.All(".", bad, "conduit", false).Messages {
		if m.Severity == support.ErrorSev {
			msgs = append(msgs, m.Err.Error())
		}
	}
	if got := strings.Join(msgs, "\n"); !strings.Contains(got, "/webhook/failurePolicy") {
		t.Errorf("helm lint of a bad failurePolicy said:\n%s", got)
	}
}

// TestNotes renders NOTES.txt as `helm install` shows it: what to run next,
// with -L when the control plane is not in namespace conduit.
func TestNotes(t *testing.T) {
	for _, tc := range []struct{ ns, check string }{
		{"", "conduit check\n"},
		{"mesh", "conduit check -L mesh\n"},
	} {
		t.Run(fmt.Sprintf("namespace %q", tc.ns), func(t *testing.T) {
			_, vals, err := install.RenderInstall(install.InstallOptions{Values: install.ValueOptions{Namespace: tc.ns}, Version: "v1.2.3"})
			if err != nil {
				t.Fatal(err)
			}
			ch, err := loader.Load(".")
			if err != nil {
				t.Fatal(err)
			}
			inst := action.NewInstall(&action.Configuration{Log: func(string, ...any) {}})
			inst.DryRun, inst.ClientOnly, inst.Replace = true, true, true
			inst.ReleaseName, inst.Namespace = install.ReleaseName, "default"
			rel, err := inst.Run(ch, vals)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"Conduit v1.2.3 is installing", tc.check, "conduit.io/inject=enabled", "helm upgrade"} {
				if !strings.Contains(rel.Info.Notes, want) {
					t.Errorf("NOTES.txt lacks %q:\n%s", want, rel.Info.Notes)
				}
			}
		})
	}
}
