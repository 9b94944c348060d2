package healthcheck

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
)

// runChecks runs the checks opts selects against client at testNow.
func runChecks(t *testing.T, client kubernetes.Interface, opts Options, obs Observer) Report {
	t.Helper()
	opts.NewClient = func() (kubernetes.Interface, error) { return client, nil }
	opts.Now = func() time.Time { return testNow }
	if opts.CLIVersion == "" {
		opts.CLIVersion = "v1.0.0"
	}
	// The runner's clock is frozen too: a check with a deadline is retried
	// until it passes.
	return Runner{RetryInterval: time.Millisecond, Now: opts.Now}.Run(context.Background(), Categories(opts), obs)
}

// outcome is a compact view of a report: "category/description" -> status.
func outcome(rep Report) map[string]Status {
	m := map[string]Status{}
	for _, c := range rep.Categories {
		for _, r := range c.Results {
			m[string(c.ID)+"/"+r.Description] = r.Status
		}
	}
	return m
}

// failures are the non-success results, keyed like outcome.
func failures(rep Report) map[string]Result {
	m := map[string]Result{}
	for _, c := range rep.Categories {
		for _, r := range c.Results {
			if r.Status != StatusSuccess {
				m[string(c.ID)+"/"+r.Description] = r
			}
		}
	}
	return m
}

func categoryIDs(rep Report) []CategoryID {
	var ids []CategoryID
	for _, c := range rep.Categories {
		ids = append(ids, c.ID)
	}
	return ids
}

func TestHealthyInstallPasses(t *testing.T) {
	client := newFakeClient(t, "v1.37.2", installYAML(t, healthyCerts(t)), appNamespace, meshedPod("web-1", "v1.0.0", true))
	rep := runChecks(t, client, Options{Proxy: true, DataPlaneNamespace: "app"}, nil)
	if f := failures(rep); len(f) > 0 || !rep.Success {
		t.Fatalf("healthy install: success=%v, failures %+v", rep.Success, f)
	}
	want := []CategoryID{KubernetesAPI, KubernetesVersion, ConduitConfig, ControlPlane, Identity, Webhook, Version, GatewayAPI, DataPlane}
	if diff := cmp.Diff(want, categoryIDs(rep)); diff != "" {
		t.Errorf("categories (-want +got):\n%s", diff)
	}
	if ok, _, _ := rep.Counts(); ok < 30 {
		t.Errorf("only %d checks ran; want every check of every category", ok)
	}
}

// wantFailure is one expected non-success result.
type wantFailure struct {
	status Status
	err    string // substring of the error
	hint   string // substring of the hint
}

