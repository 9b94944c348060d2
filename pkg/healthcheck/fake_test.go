package healthcheck

import (
	"crypto/ecdsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"text/template"
	"time"

	"github.com/google/go-cmp/cmp"
	authorizationv1 "k8s.io/api/authorization/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/version"
	fakediscovery "k8s.io/client-go/discovery/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"

	"github.com/conduitmesh/conduit/internal/testenv/fakekube"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// testNow is the clock of every test: certificates are made relative to it.
var testNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

// newFakeClient builds a fake clientset holding the objects of the YAML
// documents (separated by ---), serving Kubernetes gitVersion.
func newFakeClient(t *testing.T, gitVersion string, docs ...string) *fake.Clientset {
	t.Helper()
	var objs []runtime.Object
	for _, d := range docs {
		for _, y := range strings.Split(d, "\n---\n") {
			if strings.TrimSpace(y) == "" {
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(y), nil, nil)
			if err != nil {
				t.Fatalf("decoding test object: %v\n%s", err, y)
			}
			objs = append(objs, obj)
		}
	}
	// Every cluster has the namespace "default" (the injector probe's).
	hasDefault := false
	for _, o := range objs {
		if ns, ok := o.(*corev1.Namespace); ok && ns.Name == metav1.NamespaceDefault {
			hasDefault = true
		}
	}
	if !hasDefault {
		objs = append(objs, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: metav1.NamespaceDefault}})
	}
	c := fake.NewClientset(objs...)
	injectorAnswers(c, true)
	c.Discovery().(*fakediscovery.FakeDiscovery).FakedServerVersion = &version.Info{GitVersion: gitVersion, Major: "1", Minor: "37"}
	// The Gateway API CRDs are installed, as `conduit install` does.
	c.Resources = []*metav1.APIResourceList{{
		GroupVersion: policy.HTTPRoutesResource.GroupVersion().String(),
		APIResources: []metav1.APIResource{{Name: "httproutes", Namespaced: true}, {Name: "grpcroutes", Namespaced: true}},
	}}
	return c
}

// injectorAnswers makes the probe's dry runs come back as the API server
// returns them: with the proxy added when the injector answers, unchanged
// otherwise.
func injectorAnswers(c *fake.Clientset, answers bool) {
	fakekube.DryRunPods(c, func(_ int, pod *corev1.Pod) (*corev1.Pod, error) {
		if answers {
			return fakekube.WithProxy(pod), nil
		}
		return pod, nil
	})
}

// allowOnly makes SelfSubjectAccessReviews allow only the verb/resource
// pairs listed ("create deployments"); nil allows everything.
func allowOnly(c *fake.Clientset, allowed []string) {
	c.PrependReactor("create", "selfsubjectaccessreviews", func(a k8stesting.Action) (bool, runtime.Object, error) {
		r := a.(k8stesting.CreateAction).GetObject().(*authorizationv1.SelfSubjectAccessReview).DeepCopy()
		attrs := r.Spec.ResourceAttributes
		r.Status.Allowed = allowed == nil
		for _, p := range allowed {
			if p == attrs.Verb+" "+attrs.Resource {
				r.Status.Allowed = true
			}
		}
		return true, r, nil
	})
}

// certSpec describes a test certificate.
type certSpec struct {
	cn        string
	notBefore time.Time
	notAfter  time.Time
	ca        bool
	noSign    bool // a CA without KeyUsageCertSign
	dns       []string
}

type testCert struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	CertPEM string
	KeyPEM  string
}

