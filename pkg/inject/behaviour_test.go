package inject

import (
	"errors"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/conduitmesh/conduit/pkg/contract"
)

const podTmpl = `apiVersion: v1
kind: Pod
metadata:
  name: p
  namespace: NS
  annotations: ANN
spec:
  hostNetwork: HOSTNET
  containers:
  - name: app
    image: nginx
`

func pod(ns, ann string, hostNet bool) []byte {
	r := strings.NewReplacer("NS", ns, "ANN", ann, "HOSTNET", map[bool]string{true: "true", false: "false"}[hostNet])
	return []byte(r.Replace(podTmpl))
}

func TestSkipReasons(t *testing.T) {
	meshed, _, err := Inject(pod("apps", "{}", false), testOptions(true))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		in     []byte
		manual bool
		reason string // "" = injected
	}{
		{"plain pod", pod("apps", "{}", false), true, ""},
		{"hostNetwork", pod("apps", "{}", true), true, "hostNetwork"},
		{"hostNetwork annotate", pod("apps", "{}", true), false, "hostNetwork"},
		{"disabled", pod("apps", "{conduit.io/inject: disabled}", false), true, "conduit.io/inject: disabled"},
		{"disabled annotate", pod("apps", "{conduit.io/inject: disabled}", false), false, "conduit.io/inject: disabled"},
		{"control plane", pod("conduit", "{}", false), true, "control plane namespace conduit"},
		{"already meshed", meshed, true, "already meshed"},
		{"already meshed annotate", meshed, false, "already meshed"},
		{"already annotated", pod("apps", "{conduit.io/inject: enabled}", false), false, "already annotated"},
		{"unknown kind", []byte("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n"), true, "no pod template"},
		{"custom resource named Deployment", []byte("apiVersion: example.com/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {template: {spec: {containers: []}}}\n"), true, "no pod template"},
		{"no kind", []byte("metadata: {name: x}\n"), true, "no kind"},
		{"job without template", []byte("apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec: {}\n"), true, "no pod template"},
		{"bad override", pod("apps", "{config.conduit.io/proxy-cpu-limit: lots}", false), true, "proxy-cpu-limit"},
		{"manual on namespace", []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n"), true, "only without --manual"},
		{"annotate namespace", []byte("apiVersion: v1\nkind: Namespace\nmetadata: {name: n}\n"), false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, res, err := Inject(tt.in, testOptions(tt.manual))
			if err != nil {
				t.Fatal(err)
			}
			if len(res) != 1 {
				t.Fatalf("got %d results, want 1", len(res))
			}
			r := res[0]
			if tt.reason == "" {
				if !r.Changed || r.Reason != "" {
					t.Fatalf("not injected: %+v", r)
				}
				return
			}
			if r.Changed || !strings.Contains(r.Reason, tt.reason) {
				t.Fatalf("result %+v, want skipped with %q", r, tt.reason)
			}
			if string(out) != string(tt.in) {
				t.Errorf("skipped object changed:\n%s", out)
			}
		})
	}
}