func TestInstallProblems(t *testing.T) {
	tests := []struct {
		name  string
		certs func(*testing.T, *installCerts)
		// edit changes the healthy install's YAML.
		edit  func(string) string
		extra []string
		opts  Options
		k8s   string
		// injector replaces the answering injector of the fake API server.
		injector func(*fake.Clientset)
		want     map[string]wantFailure
		passes   bool
	}{
		{
			name:     "the injector does not answer (failurePolicy Ignore)",
			injector: func(c *fake.Clientset) { injectorAnswers(c, false) },
			want: map[string]wantFailure{
				"webhook/proxy injector adds the proxy to new pods": {StatusError, "the API server admitted a pod annotated conduit.io/inject=enabled in namespace default without the proxy", "through Service conduit/conduit-controller port 443"},
			},
		},
		{
			name: "the API server cannot call the injector (failurePolicy Fail)",
			injector: func(c *fake.Clientset) {
				c.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewInternalError(errors.New(`failed calling webhook "proxy-injector.conduit.io": failed to call webhook: Post "https://conduit-controller.conduit.svc:443/inject?timeout=10s": context deadline exceeded`))
				})
			},
			want: map[string]wantFailure{
				"webhook/proxy injector adds the proxy to new pods": {StatusError, "the API server cannot call the proxy injector for a pod in namespace default: Internal error occurred: failed calling webhook", "a firewall between the control plane and the nodes"},
			},
		},
		{
			name: "the probe pod is refused by another admission plugin: a warning",
			injector: func(c *fake.Clientset) {
				c.PrependReactor("create", "pods", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`violates PodSecurity "restricted:latest"`))
				})
			},
			want: map[string]wantFailure{
				"webhook/proxy injector adds the proxy to new pods": {StatusWarning, `violates PodSecurity "restricted:latest"`, "kubectl auth can-i create pods -n default"},
			},
			passes: true,
		},
		{
			name: "issuer expired",
			certs: func(t *testing.T, c *installCerts) {
				c.Issuer = makeCert(t, certSpec{cn: "identity.conduit.cluster.local", notBefore: testNow.Add(-days(400)), notAfter: testNow.Add(-days(35)), ca: true}, c.Anchor)
			},
			want: map[string]wantFailure{
				"identity/issuer certificate is within its validity period": {StatusError, `issuer certificate "identity.conduit.cluster.local" expired on 2026-01-25T12:00:00Z`, "upgrade --identity-trust-anchors-file ca.crt --identity-issuer-certificate-file issuer.crt --identity-issuer-key-file issuer.key"},
				"identity/issuer certificate is valid for at least 60 days": {StatusWarning, "expires on 2026-01-25", "step certificate create"},
			},
		},
		{
			name: "issuer expires in 30 days is a warning",
			certs: func(t *testing.T, c *installCerts) {
				c.Issuer = makeCert(t, certSpec{cn: "identity.conduit.cluster.local", notBefore: testNow.Add(-days(335)), notAfter: testNow.Add(days(30)), ca: true}, c.Anchor)
			},
			want: map[string]wantFailure{
				"identity/issuer certificate is valid for at least 60 days": {StatusWarning, "in less than 60 days", "--identity-issuer-certificate-file"},
			},
			passes: true,
		},
		{
			name: "issuer not signed by the anchors",
			certs: func(t *testing.T, c *installCerts) {
				other := makeCert(t, certSpec{cn: "other-root", notBefore: testNow.Add(-days(1)), notAfter: testNow.Add(days(3650)), ca: true}, nil)
				c.Issuer = makeCert(t, certSpec{cn: "identity.conduit.cluster.local", notBefore: testNow.Add(-days(1)), notAfter: testNow.Add(days(300)), ca: true}, other)
			},
			want: map[string]wantFailure{
				"identity/issuer certificate is signed by the trust anchors": {StatusError, `does not chain to the trust anchors`, "--identity-issuer-key-file"},
			},
		},
		{
			name: "issuer without KeyUsageCertSign",
			certs: func(t *testing.T, c *installCerts) {
				c.Issuer = makeCert(t, certSpec{cn: "identity.conduit.cluster.local", notBefore: testNow.Add(-days(1)), notAfter: testNow.Add(days(300)), ca: true, noSign: true}, c.Anchor)
			},
			want: map[string]wantFailure{
				"identity/issuer certificate is signed by the trust anchors": {StatusError, `is not a CA that may sign certificates`, "--identity-issuer-key-file"},
			},
		},
		{
			name: "trust anchor expiring",
			certs: func(t *testing.T, c *installCerts) {
				c.Anchor = makeCert(t, certSpec{cn: "root.conduit.cluster.local", notBefore: testNow.Add(-days(3000)), notAfter: testNow.Add(days(20)), ca: true}, nil)
				c.Issuer = makeCert(t, certSpec{cn: "identity.conduit.cluster.local", notBefore: testNow.Add(-days(1)), notAfter: testNow.Add(days(10)), ca: true}, c.Anchor)
			},
			want: map[string]wantFailure{
				"identity/trust anchors are valid for at least 60 days":     {StatusWarning, `trust anchor "root.conduit.cluster.local" expires on 2026-03-21`, "make a new anchor"},
				"identity/issuer certificate is valid for at least 60 days": {StatusWarning, "in less than 60 days", ""},
			},
			passes: true,
		},
		{
			name: "issuer secret ca.crt differs from the trust roots",
			edit: func(y string) string {
				return replaceSecretKey(y, "conduit-identity-issuer", "ca.crt", "-----BEGIN CERTIFICATE-----\nnope\n-----END CERTIFICATE-----\n")
			},
			want: map[string]wantFailure{
				"identity/issuer Secret's ca.crt matches the trust anchors": {StatusError, "key ca.crt", "upgrade"},
			},
		},
		{
			name: "issuer key does not match",
			certs: func(t *testing.T, c *installCerts) {
				other := makeCert(t, certSpec{cn: "x", notBefore: testNow, notAfter: testNow.Add(days(9)), ca: true}, nil)
				c.Issuer = &testCert{cert: c.Issuer.cert, key: other.key, CertPEM: c.Issuer.CertPEM, KeyPEM: other.KeyPEM}
			},
			want: map[string]wantFailure{
				"identity/issuer credentials are readable": {StatusError, "tls.key does not match the certificate in tls.crt", "restore the identity"},
			},
		},
		{
			name: "webhook caBundle wrong",
			certs: func(t *testing.T, c *installCerts) {
				c.BundlePEM = makeCert(t, certSpec{cn: "stale-ca", notBefore: testNow.Add(-days(1)), notAfter: testNow.Add(days(300)), ca: true}, nil).CertPEM
			},
			want: map[string]wantFailure{
				"webhook/webhook caBundle matches the webhook certificate": {StatusError, "does not verify the serving certificate", "`conduit upgrade` re-applies the MutatingWebhookConfiguration"},
			},
		},
		{
			name: "webhook certificate for the wrong name and expired",
			certs: func(t *testing.T, c *installCerts) {
				c.Webhook = makeCert(t, certSpec{cn: "conduit-controller.other.svc", notBefore: testNow.Add(-days(400)), notAfter: testNow.Add(-days(1)), dns: []string{"conduit-controller.other.svc"}}, c.WebhookCA)
			},
			want: map[string]wantFailure{
				"webhook/webhook certificate is within its validity period":               {StatusError, "expired on 2026-02-28", "`conduit upgrade` issues a new webhook certificate"},
				"webhook/webhook certificate is valid for at least 60 days":               {StatusWarning, "expires on", ""},
				"webhook/webhook certificate is valid for conduit-controller.conduit.svc": {StatusError, "DNS names [conduit-controller.other.svc]", "kubectl -n conduit delete secret conduit-proxy-injector-tls && conduit upgrade"},
			},
		},
		{
			name: "webhook selector would inject the control plane",
			edit: func(y string) string {
				return strings.Replace(y, "values: [kube-system, conduit]", "values: [kube-system]", 1)
			},
			want: map[string]wantFailure{
				"webhook/webhook never injects kube-system or the control plane namespace": {StatusError, "matches namespace conduit", "upgrade"},
			},
		},
		{
			name: "webhook configuration deleted",
			edit: func(y string) string { return dropObject(y, "kind: MutatingWebhookConfiguration") },
			want: map[string]wantFailure{
				"webhook/MutatingWebhookConfiguration conduit-proxy-injector exists": {StatusError, "does not exist", "upgrade"},
			},
		},
		{
			name: "controller deployment deleted",
			edit: func(y string) string { return dropObject(y, "kind: Deployment") },
			want: map[string]wantFailure{
				"control-plane/controller Deployment exists": {StatusError, "Deployment conduit/conduit-controller does not exist", "`conduit upgrade` re-applies every control plane object"},
			},
		},
		{
			name: "controller pod pending",
			edit: func(y string) string {
				return strings.Replace(y, "phase: Running\n  conditions: [{type: Ready, status: \"True\"}]\n  containerStatuses: [{name: controller, ready: true}]",
					"phase: Pending\n  containerStatuses: [{name: controller, ready: false, state: {waiting: {reason: ImagePullBackOff}}}]", 1)
			},
			want: map[string]wantFailure{
				"control-plane/control plane pods are ready": {StatusError, "pod conduit/conduit-controller-7d9f-abcde is Pending: container controller is ImagePullBackOff", "kubectl -n conduit logs deploy/conduit-controller"},
			},
		},
		{
			name: "config values unreadable",
			edit: func(y string) string {
				return strings.Replace(y, "  values: |\n    namespace: conduit\n", "  values: |\n    namespace: [conduit\n", 1)
			},
			want: map[string]wantFailure{
				"conduit-config/install values are readable": {StatusError, "ConfigMap conduit/conduit-config holds unreadable values", "kubectl -n conduit edit configmap conduit-config"},
			},
		},
		{
			name: "controller service has no endpoints",
			edit: func(y string) string { return dropObject(y, "kind: EndpointSlice") },
			want: map[string]wantFailure{
				"control-plane/controller Service has ready endpoints": {StatusError, "has no ready endpoints", "upgrade"},
			},
		},
		{
			name: "cluster roles deleted",
			edit: func(y string) string {
				return dropObject(dropObject(y, "kind: ClusterRole\n"), "kind: ClusterRoleBinding")
			},
			want: map[string]wantFailure{
				"conduit-config/control plane ClusterRoles and ClusterRoleBindings exist": {StatusError, "no ClusterRole or ClusterRoleBinding labelled app.kubernetes.io/part-of=conduit,conduit.io/control-plane-ns=conduit", "upgrade"},
			},
		},
		{
			name: "version skew",
			opts: Options{CLIVersion: "v1.1.0"},
			want: map[string]wantFailure{
				"version/control plane and CLI versions match": {StatusWarning, "control plane is v1.0.0 but the CLI is v1.1.0", "`conduit upgrade`"},
			},
			passes: true,
		},
		{
			name: "old kubernetes",
			k8s:  "v1.28.3",
			want: map[string]wantFailure{
				"kubernetes-version/is running the minimum Kubernetes API version": {StatusError, "Kubernetes v1.28.3 is older than the minimum supported 1.29.0", "upgrade the cluster to Kubernetes 1.29"},
			},
		},
		{
			name:  "proxy not ready and outdated",
			opts:  Options{Proxy: true, DataPlaneNamespace: "app"},
			extra: []string{appNamespace, meshedPod("web-1", "v1.0.0", true), meshedPod("web-2", "v0.9.0", false)},
			want: map[string]wantFailure{
				"data-plane/data plane proxies are ready": {StatusError, "pod app/web-2 (Running): conduit-proxy is running but not ready: it has no identity certificate yet; last log line: fake logs", "`kubectl logs -n app web-2 -c conduit-proxy` says why not"},
			},
		},
		{
			name: "native sidecar proxy not ready",
			opts: Options{Proxy: true, DataPlaneNamespace: "app"},
			extra: []string{appNamespace, `apiVersion: v1
kind: Pod
metadata:
  name: web-native
  namespace: app
  labels: {conduit.io/proxy-version: v1.0.0}
spec:
  initContainers: [{name: conduit-proxy, image: proxy, restartPolicy: Always}]
  containers: [{name: web, image: web}]
status:
  phase: Running
  initContainerStatuses: [{name: conduit-proxy, ready: false}]
  containerStatuses: [{name: web, ready: true}]
`},
			want: map[string]wantFailure{
				"data-plane/data plane proxies are ready": {StatusError, "pod app/web-native (Init:0/1): conduit-proxy is running but not ready", "`kubectl logs -n app web-native -c conduit-proxy`"},
			},
		},
		{
			name:  "proxy outdated",
			opts:  Options{Proxy: true},
			extra: []string{appNamespace, meshedPod("web-1", "v0.9.0", true)},
			want: map[string]wantFailure{
				"data-plane/data plane proxies run the control plane's version": {StatusWarning, "app/web-1 (v0.9.0)", "rollout restart"},
			},
			passes: true,
		},
		{
			name:  "no meshed pods",
			opts:  Options{Proxy: true, DataPlaneNamespace: "app"},
			extra: []string{appNamespace},
			want: map[string]wantFailure{
				"data-plane/data plane proxies are ready": {StatusError, `no meshed pods (label conduit.io/proxy-version) in namespace "app"`, "conduit inject -"},
			},
		},
		{
			name: "data plane namespace missing",
			opts: Options{Proxy: true, DataPlaneNamespace: "nope"},
			want: map[string]wantFailure{
				"data-plane/data plane namespace exists": {StatusError, `namespace "nope" does not exist`, "-n"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs := healthyCerts(t)
			if tt.certs != nil {
				tt.certs(t, certs)
			}
			y := installYAML(t, certs)
			if tt.edit != nil {
				y = tt.edit(y)
			}
			k8s := tt.k8s
			if k8s == "" {
				k8s = "v1.37.2"
			}
			client := newFakeClient(t, k8s, append([]string{y}, tt.extra...)...)
			if tt.injector != nil {
				tt.injector(client)
			}
			rep := runChecks(t, client, tt.opts, nil)
			got := failures(rep)
			for key, w := range tt.want {
				r, ok := got[key]
				if !ok {
					t.Errorf("%s: passed, want %s containing %q", key, w.status, w.err)
					continue
				}
				if r.Status != w.status || !strings.Contains(r.Error, w.err) || !strings.Contains(r.Hint, w.hint) {
					t.Errorf("%s:\n got %s %q\n  hint %q\nwant %s containing %q, hint containing %q", key, r.Status, r.Error, r.Hint, w.status, w.err, w.hint)
				}
				delete(got, key)
			}
			for key, r := range got {
				t.Errorf("unexpected %s %s: %s", r.Status, key, r.Error)
			}
			if rep.Success != tt.passes {
				t.Errorf("Success = %v, want %v", rep.Success, tt.passes)
			}
		})
	}
}

