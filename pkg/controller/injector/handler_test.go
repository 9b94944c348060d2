package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	jsonpatch "gopkg.in/evanphx/json-patch.v4"
	corev1 "k8s.io/api/core/v1"

	"github.com/conduitmesh/conduit/pkg/contract"
	"github.com/conduitmesh/conduit/pkg/inject"
)

var update = flag.Bool("update", false, "rewrite the golden files")

const (
	plainPod     = `{"apiVersion":"v1","kind":"Pod","metadata":{"generateName":"web-7d9f-","namespace":"NS","labels":{"app":"web"},"ownerReferences":[{"apiVersion":"apps/v1","kind":"ReplicaSet","name":"web-7d9f","uid":"u1","controller":true}]},"spec":{"serviceAccountName":"default","containers":[{"name":"web","image":"nginx:1.27","ports":[{"containerPort":80}]}],"volumes":[{"name":"kube-api-access","projected":{"sources":[{"serviceAccountToken":{"path":"token"}}]}}]}}`
	annotatedPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"job-x","namespace":"NS","annotations":{"conduit.io/inject":"enabled","config.conduit.io/proxy-cpu-limit":"500m","a/b~c":"escaped"}},"spec":{"restartPolicy":"Never","initContainers":[{"name":"migrate","image":"busybox"}],"containers":[{"name":"job","image":"busybox"}]}}`
	disabledPod  = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"off","namespace":"NS","annotations":{"conduit.io/inject":"disabled"}},"spec":{"containers":[{"name":"a","image":"b"}]}}`
	hostNetPod   = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"host","namespace":"NS"},"spec":{"hostNetwork":true,"containers":[{"name":"a","image":"b"}]}}`
	badConfigPod = `{"apiVersion":"v1","kind":"Pod","metadata":{"name":"bad","namespace":"NS","annotations":{"config.conduit.io/proxy-memory-limit":"lots"}},"spec":{"containers":[{"name":"a","image":"b"}]}}`
)

func review(op, kind, ns, object string) []byte {
	obj := strings.ReplaceAll(object, `"NS"`, `"`+ns+`"`)
	b, _ := json.Marshal(map[string]any{
		"apiVersion": "admission.k8s.io/v1",
		"kind":       "AdmissionReview",
		"request": map[string]any{
			"uid":       "0f6d1c6e-1111-4e5b-9c3a-000000000001",
			"kind":      map[string]string{"group": "", "version": "v1", "kind": kind},
			"resource":  map[string]string{"group": "", "version": "v1", "resource": strings.ToLower(kind) + "s"},
			"namespace": ns,
			"operation": op,
			"userInfo":  map[string]any{"username": "system:serviceaccount:kube-system:replicaset-controller"},
			"object":    json.RawMessage(obj),
		},
	})
	return b
}

func testNamespaces() StaticNamespaces {
	return StaticNamespaces{
		"meshed":   {Annotations: map[string]string{inject.AnnotationInject: inject.ValueEnabled}},
		"labelled": {Labels: map[string]string{inject.AnnotationInject: inject.ValueEnabled}},
		"plain":    {},
	}
}

// testProxyConfig is the injector's configuration in these tests, with the
// trust anchors of pkg/inject's golden files.
func testProxyConfig() inject.ProxyConfig {
	pem, err := os.ReadFile(filepath.Join("..", "..", "inject", "testdata", "trust-anchors.pem"))
	if err != nil {
		panic(err)
	}
	c := inject.DefaultProxyConfig("v1.2.3")
	c.TrustAnchorsPEM = string(pem)
	return c
}

func testHandler(ns NamespaceGetter) http.Handler {
	return NewHandler(Config{Proxy: testProxyConfig(), Namespaces: ns})
}

// goldenResponse is what the golden files hold: the response with the patch
// decoded, so that it reads as JSON.
type goldenResponse struct {
	UID      string          `json:"uid"`
	Allowed  bool            `json:"allowed"`
	Warnings []string        `json:"warnings,omitempty"`
	Patch    json.RawMessage `json:"patch,omitempty"`
}

func TestWebhookGolden(t *testing.T) {
	tests := []struct {
		name, op, kind, ns, object string
		patched                    bool
	}{
		{"replicaset-pod-in-meshed-namespace", "CREATE", "Pod", "meshed", plainPod, true},
		{"pod-in-labelled-namespace", "CREATE", "Pod", "labelled", plainPod, true},
		{"annotated-job-pod-in-plain-namespace", "CREATE", "Pod", "plain", annotatedPod, true},
		{"pod-in-plain-namespace", "CREATE", "Pod", "plain", plainPod, false},
		{"disabled-pod-in-meshed-namespace", "CREATE", "Pod", "meshed", disabledPod, false},
		{"host-network-pod", "CREATE", "Pod", "meshed", hostNetPod, false},
		{"control-plane-namespace", "CREATE", "Pod", "conduit", annotatedPod, false},
		{"bad-config-annotation", "CREATE", "Pod", "meshed", badConfigPod, false},
		{"update-is-ignored", "UPDATE", "Pod", "meshed", plainPod, false},
		{"not-a-pod", "CREATE", "Service", "meshed", `{"apiVersion":"v1","kind":"Service","metadata":{"name":"s"}}`, false},
	}
	h := testHandler(testNamespaces())
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(review(tt.op, tt.kind, tt.ns, tt.object)))
			req.Header.Set("Content-Type", "application/json")
			h.ServeHTTP(rec, req)
			if rec.Code != http.StatusOK {
				t.Fatalf("status %d: %s", rec.Code, rec.Body)
			}
			var out struct {
				APIVersion, Kind string
				Response         *struct {
					UID       string   `json:"uid"`
					Allowed   bool     `json:"allowed"`
					Patch     []byte   `json:"patch"`
					PatchType *string  `json:"patchType"`
					Warnings  []string `json:"warnings"`
				} `json:"response"`
			}
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || out.Response == nil {
				t.Fatalf("bad response %s: %v", rec.Body, err)
			}
			if out.APIVersion != "admission.k8s.io/v1" || out.Kind != "AdmissionReview" {
				t.Errorf("response is %s %s", out.APIVersion, out.Kind)
			}
			r := out.Response
			if !r.Allowed || r.UID != "0f6d1c6e-1111-4e5b-9c3a-000000000001" {
				t.Errorf("allowed=%v uid=%q", r.Allowed, r.UID)
			}
			if got := len(r.Patch) > 0; got != tt.patched {
				t.Fatalf("patched = %v, want %v", got, tt.patched)
			}
			if tt.patched {
				if r.PatchType == nil || *r.PatchType != "JSONPatch" {
					t.Errorf("patchType %v", r.PatchType)
				}
				checkPatchApplies(t, tt.ns, tt.object, r.Patch)
			}
			g := goldenResponse{UID: r.UID, Allowed: r.Allowed, Warnings: r.Warnings, Patch: r.Patch}
			got, _ := json.MarshalIndent(g, "", "  ")
			checkGolden(t, filepath.Join("testdata", tt.name+".golden.json"), append(got, '\n'))
		})
	}
}

// checkPatchApplies applies the patch to the pod and compares the result
// with what pkg/inject makes of the pod.
func checkPatchApplies(t *testing.T, ns, object string, patch []byte) {
	t.Helper()
	pod := []byte(strings.ReplaceAll(object, `"NS"`, `"`+ns+`"`))
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatalf("decoding the patch: %v", err)
	}
	patched, err := p.Apply(pod)
	if err != nil {
		t.Fatalf("applying the patch: %v", err)
	}
	nsInfo, _ := testNamespaces().Namespace(context.Background(), ns)
	want, _, err := inject.InjectPod(pod, nsInfo, testProxyConfig(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !jsonpatch.Equal(patched, want) {
		t.Errorf("patched pod differs from the injected pod:\n%s\n%s", patched, want)
	}
}

func checkGolden(t *testing.T, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs:\nwant:\n%s\ngot:\n%s", path, want, got)
	}
}

// TestWebhookTrustAnchors: the patch gives the proxy the configured trust
// anchors in its environment and mounts no ConfigMap (a pod can only mount
// ConfigMaps of its own namespace, and the anchors live in the control
// plane's). Without anchors the pod is admitted uninjected, with a warning.
func TestWebhookTrustAnchors(t *testing.T) {
	serve := func(cfg inject.ProxyConfig) (patch []byte, warnings []string) {
		t.Helper()
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(review("CREATE", "Pod", "meshed", plainPod)))
		req.Header.Set("Content-Type", "application/json")
		NewHandler(Config{Proxy: cfg, Namespaces: testNamespaces()}).ServeHTTP(rec, req)
		var out struct {
			Response struct {
				Allowed  bool     `json:"allowed"`
				Patch    []byte   `json:"patch"`
				Warnings []string `json:"warnings"`
			} `json:"response"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil || rec.Code != http.StatusOK || !out.Response.Allowed {
			t.Fatalf("status %d %s: %v", rec.Code, rec.Body, err)
		}
		return out.Response.Patch, out.Response.Warnings
	}

	cfg := testProxyConfig()
	patch, _ := serve(cfg)
	p, err := jsonpatch.DecodePatch(patch)
	if err != nil {
		t.Fatal(err)
	}
	patched, err := p.Apply([]byte(strings.ReplaceAll(plainPod, `"NS"`, `"meshed"`)))
	if err != nil {
		t.Fatal(err)
	}
	var pod corev1.Pod
	if err := json.Unmarshal(patched, &pod); err != nil {
		t.Fatal(err)
	}
	var env []corev1.EnvVar
	for _, c := range pod.Spec.InitContainers {
		if c.Name == inject.ProxyContainerName {
			env = c.Env
		}
	}
	found := false
	for _, e := range env {
		if e.Name == contract.Env(contract.FlagTrustAnchors) {
			found = e.Value == cfg.TrustAnchorsPEM && e.ValueFrom == nil
		}
	}
	if !found {
		t.Errorf("the proxy's environment lacks %s with the trust anchors: %+v", contract.Env(contract.FlagTrustAnchors), env)
	}
	for _, v := range pod.Spec.Volumes {
		if v.ConfigMap != nil {
			t.Errorf("the patch mounts ConfigMap %s", v.ConfigMap.Name)
		}
	}

	cfg.TrustAnchorsPEM = ""
	patch, warnings := serve(cfg)
	if len(patch) != 0 || len(warnings) != 1 || !strings.Contains(warnings[0], "no identity trust anchors configured") {
		t.Errorf("without trust anchors: patch %s, warnings %q; want no patch and a warning", patch, warnings)
	}
}