func TestOverrides(t *testing.T) {
	in := pod("apps", "{config.conduit.io/proxy-cpu-request: 50m, config.conduit.io/proxy-log-level: debug}", false)
	opts := testOptions(true)
	opts.Overrides = map[string]string{
		OverrideProxyCPURequest:      "200m", // the flag wins over the annotation
		OverrideProxyMemoryLimit:     "1Gi",
		OverrideSkipInboundPorts:     "8080, 9000-9010",
		OverrideProxyImage:           "registry.local/proxy",
		OverrideProxyVersion:         "v9",
		OverrideProxyUID:             "3000",
		OverrideNativeSidecar:        "false",
		OverrideOpaquePorts:          "3306",
		OverrideProxyAdminPort:       "4999",
		OverrideProxyImagePullPolicy: "Never",
		OverrideDefaultInboundPolicy: "all-authenticated",
	}
	out, res, err := Inject(in, opts)
	if err != nil || !res[0].Changed {
		t.Fatalf("inject: %v %+v", err, res)
	}
	s := string(out)
	for _, want := range []string{
		"config.conduit.io/proxy-cpu-request: 200m",
		"config.conduit.io/proxy-log-level: debug",
		"config.conduit.io/skip-inbound-ports: 8080,9000-9010",
		"cpu: 200m",
		"memory: 1Gi",
		"--skip-inbound-ports=4999,8080,9000-9010",
		"--proxy-uid=3000",
		"runAsUser: 3000",
		"image: registry.local/proxy:v9",
		"imagePullPolicy: Never",
		"value: debug",
		"value: \"3306\"",
		"port: 4999",
		"conduit.io/proxy-version: v9",
		"config.conduit.io/default-inbound-policy: all-authenticated",
		"- name: CONDUIT_PROXY_DEFAULT_INBOUND_POLICY\n      value: all-authenticated",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q:\n%s", want, s)
		}
	}
	// Classic sidecar: the proxy is the last container, no restartPolicy.
	if strings.Contains(s, "restartPolicy: Always") {
		t.Errorf("native sidecar used with native-sidecar=false:\n%s", s)
	}
	if i, j := strings.Index(s, "- name: app"), strings.Index(s, "- name: conduit-proxy"); i < 0 || j < i {
		t.Errorf("proxy is not after the app container:\n%s", s)
	}
	back, _, err := Uninject(out, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(objects(t, back), objects(t, in)) {
		t.Errorf("uninject did not restore the overridden annotation:\n%s", lineDiff(string(in), string(back)))
	}

	opts.Overrides = map[string]string{OverrideProxyCPURequest: "lots"}
	if _, _, err := Inject(in, opts); err == nil || !strings.Contains(err.Error(), "proxy-cpu-request") {
		t.Errorf("invalid override accepted: %v", err)
	}
	opts.Overrides = map[string]string{OverrideDefaultInboundPolicy: "allow-all"}
	if _, _, err := Inject(in, opts); err == nil || !strings.Contains(err.Error(), `"allow-all" is not a default inbound policy`) {
		t.Errorf("invalid default inbound policy accepted: %v", err)
	}
}

func TestNativeSidecarLayout(t *testing.T) {
	out, _, err := Inject(pod("apps", "{}", false), testOptions(true))
	if err != nil {
		t.Fatal(err)
	}
	s := string(out)
	init, proxy, app := strings.Index(s, "- name: conduit-init"), strings.Index(s, "- name: conduit-proxy"), strings.Index(s, "- name: app")
	if !(app < init && init < proxy) || !strings.Contains(s, "restartPolicy: Always") || !strings.Contains(s, "startupProbe:") {
		t.Errorf("want initContainers [conduit-init, conduit-proxy (restartPolicy: Always)] after containers:\n%s", s)
	}
	for _, want := range []string{
		"audience: identity.conduit.io", "expirationSeconds: 86400", "- name: CONDUIT_PROXY_TRUST_ANCHORS\n",
		"-----BEGIN CERTIFICATE-----",
		"runAsNonRoot: true", "readOnlyRootFilesystem: true", "- ALL", "- NET_ADMIN", "- NET_RAW",
		"path: /ready", "path: /live", "value: conduit-controller.conduit.svc.cluster.local:8086",
		"value: spiffe://cluster.local/ns/$(CONDUIT_POD_NS)/sa/$(CONDUIT_POD_SA)",
		"fieldPath: spec.serviceAccountName",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("output lacks %q", want)
		}
	}
}