func TestNotInstalledStopsAtTheNamespace(t *testing.T) {
	client := newFakeClient(t, "v1.37.2")
	rep := runChecks(t, client, Options{}, nil)
	want := map[string]Status{
		"kubernetes-api/can initialize the client":                         StatusSuccess,
		"kubernetes-api/can query the Kubernetes API":                      StatusSuccess,
		"kubernetes-version/is running the minimum Kubernetes API version": StatusSuccess,
		"conduit-config/control plane Namespace exists":                    StatusError,
	}
	if diff := cmp.Diff(want, outcome(rep)); diff != "" {
		t.Errorf("outcome (-want +got):\n%s", diff)
	}
	r := rep.Categories[2].Results[0]
	if !strings.Contains(r.Hint, "conduit install") {
		t.Errorf("hint %q does not say how to install", r.Hint)
	}
}

func TestClientFailureIsFatal(t *testing.T) {
	opts := Categories(Options{NewClient: func() (kubernetes.Interface, error) {
		return nil, fmt.Errorf("no configuration has been provided")
	}})
	rep := Runner{}.Run(context.Background(), opts, nil)
	if rep.Success || len(rep.Categories) != 1 || len(rep.Categories[0].Results) != 1 {
		t.Fatalf("got %+v; want one failed check and nothing after it", rep)
	}
	if r := rep.Categories[0].Results[0]; !strings.Contains(r.Hint, "--kubeconfig") {
		t.Errorf("hint %q does not mention --kubeconfig", r.Hint)
	}
}