type failingNamespaces struct{}

func (failingNamespaces) Namespace(context.Context, string) (inject.Namespace, error) {
	return inject.Namespace{}, errors.New("apiserver unreachable")
}

func TestWebhookBadRequests(t *testing.T) {
	good := review("CREATE", "Pod", "meshed", plainPod)
	tests := []struct {
		name        string
		method      string
		path        string
		contentType string
		body        []byte
		ns          NamespaceGetter
		code        int
		message     string
	}{
		{"GET", http.MethodGet, "/inject", "", nil, nil, http.StatusMethodNotAllowed, ""},
		{"unknown path", http.MethodPost, "/mutate", "application/json", good, nil, http.StatusNotFound, ""},
		{"wrong content type", http.MethodPost, "/inject", "text/plain", good, nil, http.StatusUnsupportedMediaType, "application/json"},
		{"garbage", http.MethodPost, "/inject", "application/json", []byte("{not json"), nil, http.StatusBadRequest, "decoding AdmissionReview"},
		{"empty body", http.MethodPost, "/inject", "application/json", nil, nil, http.StatusBadRequest, "decoding AdmissionReview"},
		{"no request", http.MethodPost, "/inject", "application/json", []byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`), nil, http.StatusBadRequest, "no request"},
		{"v1beta1", http.MethodPost, "/inject", "application/json", bytes.Replace(good, []byte("admission.k8s.io/v1"), []byte("admission.k8s.io/v1beta1"), 1), nil, http.StatusBadRequest, "admission.k8s.io/v1"},
		{"too large", http.MethodPost, "/inject", "application/json", append([]byte(`{"apiVersion":"`), bytes.Repeat([]byte("a"), maxReviewBytes+1)...), nil, http.StatusRequestEntityTooLarge, "larger than"},
		{"malformed pod", http.MethodPost, "/inject", "application/json", review("CREATE", "Pod", "meshed", `[1,2]`), nil, http.StatusOK, ""},
		{"namespace lookup fails", http.MethodPost, "/inject", "application/json", good, failingNamespaces{}, http.StatusInternalServerError, "apiserver unreachable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ns := tt.ns
			if ns == nil {
				ns = testNamespaces()
			}
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(tt.method, tt.path, bytes.NewReader(tt.body))
			if tt.contentType != "" {
				req.Header.Set("Content-Type", tt.contentType)
			}
			testHandler(ns).ServeHTTP(rec, req)
			if rec.Code != tt.code || !strings.Contains(rec.Body.String(), tt.message) {
				t.Errorf("got %d %q, want %d containing %q", rec.Code, rec.Body, tt.code, tt.message)
			}
		})
	}
}

func TestJSONPatch(t *testing.T) {
	tests := []struct{ from, to, want string }{
		{`{"a":1}`, `{"a":1}`, `[]`},
		{`{"a":1}`, `{"a":2,"b/c":{"d~e":true}}`, `[{"op":"replace","path":"/a","value":2},{"op":"add","path":"/b~1c","value":{"d~e":true}}]`},
		{`{"a":1,"b":2}`, `{"b":2}`, `[{"op":"remove","path":"/a"}]`},
		{`{"l":[1,2]}`, `{"l":[0,9,1,2]}`, `[{"op":"add","path":"/l/0","value":0},{"op":"add","path":"/l/1","value":9}]`},
		{`{"l":[1,2]}`, `{"l":[1,2,3]}`, `[{"op":"add","path":"/l/2","value":3}]`},
		{`{"l":[1,2,3]}`, `{"l":[1,3]}`, `[{"op":"remove","path":"/l/1"}]`},
		{`{"l":[1,2]}`, `{"l":[3]}`, `[{"op":"replace","path":"/l","value":[3]}]`},
		{`{"l":[1,2]}`, `{"l":[2,1,0]}`, `[{"op":"replace","path":"/l","value":[2,1,0]}]`},
		{`{"a":{"x":1}}`, `{"a":[1]}`, `[{"op":"replace","path":"/a","value":[1]}]`},
		{`{"n":null}`, `{"n":0}`, `[{"op":"replace","path":"/n","value":0}]`},
		{`{"n":0}`, `{"n":null}`, `[{"op":"replace","path":"/n","value":null}]`},
		{`{}`, `{"n":null}`, `[{"op":"add","path":"/n","value":null}]`},
	}
	for _, tt := range tests {
		got, err := jsonPatch([]byte(tt.from), []byte(tt.to))
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != tt.want {
			t.Errorf("jsonPatch(%s, %s) = %s, want %s", tt.from, tt.to, got, tt.want)
		}
		p, err := jsonpatch.DecodePatch(got)
		if err != nil {
			t.Fatal(err)
		}
		applied, err := p.Apply([]byte(tt.from))
		if err != nil || !jsonpatch.Equal(applied, []byte(tt.to)) {
			t.Errorf("patch %s applied to %s gives %s (%v), want %s", got, tt.from, applied, err, tt.to)
		}
	}
}

// BenchmarkWebhook is one AdmissionReview for a ReplicaSet's pod in an
// injection-enabled namespace, answered with a patch.
func BenchmarkWebhook(b *testing.B) {
	h := testHandler(testNamespaces())
	body := review("CREATE", "Pod", "meshed", plainPod)
	for b.Loop() {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, "/inject", bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK || !bytes.Contains(rec.Body.Bytes(), []byte(`"patch"`)) {
			b.Fatalf("status %d: %s", rec.Code, rec.Body)
		}
	}
}
