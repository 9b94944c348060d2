package install

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestValueOptionsMerge(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "values.yaml")
	if err := os.WriteFile(file, []byte("controller:\n  replicas: 5\n  uid: 1000\nwebhook:\n  timeoutSeconds: 3\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name    string
		base    map[string]any
		opts    ValueOptions
		want    map[string]any
		wantErr string
	}{
		{
			name: "empty",
			opts: ValueOptions{},
			want: map[string]any{},
		},
		{
			name: "set wins over file, flag wins over set",
			opts: ValueOptions{ValuesFiles: []string{file}, Set: []string{"controller.replicas=2,identityTrustDomain=example.org"}, Replicas: 4},
			want: map[string]any{
				"controller":          map[string]any{"replicas": 4, "uid": float64(1000)},
				"webhook":             map[string]any{"timeoutSeconds": float64(3)},
				"identityTrustDomain": "example.org",
			},
		},
		{
			name: "set-string keeps strings",
			opts: ValueOptions{SetString: []string{"controller.podLabels.build=0123"}},
			want: map[string]any{"controller": map[string]any{"podLabels": map[string]any{"build": "0123"}}},
		},
		{
			name: "stored values are kept and overridden",
			base: map[string]any{"namespace": "mesh", "webhook": map[string]any{"failurePolicy": "Fail", "timeoutSeconds": 10}},
			opts: ValueOptions{Namespace: "mesh", Set: []string{"webhook.timeoutSeconds=7"}},
			want: map[string]any{"namespace": "mesh", "webhook": map[string]any{"failurePolicy": "Fail", "timeoutSeconds": int64(7)}},
		},
		{
			name: "images",
			opts: ValueOptions{ProxyImage: "reg/p", ControllerImage: "reg/c", ImageVersion: "v9"},
			want: map[string]any{
				"proxy":      map[string]any{"image": map[string]any{"name": "reg/p", "version": "v9"}},
				"controller": map[string]any{"image": map[string]any{"name": "reg/c", "version": "v9"}},
			},
		},
		{
			name: "empty lists stay lists (else a re-render flips [] and null)",
			base: map[string]any{"controller": map[string]any{"tolerations": []any{}}},
			want: map[string]any{"controller": map[string]any{"tolerations": []any{}}},
		},
		{
			name:    "namespace conflict",
			opts:    ValueOptions{Namespace: "a", Set: []string{"namespace=b"}},
			wantErr: `namespace "a" from -L contradicts namespace="b"`,
		},
		{
			name:    "bad set",
			opts:    ValueOptions{Set: []string{"a.b"}},
			wantErr: `--set "a.b"`,
		},
		{
			name:    "missing file",
			opts:    ValueOptions{ValuesFiles: []string{filepath.Join(dir, "nope.yaml")}},
			wantErr: "nope.yaml",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := tc.base
			if base == nil {
				base = map[string]any{}
			}
			before := deepCopyMap(base)
			got, err := tc.opts.Merge(base)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("values (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, base); diff != "" {
				t.Errorf("Merge modified its base (-before +after):\n%s", diff)
			}
		})
	}
}

func TestHAValuesRender(t *testing.T) {
	objs, _ := renderForTest(t, ValueOptions{HA: true})
	m := byKey(objs)
	d := m["Deployment conduit/conduit-controller"]
	if d == nil {
		t.Fatal("no controller Deployment")
	}
	spec := d["spec"].(map[string]any)
	if spec["replicas"] != float64(3) {
		t.Errorf("replicas = %v, want 3", spec["replicas"])
	}
	pod := spec["template"].(map[string]any)["spec"].(map[string]any)
	if _, ok := pod["affinity"]; !ok {
		t.Error("HA controller has no anti-affinity")
	}
	if m["PodDisruptionBudget conduit/conduit-controller"] == nil {
		t.Error("HA install has no PodDisruptionBudget")
	}
	objs, _ = renderForTest(t, ValueOptions{})
	if byKey(objs)["PodDisruptionBudget conduit/conduit-controller"] != nil {
		t.Error("default install has a PodDisruptionBudget")
	}
}