func TestWaitRetriesUntilPodsAreReady(t *testing.T) {
	y := strings.Replace(installYAML(t, healthyCerts(t)), `conditions: [{type: Ready, status: "True"}]`, `conditions: [{type: Ready, status: "False", message: "containers not ready"}]`, 1)
	client := newFakeClient(t, "v1.37.2", y)
	var retried []string
	obs := ObserverFuncs{RetryingFunc: func(r Result, _ time.Time) {
		retried = append(retried, r.Description+": "+r.Error)
		// The pod becomes ready while the runner waits.
		p, err := client.CoreV1().Pods("conduit").Get(context.Background(), "conduit-controller-7d9f-abcde", metav1.GetOptions{})
		if err != nil {
			t.Error(err)
			return
		}
		p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}
		if _, err := client.CoreV1().Pods("conduit").UpdateStatus(context.Background(), p, metav1.UpdateOptions{}); err != nil {
			t.Error(err)
		}
	}}
	rep := runChecks(t, client, Options{Wait: time.Hour}, obs)
	if f := failures(rep); len(f) > 0 {
		t.Fatalf("failures after waiting: %+v", f)
	}
	want := []string{"control plane pods are ready: pod conduit/conduit-controller-7d9f-abcde is not ready: containers not ready"}
	if diff := cmp.Diff(want, retried); diff != "" {
		t.Errorf("retries (-want +got):\n%s", diff)
	}
}