// makeCert issues spec signed by parent (self-signed when parent is nil).
func makeCert(t *testing.T, spec certSpec, parent *testCert) *testCert {
	t.Helper()
	tmpl := &x509.Certificate{
		Subject:               pkix.Name{CommonName: spec.cn},
		NotBefore:             spec.notBefore,
		NotAfter:              spec.notAfter,
		DNSNames:              spec.dns,
		BasicConstraintsValid: true,
		IsCA:                  spec.ca,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if spec.ca && !spec.noSign {
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	var p *pkitest.Cert
	if parent != nil {
		p = &pkitest.Cert{Cert: parent.cert, Key: parent.key}
	}
	c := pkitest.New(t, tmpl, p)
	return &testCert{cert: c.Cert, key: c.Key, CertPEM: string(c.PEM()), KeyPEM: string(c.KeyPEM(t))}
}

// installCerts are the certificates of a test install.
type installCerts struct {
	Anchor, Issuer, WebhookCA, Webhook *testCert
	// BundlePEM is the webhook caBundle; default WebhookCA's certificate.
	BundlePEM string
}

func days(n int) time.Duration { return time.Duration(n) * 24 * time.Hour }

// healthyCerts are valid for a year around testNow.
func healthyCerts(t *testing.T) *installCerts {
	anchor := makeCert(t, certSpec{cn: "root.conduit.cluster.local", notBefore: testNow.Add(-days(30)), notAfter: testNow.Add(days(3650)), ca: true}, nil)
	issuer := makeCert(t, certSpec{cn: "identity.conduit.cluster.local", notBefore: testNow.Add(-days(30)), notAfter: testNow.Add(days(335)), ca: true}, anchor)
	whCA := makeCert(t, certSpec{cn: "webhook.conduit.conduit", notBefore: testNow.Add(-days(30)), notAfter: testNow.Add(days(3650)), ca: true}, nil)
	wh := makeCert(t, certSpec{cn: "conduit-controller.conduit.svc", notBefore: testNow.Add(-days(30)), notAfter: testNow.Add(days(335)),
		dns: []string{"conduit-controller.conduit.svc", "conduit-controller.conduit.svc.cluster.local"}}, whCA)
	return &installCerts{Anchor: anchor, Issuer: issuer, WebhookCA: whCA, Webhook: wh}
}

var installTemplate = template.Must(template.New("install").Funcs(template.FuncMap{
	"b64": func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) },
	"indent": func(n int, s string) string {
		return strings.ReplaceAll(strings.TrimRight(s, "\n"), "\n", "\n"+strings.Repeat(" ", n))
	},
}).Parse(`apiVersion: v1
kind: Namespace
metadata:
  name: conduit
  labels: {kubernetes.io/metadata.name: conduit}
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: conduit-config
  namespace: conduit
  labels: {app.kubernetes.io/part-of: conduit, conduit.io/control-plane-ns: conduit, conduit.io/version: v1.0.0}
data:
  version: v1.0.0
  values: |
    namespace: conduit
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: conduit-controller
  namespace: conduit
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata:
  name: conduit-conduit-controller
  labels: {app.kubernetes.io/part-of: conduit, conduit.io/control-plane-ns: conduit}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata:
  name: conduit-conduit-controller
  labels: {app.kubernetes.io/part-of: conduit, conduit.io/control-plane-ns: conduit}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: conduit-conduit-controller}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: conduit-controller
  namespace: conduit
spec:
  replicas: 1
  selector: {matchLabels: {conduit.io/control-plane-component: controller}}
  template:
    metadata: {labels: {conduit.io/control-plane-component: controller}}
    spec: {containers: [{name: controller, image: ghcr.io/conduitmesh/conduit-controller:v1.0.0}]}
status: {replicas: 1, availableReplicas: 1, updatedReplicas: 1, readyReplicas: 1}
---
apiVersion: v1
kind: Pod
metadata:
  name: conduit-controller-7d9f-abcde
  namespace: conduit
  labels: {conduit.io/control-plane-component: controller, conduit.io/version: v1.0.0}
spec: {containers: [{name: controller, image: ghcr.io/conduitmesh/conduit-controller:v1.0.0}]}
status:
  phase: Running
  conditions: [{type: Ready, status: "True"}]
  containerStatuses: [{name: controller, ready: true}]
---
apiVersion: v1
kind: Service
metadata:
  name: conduit-controller
  namespace: conduit
spec:
  selector: {conduit.io/control-plane-component: controller}
  ports: [{name: grpc, port: 8086}, {name: webhook, port: 443, targetPort: 8443}, {name: admin, port: 9990}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: conduit-controller-x1
  namespace: conduit
  labels: {kubernetes.io/service-name: conduit-controller}
addressType: IPv4
endpoints: [{addresses: [10.244.0.5], conditions: {ready: true}}]
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: conduit-identity-trust-roots
  namespace: conduit
data:
  ca-bundle.crt: |
    {{indent 4 .Anchor.CertPEM}}
---
apiVersion: v1
kind: Secret
metadata:
  name: conduit-identity-issuer
  namespace: conduit
type: kubernetes.io/tls
data:
  tls.crt: {{b64 .Issuer.CertPEM}}
  tls.key: {{b64 .Issuer.KeyPEM}}
  ca.crt: {{b64 .Anchor.CertPEM}}
---
apiVersion: v1
kind: Secret
metadata:
  name: conduit-proxy-injector-tls
  namespace: conduit
type: kubernetes.io/tls
data:
  tls.crt: {{b64 .Webhook.CertPEM}}
  tls.key: {{b64 .Webhook.KeyPEM}}
  ca.crt: {{b64 .WebhookCA.CertPEM}}
---
apiVersion: admissionregistration.k8s.io/v1
kind: MutatingWebhookConfiguration
metadata:
  name: conduit-proxy-injector
webhooks:
- name: proxy-injector.conduit.io
  admissionReviewVersions: [v1]
  sideEffects: None
  clientConfig:
    service: {name: conduit-controller, namespace: conduit, path: /inject, port: 443}
    caBundle: {{b64 .BundlePEM}}
  namespaceSelector:
    matchExpressions:
    - {key: kubernetes.io/metadata.name, operator: NotIn, values: [kube-system, conduit]}
    - {key: conduit.io/is-control-plane, operator: NotIn, values: ["true"]}
`))

// installYAML renders a complete, healthy-looking install with certs.
func installYAML(t *testing.T, certs *installCerts) string {
	t.Helper()
	if certs.BundlePEM == "" {
		certs.BundlePEM = certs.WebhookCA.CertPEM
	}
	var b strings.Builder
	if err := installTemplate.Execute(&b, certs); err != nil {
		t.Fatal(err)
	}
	return b.String()
}

// meshedPod is a data plane pod in namespace app with the proxy at version.
func meshedPod(name, version string, ready bool) string {
	r := "true"
	if !ready {
		r = "false"
	}
	return `apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  namespace: app
  labels: {app: web, conduit.io/proxy-version: ` + version + `}
spec: {containers: [{name: web, image: web}, {name: conduit-proxy, image: proxy}]}
status:
  phase: Running
  containerStatuses: [{name: web, ready: true}, {name: conduit-proxy, ready: ` + r + `}]
`
}

const appNamespace = `apiVersion: v1
kind: Namespace
metadata: {name: app}
`

// golden compares got with testdata/name, or rewrites it with -update.
func golden(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.MkdirAll("testdata", 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden file (run with -update to create it): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}
