package install

import (
	"context"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
)

// fakeInstalled loads the ConfigMaps and Secrets of a rendered install into
// a fake clientset, as if it had been applied.
func fakeInstalled(t *testing.T, objs []*unstructured.Unstructured) *Client {
	t.Helper()
	var typed []runtime.Object
	for _, o := range objs {
		var into runtime.Object
		switch o.GetKind() {
		case "ConfigMap":
			into = &corev1.ConfigMap{}
		case "Secret":
			into = &corev1.Secret{}
		default:
			continue
		}
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, into); err != nil {
			t.Fatal(err)
		}
		typed = append(typed, into)
	}
	return &Client{Kube: fake.NewClientset(typed...)}
}

func TestRenderUpgradeKeepsValuesAndCertificates(t *testing.T) {
	installed, _ := renderForTest(t, ValueOptions{HA: true, Set: []string{"webhook.timeoutSeconds=4"}})
	c := fakeInstalled(t, installed)
	ctx := context.Background()

	// Same version, no flags: exactly the installed objects.
	again, from, err := c.RenderUpgrade(ctx, "conduit", UpgradeOptions{Version: "v1.2.3", Now: testNow})
	if err != nil {
		t.Fatal(err)
	}
	if from != "v1.2.3" {
		t.Errorf("from = %q", from)
	}
	if diff := cmp.Diff(byKey(installed), byKey(again)); diff != "" {
		t.Errorf("re-rendering the installed values changed objects (-installed +rerendered):\n%s", diff)
	}

	// A new version changes the version and keeps everything else.
	newer, _, err := c.RenderUpgrade(ctx, "conduit", UpgradeOptions{Version: "v1.3.0", Now: testNow, Values: ValueOptions{Set: []string{"webhook.timeoutSeconds=6"}}})
	if err != nil {
		t.Fatal(err)
	}
	m := byKey(newer)
	if m["PodDisruptionBudget conduit/conduit-controller"] == nil {
		t.Error("upgrade dropped the HA values")
	}
	wh := m["MutatingWebhookConfiguration conduit-proxy-injector"]["webhooks"].([]any)[0].(map[string]any)
	if wh["timeoutSeconds"] != float64(6) {
		t.Errorf("timeoutSeconds = %v, want the new --set 6", wh["timeoutSeconds"])
	}
	if got, want := m["Secret conduit/conduit-identity-issuer"]["data"], byKey(installed)["Secret conduit/conduit-identity-issuer"]["data"]; !cmp.Equal(got, want) {
		t.Error("upgrade changed the issuer")
	}
	if v := m["ConfigMap conduit/conduit-config"]["data"].(map[string]any)["version"]; v != "v1.3.0" {
		t.Errorf("version = %v", v)
	}
}

// An install made by an older version recorded that version's chart
// defaults in "values"; upgrade must re-render from the user's own values so
// the new chart's defaults apply, like `helm upgrade` without --reuse-values.
func TestRenderUpgradeAppliesNewChartDefaults(t *testing.T) {
	installed, _ := renderForTest(t, ValueOptions{Set: []string{"webhook.timeoutSeconds=4"}})
	cm := byKey(installed)["ConfigMap conduit/"+ConfigMapName]["data"].(map[string]any)
	user := cm[UserValuesKey].(string)
	if strings.Contains(user, "failurePolicy") || !strings.Contains(user, "timeoutSeconds: 4") || strings.Contains(user, "PRIVATE KEY") {
		t.Fatalf("recorded user values hold chart defaults, miss the user's --set or hold a private key:\n%s", user)
	}
	// The older chart's default failurePolicy was Fail.
	cm["values"] = strings.Replace(cm["values"].(string), "failurePolicy: Ignore", "failurePolicy: Fail", 1)
	ctx := context.Background()
	for _, tc := range []struct {
		name, wantPolicy string
		legacy           bool
	}{
		{"user values recorded", "Ignore", false},
		{"installed before user values were recorded", "Fail", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.legacy {
				delete(cm, UserValuesKey)
			}
			objs, _, err := fakeInstalled(t, installed).RenderUpgrade(ctx, "conduit", UpgradeOptions{Version: "v1.3.0", Now: testNow})
			if err != nil {
				t.Fatal(err)
			}
			wh := byKey(objs)["MutatingWebhookConfiguration conduit-proxy-injector"]["webhooks"].([]any)[0].(map[string]any)
			if wh["failurePolicy"] != tc.wantPolicy || wh["timeoutSeconds"] != float64(4) {
				t.Errorf("failurePolicy %v, timeoutSeconds %v; want %s and the user's 4", wh["failurePolicy"], wh["timeoutSeconds"], tc.wantPolicy)
			}
		})
	}
}