func TestWithoutWaitNothingIsRetried(t *testing.T) {
	y := dropObject(installYAML(t, healthyCerts(t)), "kind: Pod")
	client := newFakeClient(t, "v1.37.2", y)
	obs := ObserverFuncs{RetryingFunc: func(r Result, _ time.Time) { t.Errorf("retried %q without --wait", r.Description) }}
	rep := runChecks(t, client, Options{}, obs)
	if got := failures(rep)["control-plane/control plane pods are ready"]; !strings.Contains(got.Error, `no control plane pods in namespace "conduit"`) {
		t.Errorf("got %+v", got)
	}
}

func TestPreInstall(t *testing.T) {
	tests := []struct {
		name    string
		docs    []string
		allowed []string // nil: everything
		want    map[string]wantFailure
	}{
		{name: "empty cluster with cluster-admin"},
		{
			name: "namespace exists",
			docs: []string{"apiVersion: v1\nkind: Namespace\nmetadata: {name: conduit}\n"},
			want: map[string]wantFailure{
				"pre-kubernetes-setup/control plane namespace does not already exist": {StatusError, `namespace "conduit" already exists`, "conduit uninstall"},
			},
		},
		{
			name: "namespace being deleted",
			docs: []string{"apiVersion: v1\nkind: Namespace\nmetadata: {name: conduit, deletionTimestamp: \"2026-12-07T12:00:00Z\", finalizers: [example.com/hold]}\nstatus: {phase: Terminating}\n"},
			want: map[string]wantFailure{
				"pre-kubernetes-setup/control plane namespace does not already exist": {StatusError, "Namespace conduit is still being deleted (by an earlier uninstall): wait until it is gone (`kubectl wait --for=delete namespace/conduit --timeout=5m`), then install again", "install -L"},
			},
		},
		{
			name: "limited user",
			allowed: []string{
				"create namespaces", "patch namespaces", "create clusterroles", "patch clusterroles",
				"create clusterrolebindings", "patch clusterrolebindings", "create mutatingwebhookconfigurations", "patch mutatingwebhookconfigurations",
				"create serviceaccounts", "patch serviceaccounts", "create roles", "patch roles", "create rolebindings", "patch rolebindings",
				"create configmaps", "patch configmaps", "create secrets", "create services", "patch services",
			},
			want: map[string]wantFailure{
				"pre-kubernetes-setup/can create Secrets":     {StatusError, `the current user cannot patch secrets in namespace "conduit" (missing RBAC permission: verbs patch on secrets)`, "clusterrolebinding"},
				"pre-kubernetes-setup/can create Deployments": {StatusError, `cannot create,patch deployments.apps in namespace "conduit"`, "permission to create,patch deployments.apps"},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			client := newFakeClient(t, "v1.37.2", tt.docs...)
			allowOnly(client, tt.allowed)
			rep := runChecks(t, client, Options{Pre: true}, nil)
			if diff := cmp.Diff([]CategoryID{KubernetesAPI, KubernetesVersion, PreKubernetesSetup}, categoryIDs(rep)); diff != "" {
				t.Errorf("categories (-want +got):\n%s", diff)
			}
			got := failures(rep)
			for key, w := range tt.want {
				r := got[key]
				if r.Status != w.status || !strings.Contains(r.Error, w.err) || !strings.Contains(r.Hint, w.hint) {
					t.Errorf("%s:\n got %s %q\n  hint %q\nwant %s containing %q, hint containing %q", key, r.Status, r.Error, r.Hint, w.status, w.err, w.hint)
				}
				delete(got, key)
			}
			for key, r := range got {
				t.Errorf("unexpected %s %s: %s", r.Status, key, r.Error)
			}
			if rep.Success != (len(tt.want) == 0) {
				t.Errorf("Success = %v", rep.Success)
			}
		})
	}
}