// TestTrustAnchors: the proxy gets the PEM in its environment, never a
// ConfigMap volume (a pod can only mount ConfigMaps of its own namespace);
// without usable anchors --manual fails up front, annotating does not care.
func TestTrustAnchors(t *testing.T) {
	in := pod("apps", "{}", false)
	out, _, err := Inject(in, testOptions(true))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), "configMap") || strings.Contains(string(out), "trust-roots") {
		t.Errorf("the sidecar refers to a trust-roots ConfigMap:\n%s", out)
	}
	var obj struct {
		Spec struct {
			InitContainers []struct {
				Name string `yaml:"name"`
				Env  []struct {
					Name  string `yaml:"name"`
					Value string `yaml:"value"`
				} `yaml:"env"`
			} `yaml:"initContainers"`
		}
	}
	if err := yaml.Unmarshal(out, &obj); err != nil {
		t.Fatal(err)
	}
	want := testProxyConfig("v1").TrustAnchorsPEM
	found := false
	for _, c := range obj.Spec.InitContainers {
		for _, e := range c.Env {
			if c.Name == ProxyContainerName && e.Name == contract.Env(contract.FlagTrustAnchors) {
				found = e.Value == want
			}
		}
	}
	if !found {
		t.Errorf("the proxy's %s is not the configured PEM:\n%s", contract.Env(contract.FlagTrustAnchors), out)
	}

	tests := []struct {
		name, anchors, want string
	}{
		{"none", "", "no identity trust anchors configured"},
		{"not PEM", "garbage", "identity trust anchors: no PEM certificate"},
		{"bad certificate", "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n", "identity trust anchors: certificate 1:"},
	}
	for _, tt := range tests {
		opts := testOptions(true)
		opts.Proxy.TrustAnchorsPEM = tt.anchors
		if out, _, err := Inject(in, opts); err == nil || !strings.Contains(err.Error(), tt.want) || out != nil {
			t.Errorf("%s: Inject = %q, %v; want no output and %q", tt.name, out, err, tt.want)
		}
		const enabled = `{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"conduit.io/inject":"enabled"}},"spec":{"containers":[{"name":"web","image":"nginx"}]}}`
		if _, _, err := InjectPod([]byte(enabled), Namespace{Name: "apps"}, opts.Proxy, nil); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("%s: InjectPod err = %v, want %q", tt.name, err, tt.want)
		}
		opts.Manual = false
		if _, _, err := Inject(in, opts); err != nil {
			t.Errorf("%s: annotating needs no trust anchors: %v", tt.name, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	good := "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\nspec: {containers: [{name: a, image: b}]}\n"
	tests := []struct {
		name    string
		in      string
		doc     int
		line    int
		message string
	}{
		{"yaml third document", good + "---\n" + good + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: [unclosed\n", 3, 13, "did not find expected"},
		{"yaml tab indentation", good + "---\nkind: Pod\n\tmetadata: x\n", 2, 7, "tab"},
		{"not a mapping", good + "---\n- a\n- b\n", 2, 6, "not a Kubernetes object"},
		{"scalar document", "just text\n", 1, 1, "not a Kubernetes object"},
		{"json second object", `{"kind":"Pod"}` + "\n" + `{"kind": "Pod",` + "\n" + `"metadata": {,}}`, 2, 3, "invalid character"},
		{"json truncated", `{"kind":"Pod"}` + "\n" + `{"kind": "Pod"`, 2, 2, "unexpected end"},
		{"json array", `[1, 2]`, 1, 1, "not a Kubernetes object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, f := range []func([]byte) ([]byte, []Result, error){
				func(b []byte) ([]byte, []Result, error) { return Inject(b, testOptions(true)) },
				func(b []byte) ([]byte, []Result, error) { return Uninject(b, Options{}) },
			} {
				out, _, err := f([]byte(tt.in))
				var pe *ParseError
				if !errors.As(err, &pe) {
					t.Fatalf("err = %v, want a *ParseError", err)
				}
				if out != nil {
					t.Errorf("output on error: %q", out)
				}
				if pe.Doc != tt.doc || pe.Line != tt.line || !strings.Contains(pe.Msg, tt.message) {
					t.Errorf("got %v (doc %d line %d), want doc %d line %d containing %q", pe, pe.Doc, pe.Line, tt.doc, tt.line, tt.message)
				}
			}
		})
	}
}

func TestPassThrough(t *testing.T) {
	in := "# only comments\n---\n---\napiVersion: v1\nkind: Secret   # odd   spacing kept\nmetadata: {name: s}\nstringData: {a: b}\n...\n"
	out, res, err := Inject([]byte(in), testOptions(true))
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != in {
		t.Errorf("untouched stream changed:\n%q\n%q", in, out)
	}
	if len(res) != 1 || res[0].Kind != "Secret" || res[0].Changed {
		t.Errorf("results %+v", res)
	}
}

func TestIndentStyleKept(t *testing.T) {
	in := "apiVersion: v1\nkind: Pod\nmetadata:\n    name: p\nspec:\n    containers:\n        -   name: a\n            image: b\n"
	out, _, err := Inject([]byte(in), testOptions(false))
	if err != nil {
		t.Fatal(err)
	}
	want := "apiVersion: v1\nkind: Pod\nmetadata:\n    name: p\n    annotations:\n        conduit.io/inject: enabled\nspec:\n    containers:\n        -   name: a\n            image: b\n"
	if string(out) != want {
		t.Errorf("got:\n%s\nwant:\n%s", out, want)
	}
}

func TestInjectPod(t *testing.T) {
	const plain = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-"},"spec":{"containers":[{"name":"web","image":"nginx"}]}}`
	const enabled = `{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"conduit.io/inject":"enabled"}},"spec":{"containers":[{"name":"web","image":"nginx"}]}}`
	const disabled = `{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"conduit.io/inject":"disabled"}},"spec":{"containers":[{"name":"web","image":"nginx"}]}}`
	const hostNet = `{"apiVersion":"v1","kind":"Pod","metadata":{},"spec":{"hostNetwork":true,"containers":[{"name":"web","image":"nginx"}]}}`
	on := map[string]string{AnnotationInject: ValueEnabled}
	off := map[string]string{AnnotationInject: ValueDisabled}
	tests := []struct {
		name   string
		pod    string
		ns     Namespace
		inject bool
	}{
		{"plain pod, plain namespace", plain, Namespace{Name: "a"}, false},
		{"namespace annotation", plain, Namespace{Name: "a", Annotations: on}, true},
		{"namespace label", plain, Namespace{Name: "a", Labels: on}, true},
		{"namespace annotation disabled beats label", plain, Namespace{Name: "a", Annotations: off, Labels: on}, false},
		{"pod enabled, plain namespace", enabled, Namespace{Name: "a"}, true},
		{"pod enabled, namespace disabled", enabled, Namespace{Name: "a", Annotations: off}, true},
		{"pod disabled wins", disabled, Namespace{Name: "a", Annotations: on}, false},
		{"hostNetwork", hostNet, Namespace{Name: "a", Annotations: on}, false},
		{"control plane namespace", enabled, Namespace{Name: "conduit", Annotations: on}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, reason, err := InjectPod([]byte(tt.pod), tt.ns, testProxyConfig("v1"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if got := out != nil; got != tt.inject {
				t.Fatalf("injected = %v (reason %q), want %v", got, reason, tt.inject)
			}
			if !tt.inject && reason == "" {
				t.Error("skipped without a reason")
			}
			if tt.inject && strings.Contains(string(out), AnnotationRestore) {
				t.Error("webhook-injected pods carry no restore record")
			}
		})
	}
	// Overrides: the namespace's apply, the pod's win.
	const cpuPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"annotations":{"config.conduit.io/proxy-cpu-limit":"2"}},"spec":{"containers":[{"name":"web","image":"nginx"}]}}`
	nsCfg := Namespace{Name: "a", Annotations: map[string]string{
		AnnotationInject: ValueEnabled, "config.conduit.io/proxy-cpu-limit": "1", "config.conduit.io/proxy-log-level": "debug",
	}}
	out, _, err := InjectPod([]byte(cpuPod), nsCfg, testProxyConfig("v1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if s := string(out); !strings.Contains(s, `"limits":{"cpu":"2"`) || !strings.Contains(s, `"value":"debug"`) {
		t.Errorf("namespace and pod overrides not applied:\n%s", s)
	}
	nsCfg.Annotations["config.conduit.io/proxy-uid"] = "root"
	if _, _, err := InjectPod([]byte(cpuPod), nsCfg, testProxyConfig("v1"), nil); err == nil || !strings.Contains(err.Error(), "namespace a") {
		t.Errorf("bad namespace override: %v", err)
	}
	if _, _, err := InjectPod([]byte(`[`), Namespace{}, testProxyConfig("v1"), nil); err == nil {
		t.Error("malformed pod accepted")
	}
}

func TestAliasesAreNotShared(t *testing.T) {
	in := `apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector:
    matchLabels: &labels
      app: web
  template:
    metadata:
      labels: *labels
    spec:
      containers:
      - name: web
        image: nginx
`
	out, _, err := Inject([]byte(in), testOptions(true))
	if err != nil {
		t.Fatal(err)
	}
	var obj struct {
		Spec struct {
			Selector struct {
				MatchLabels map[string]string `yaml:"matchLabels"`
			}
			Template struct {
				Metadata struct{ Labels map[string]string }
			}
		}
	}
	if err := yaml.Unmarshal(out, &obj); err != nil {
		t.Fatal(err)
	}
	if len(obj.Spec.Selector.MatchLabels) != 1 || obj.Spec.Template.Metadata.Labels[LabelProxyVersion] != "v1.2.3" {
		t.Errorf("the selector shares the template's new label:\n%s", out)
	}

	laughs := "a: &a [x, x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\nc: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\nd: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\ne: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\nf: [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
	if _, _, err := Inject([]byte(laughs), testOptions(true)); err == nil || !strings.Contains(err.Error(), "aliases expand") {
		t.Errorf("alias bomb: %v", err)
	}
}