func TestRenderUpgradeRenewsExpiringWebhookCert(t *testing.T) {
	installed, _ := renderForTest(t, ValueOptions{})
	c := fakeInstalled(t, installed)
	later := testNow.Add(WebhookLifetime - RenewBefore + 24*60*60*1e9)
	objs, _, err := c.RenderUpgrade(context.Background(), "conduit", UpgradeOptions{Version: "v1.2.3", Now: later})
	if err != nil {
		t.Fatal(err)
	}
	before := byKey(installed)["Secret conduit/conduit-proxy-injector-tls"]["data"].(map[string]any)["tls.crt"]
	after := byKey(objs)["Secret conduit/conduit-proxy-injector-tls"]["data"].(map[string]any)["tls.crt"]
	if before == after {
		t.Error("a webhook certificate with less than RenewBefore left was not renewed")
	}
}

func TestRenderUpgradeNotInstalled(t *testing.T) {
	c := &Client{Kube: fake.NewClientset()}
	_, _, err := c.RenderUpgrade(context.Background(), "mesh", UpgradeOptions{Version: "v1", Now: testNow})
	if err == nil || !strings.Contains(err.Error(), "no Conduit control plane in namespace mesh") {
		t.Errorf("err = %v", err)
	}
}

func TestRenderUpgradeReplacesAnExpiredIssuer(t *testing.T) {
	installed, _ := renderForTest(t, ValueOptions{})
	c := fakeInstalled(t, installed)
	expired := testNow.Add(IssuerLifetime + 24*time.Hour)
	if _, _, err := c.RenderUpgrade(context.Background(), "conduit", UpgradeOptions{Version: "v1.2.3", Now: expired}); err == nil ||
		!strings.Contains(err.Error(), "--identity-issuer-certificate-file") {
		t.Fatalf("upgrade over an expired issuer: err = %v, want a pointer to the identity flags", err)
	}

	fresh, err := GenerateIdentity(expired, "cluster.local")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	files := IdentityFiles{
		TrustAnchors: filepath.Join(dir, "ca.crt"),
		IssuerCert:   filepath.Join(dir, "issuer.crt"),
		IssuerKey:    filepath.Join(dir, "issuer.key"),
	}
	for path, pem := range map[string]string{files.TrustAnchors: fresh.TrustAnchorsPEM, files.IssuerCert: fresh.IssuerCertPEM, files.IssuerKey: fresh.IssuerKeyPEM} {
		if err := os.WriteFile(path, []byte(pem), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	objs, _, err := c.RenderUpgrade(context.Background(), "conduit", UpgradeOptions{Version: "v1.2.3", Now: expired, Identity: files})
	if err != nil {
		t.Fatal(err)
	}
	issuer := byKey(objs)["Secret conduit/conduit-identity-issuer"]["data"].(map[string]any)["tls.crt"]
	if issuer != base64.StdEncoding.EncodeToString([]byte(strings.TrimSpace(fresh.IssuerCertPEM))) {
		t.Errorf("the issuer secret does not carry the given issuer certificate")
	}
	// New trust anchors roll the controller, whose injector reads them at start.
	checksum := func(objs []*unstructured.Unstructured) any {
		tmpl := byKey(objs)["Deployment conduit/conduit-controller"]["spec"].(map[string]any)["template"].(map[string]any)
		return tmpl["metadata"].(map[string]any)["annotations"].(map[string]any)["conduit.io/trust-anchors-checksum"]
	}
	if before, after := checksum(installed), checksum(objs); before == nil || before == after {
		t.Errorf("trust-anchors checksum %v before, %v after new anchors: want a change", before, after)
	}

	files.IssuerKey = ""
	if _, _, err := c.RenderUpgrade(context.Background(), "conduit", UpgradeOptions{Version: "v1.2.3", Now: expired, Identity: files}); err == nil ||
		!strings.Contains(err.Error(), "must be given together") {
		t.Errorf("two of three identity files: err = %v", err)
	}
}