// TestBrokenInstallOutput pins the whole basic output of an install with an
// expired issuer, a wrong webhook caBundle and no controller Deployment.
func TestBrokenInstallOutput(t *testing.T) {
	certs := healthyCerts(t)
	certs.Issuer = makeCert(t, certSpec{cn: "identity.conduit.cluster.local", notBefore: testNow.Add(-days(400)), notAfter: testNow.Add(-days(35)), ca: true}, certs.Anchor)
	certs.BundlePEM = makeCert(t, certSpec{cn: "stale-ca", notBefore: testNow.Add(-days(1)), notAfter: testNow.Add(days(300)), ca: true}, nil).CertPEM
	client := newFakeClient(t, "v1.37.2", dropObject(installYAML(t, certs), "kind: Deployment"))
	rep := runChecks(t, client, Options{}, nil)
	var b strings.Builder
	PrintBasic(&b, rep, false, false)
	golden(t, "check_broken.golden", b.String())
}

// dropObject removes the YAML document containing marker.
func dropObject(y, marker string) string {
	docs := strings.Split(y, "\n---\n")
	var keep []string
	for _, d := range docs {
		if !strings.Contains(d, marker) {
			keep = append(keep, d)
		}
	}
	return strings.Join(keep, "\n---\n")
}

// replaceSecretKey sets key of Secret name to value.
func replaceSecretKey(y, name, key, value string) string {
	docs := strings.Split(y, "\n---\n")
	for i, d := range docs {
		if !strings.Contains(d, "kind: Secret") || !strings.Contains(d, "name: "+name+"\n") {
			continue
		}
		lines := strings.Split(d, "\n")
		for j, l := range lines {
			if strings.HasPrefix(l, "  "+key+": ") {
				lines[j] = "  " + key + ": " + b64(value)
			}
		}
		docs[i] = strings.Join(lines, "\n")
	}
	return strings.Join(docs, "\n---\n")
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestHintsNameANonDefaultNamespace(t *testing.T) {
	client := newFakeClient(t, "v1.37.2", "apiVersion: v1\nkind: Namespace\nmetadata: {name: mesh}\n")
	rep := runChecks(t, client, Options{ControlPlaneNamespace: "mesh", ProgName: "kubectl conduit"}, nil)
	got := failures(rep)["conduit-config/control plane ConfigMap conduit-config exists"]
	if !strings.Contains(got.Hint, "`kubectl conduit install -L mesh`") || !strings.Contains(got.Hint, "`kubectl conduit upgrade -L mesh`") {
		t.Errorf("hint does not name the namespace: %q", got.Hint)
	}
	allowOnly(client, nil)
	rep = runChecks(t, client, Options{ControlPlaneNamespace: "mesh", Pre: true}, nil)
	got = failures(rep)["pre-kubernetes-setup/control plane namespace does not already exist"]
	if !strings.Contains(got.Hint, "`conduit check -L mesh`") || !strings.Contains(got.Hint, "`conduit uninstall -L mesh`") {
		t.Errorf("hint does not name the namespace: %q", got.Hint)
	}
}

func TestControllerHealthCheck(t *testing.T) {
	client := newFakeClient(t, "v1.37.2", installYAML(t, healthyCerts(t)))
	key := "control-plane/controller API answers health checks"
	if _, ok := outcome(runChecks(t, client, Options{}, nil))[key]; ok {
		t.Errorf("%q ran without a controller address", key)
	}
	serving := Options{ControllerAddr: "127.0.0.1:8086", ControllerHealth: func(context.Context) error { return nil }}
	if got := outcome(runChecks(t, client, serving, nil))[key]; got != StatusSuccess {
		t.Errorf("%s = %q with a serving controller", key, got)
	}
	down := Options{ControllerAddr: "127.0.0.1:8086", ControllerHealth: func(context.Context) error { return fmt.Errorf("connection refused") }}
	r := failures(runChecks(t, client, down, nil))[key]
	if r.Error != "controller at 127.0.0.1:8086: connection refused" || !strings.Contains(r.Hint, "--controller-addr") {
		t.Errorf("got %+v", r)
	}
}

// TestEveryCheckHasAHint: whatever makes a check fail (even an API error
// the check did not foresee), the user gets a hint.
func TestEveryCheckHasAHint(t *testing.T) {
	for _, opts := range []Options{{Pre: true}, {Proxy: true, DataPlaneNamespace: "app", ControllerHealth: func(context.Context) error { return nil }}} {
		for _, c := range Categories(opts) {
			for _, ch := range c.Checkers {
				if strings.TrimSpace(ch.Hint) == "" {
					t.Errorf("%s / %s has no hint", c.ID, ch.Description)
				}
			}
		}
	}
}