// TestRenderContract checks the names, labels and security settings that
// other parts (check, the controller, uninstall) rely on.
func TestRenderContract(t *testing.T) {
	objs, _ := renderForTest(t, ValueOptions{Namespace: "mesh", Set: []string{"identity.issuer.issuanceLifetime=36h"}})
	wantKeys := []string{
		"Namespace mesh",
		"CustomResourceDefinition authorizationpolicies.policy.conduit.io",
		"CustomResourceDefinition meshtlsauthentications.policy.conduit.io",
		"CustomResourceDefinition networkauthentications.policy.conduit.io",
		"CustomResourceDefinition servers.policy.conduit.io",
		"ServiceAccount mesh/conduit-controller",
		"ClusterRole conduit-mesh-controller",
		"ClusterRole conduit-mesh-tap",
		"ClusterRoleBinding conduit-mesh-controller",
		"Role mesh/conduit-controller",
		"RoleBinding mesh/conduit-controller",
		"Secret mesh/conduit-identity-issuer",
		"Secret mesh/conduit-proxy-injector-tls",
		"ConfigMap mesh/conduit-config",
		"ConfigMap mesh/conduit-identity-trust-roots",
		"Service mesh/conduit-controller",
		"Deployment mesh/conduit-controller",
		"MutatingWebhookConfiguration conduit-proxy-injector",
	}
	var got []string
	for _, o := range objs {
		got = append(got, KeyOf(o).String())
		l := o.GetLabels()
		if l[LabelPartOf] != "conduit" || l[LabelControlPlaneNS] != "mesh" || l[LabelVersion] != "v1.2.3" {
			t.Errorf("%s lacks the inventory labels: %v", KeyOf(o), l)
		}
	}
	if diff := cmp.Diff(wantKeys, got); diff != "" {
		t.Errorf("objects in apply order (-want +got):\n%s", diff)
	}
	m := byKey(objs)
	cfg := m["ConfigMap mesh/conduit-config"]["data"].(map[string]any)
	if cfg["version"] != "v1.2.3" {
		t.Errorf("conduit-config version = %v", cfg["version"])
	}
	if v := cfg["values"].(string); strings.Contains(v, "PRIVATE KEY") || !strings.Contains(v, "BEGIN CERTIFICATE") {
		t.Errorf("conduit-config values must hold the certificates and no private key:\n%s", v)
	}
	ctr := m["Deployment mesh/conduit-controller"]["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	sc := ctr["securityContext"].(map[string]any)
	if sc["readOnlyRootFilesystem"] != true || sc["allowPrivilegeEscalation"] != false {
		t.Errorf("container securityContext = %v", sc)
	}
	if ctr["image"] != "ghcr.io/conduitmesh/conduit-controller:v1.2.3" {
		t.Errorf("image = %v", ctr["image"])
	}
	args := ctr["args"].([]any)
	for _, want := range []string{"--controller-namespace=mesh", "--trust-domain=cluster.local", "--proxy-version=v1.2.3",
		"--default-inbound-policy=all-unauthenticated", "--cluster-networks=10.0.0.0/8,100.64.0.0/10,172.16.0.0/12,192.168.0.0/16,fd00::/8",
		"--identity-lifetime=36h"} {
		found := false
		for _, a := range args {
			found = found || a == want
		}
		if !found {
			t.Errorf("controller args %v lack %s", args, want)
		}
	}
	wh := m["MutatingWebhookConfiguration conduit-proxy-injector"]["webhooks"].([]any)[0].(map[string]any)
	excluded := wh["namespaceSelector"].(map[string]any)["matchExpressions"].([]any)[0].(map[string]any)["values"].([]any)
	if diff := cmp.Diff([]any{"kube-system", "mesh"}, excluded); diff != "" {
		t.Errorf("webhook must skip kube-system and the control plane (-want +got):\n%s", diff)
	}
}
