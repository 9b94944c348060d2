package cmd

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/kubernetes/scheme"
	k8stesting "k8s.io/client-go/testing"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

var updateGolden = flag.Bool("update", false, "rewrite the golden files under testdata/")

// goldenFile compares got with testdata/name, or rewrites it with -update.
func goldenFile(t *testing.T, name, got string) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *updateGolden {
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

// servedResources is a fake API server's discovery of the resources it
// serves.
type servedResources []schema.GroupVersionResource

func (s servedResources) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	l := &metav1.APIResourceList{GroupVersion: gv}
	for _, gvr := range s {
		if gvr.GroupVersion().String() == gv {
			l.APIResources = append(l.APIResources, metav1.APIResource{Name: gvr.Resource, Namespaced: true})
		}
	}
	if len(l.APIResources) == 0 {
		return nil, apierrors.NewNotFound(schema.GroupResource{Group: gv}, "")
	}
	return l, nil
}

// authzCluster is a fake cluster holding the YAML documents: the policy
// resources in the dynamic client, everything else in the typed one.
// served lists the resources discovery reports (nil: all of them).
func authzCluster(t *testing.T, served servedResources, docs ...string) authzClients {
	t.Helper()
	var typed, dyn []runtime.Object
	for _, d := range docs {
		for _, y := range strings.Split(d, "\n---\n") {
			if strings.TrimSpace(y) == "" {
				continue
			}
			m := map[string]any{}
			if err := yaml.Unmarshal([]byte(y), &m); err != nil {
				t.Fatalf("test YAML: %v\n%s", err, y)
			}
			u := &unstructured.Unstructured{Object: m}
			if g := u.GroupVersionKind().Group; g == policy.Group || g == policy.GatewayGroup {
				dyn = append(dyn, u)
				continue
			}
			obj, _, err := scheme.Codecs.UniversalDeserializer().Decode([]byte(y), nil, nil)
			if err != nil {
				t.Fatalf("decoding test object: %v\n%s", err, y)
			}
			typed = append(typed, obj)
		}
	}
	if served == nil {
		served = policyResources
	}
	listKinds := map[schema.GroupVersionResource]string{
		policy.ServersResource:                "ServerList",
		policy.AuthorizationPoliciesResource:  "AuthorizationPolicyList",
		policy.MeshTLSAuthenticationsResource: "MeshTLSAuthenticationList",
		policy.NetworkAuthenticationsResource: "NetworkAuthenticationList",
		policy.HTTPRoutesResource:             "HTTPRouteList",
		policy.GRPCRoutesResource:             "GRPCRouteList",
	}
	return authzClients{
		kube:      fake.NewClientset(typed...),
		dynamic:   dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, dyn...),
		discovery: served,
	}
}

// controlPlane is an installed controller whose flags set the trust
// domain, the default policy and the cluster networks.
const controlPlane = `apiVersion: apps/v1
kind: Deployment
metadata: {name: conduit-controller, namespace: conduit}
spec:
  selector: {matchLabels: {app: conduit}}
  template:
    metadata: {labels: {app: conduit}}
    spec:
      containers:
      - name: controller
        image: controller
        args: [--grpc-addr=:8086, --trust-domain=example.org, --default-inbound-policy, cluster-authenticated, '--cluster-networks=10.0.0.0/8,fd00::/8']
`

// shop is a namespace with two Deployments: web (a rollout in progress:
// two pods of the new template, which annotates the default policy deny,
// one of the old) and worker (unmeshed, no ports); a Server with an
// HTTPRoute on web's named port, another on a port web does not declare,
// and policies with their authentications, one of them missing.
var shop = `apiVersion: v1
kind: Namespace
metadata: {name: shop}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, image: web}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: worker, namespace: shop}
spec:
  selector: {matchLabels: {app: worker}}
  template:
    metadata: {labels: {app: worker}}
    spec: {containers: [{name: worker, image: worker}]}
` + webPodYAML + `
---
apiVersion: v1
kind: Pod
metadata:
  name: worker-6b7c-q2w
  namespace: shop
  labels: {app: worker, pod-template-hash: 6b7c}
spec: {containers: [{name: worker, image: worker}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: web-5d8f-done
  namespace: shop
  labels: {app: web, pod-template-hash: 5d8f}
spec: {containers: [{name: web, image: web}]}
status: {phase: Succeeded}
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-http, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-metrics, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  port: 9990
  proxyProtocol: opaque
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: web-api, namespace: shop}
spec:
  parentRefs: [{group: policy.conduit.io, kind: Server, name: web-http}]
  rules:
  - matches:
    - path: {type: PathPrefix, value: /api}
      method: GET
    - path: {type: Exact, value: /login}
---
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: frontend, namespace: shop}
spec:
  identityRefs:
  - {kind: ServiceAccount, name: frontend}
  - {kind: Namespace, name: ops}
---
apiVersion: policy.conduit.io/v1beta1
kind: NetworkAuthentication
metadata: {name: scrapers, namespace: shop}
spec:
  networks: [{cidr: 10.0.0.0/8, except: [10.9.0.0/16]}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-frontend, namespace: shop}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-http}
  requiredAuthenticationRefs: [{group: policy.conduit.io, kind: MeshTLSAuthentication, name: frontend}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: api-admin, namespace: shop}
spec:
  targetRef: {group: gateway.networking.k8s.io, kind: HTTPRoute, name: web-api}
  requiredAuthenticationRefs: [{kind: ServiceAccount, name: admin}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-legacy, namespace: shop}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-http}
  requiredAuthenticationRefs: [{group: policy.conduit.io, kind: MeshTLSAuthentication, name: legacy}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: metrics, namespace: shop}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-metrics}
  requiredAuthenticationRefs: [{group: policy.conduit.io, kind: NetworkAuthentication, name: scrapers}]
`

// webPodYAML are web's pods: meshed, port http (8080) and admin (9090)
// with a readiness probe on the latter.
var webPodYAML = webPod("web-5d8f-a1", "5d8f", "deny") + webPod("web-5d8f-b2", "5d8f", "deny") + webPod("web-7c4e-c3", "7c4e", "")

func webPod(name, hash, defaultPolicy string) string {
	annotations := "{}"
	if defaultPolicy != "" {
		annotations = "{config.conduit.io/default-inbound-policy: " + defaultPolicy + "}"
	}
	return `
---
apiVersion: v1
kind: Pod
metadata:
  name: ` + name + `
  namespace: shop
  labels: {app: web, pod-template-hash: ` + hash + `}
  annotations: ` + annotations + `
spec:
  initContainers:
  - {name: conduit-proxy, image: proxy, restartPolicy: Always, ports: [{name: conduit-proxy, containerPort: 4143}, {name: conduit-admin, containerPort: 4191}]}
  containers:
  - name: web
    image: web
    ports: [{name: http, containerPort: 8080}, {name: admin, containerPort: 9090}, {name: dns, containerPort: 5353, protocol: UDP}]
    readinessProbe: {httpGet: {path: /ready, port: admin}}
status: {phase: Running}
`
}

func authzRun(t *testing.T, c authzClients, o authzOptions) (stdout, stderr string, err error) {
	t.Helper()
	if o.namespace == "" {
		o.namespace = "shop"
	}
	if o.cpNamespace == "" {
		o.cpNamespace = "conduit"
	}
	if o.output == "" {
		o.output = "table"
	}
	if o.timeout == 0 {
		o.timeout = 30 * time.Second
	}
	o.progName = "conduit"
	var out, errOut bytes.Buffer
	err = runAuthz(context.Background(), o, IOStreams{Out: &out, ErrOut: &errOut}, c)
	return out.String(), errOut.String(), err
}

func TestAuthzTable(t *testing.T) {
	c := authzCluster(t, nil, controlPlane, shop)
	out, errOut, err := authzRun(t, c, authzOptions{target: targetArg{typ: kindDeployment}})
	if err != nil {
		t.Fatal(err)
	}
	goldenFile(t, "authz_table.golden", out)
	wantNotes := "Ignored authorizationpolicy shop/web-legacy: MeshTLSAuthentication shop/legacy does not exist.\n"
	if errOut != wantNotes {
		t.Errorf("stderr:\n%s\nwant:\n%s", errOut, wantNotes)
	}
}

func TestAuthzJSON(t *testing.T) {
	c := authzCluster(t, nil, controlPlane, shop)
	for _, format := range []string{"json", "yaml"} {
		out, _, err := authzRun(t, c, authzOptions{target: targetArg{typ: kindDeployment, name: "web"}, output: format})
		if err != nil {
			t.Fatal(err)
		}
		var entries []authzEntry
		if err := yaml.Unmarshal([]byte(out), &entries); err != nil {
			t.Fatalf("-o %s: %v\n%s", format, err, out)
		}
		if len(entries) != 2 {
			t.Fatalf("-o %s: %d entries, want one per template:\n%s", format, len(entries), out)
		}
		e := entries[0]
		if e.Resource != "deployment/web" || e.Pod != "web-5d8f-a1" || e.Template != "pod-template-hash=5d8f" ||
			!cmp.Equal(e.Pods, []string{"web-5d8f-a1", "web-5d8f-b2"}) || !e.Meshed {
			t.Errorf("-o %s: entry %+v", format, e)
		}
		var ports []uint32
		for _, p := range e.Ports {
			ports = append(ports, p.Port)
		}
		if !cmp.Equal(ports, []uint32{8080, 9090, 9990}) {
			t.Errorf("-o %s: ports %v, want the declared TCP ports and the Server's", format, ports)
		}
		http := e.Ports[0]
		want := authzPort{
			Port: 8080, Server: authzRef{Kind: "server", Name: "web-http", Namespace: "shop"}, Protocol: "HTTP/1", FailClosed: true,
			Authorizations: []authzRule{{
				authzRef:   authzRef{Kind: "authorizationpolicy", Name: "web-frontend", Namespace: "shop"},
				Allowed:    "any serviceaccount of ops, serviceaccount shop/frontend",
				Identities: []string{"spiffe://example.org/ns/shop/sa/frontend"}, ServiceAccounts: []string{"shop/frontend"},
				IdentityPrefixes: []string{"spiffe://example.org/ns/ops/sa/"}, Namespaces: []string{"ops"},
			}},
			Routes: []authzRoute{{
				authzRef: authzRef{Kind: "httproute", Name: "web-api", Namespace: "shop"},
				Matches:  []string{"GET /api/*", "/login"},
				Authorizations: []authzRule{{
					authzRef: authzRef{Kind: "authorizationpolicy", Name: "api-admin", Namespace: "shop"},
					Allowed:  "serviceaccount shop/admin", Identities: []string{"spiffe://example.org/ns/shop/sa/admin"}, ServiceAccounts: []string{"shop/admin"},
				}},
			}},
		}
		if diff := cmp.Diff(want, http, cmp.AllowUnexported(authzRule{}, authzRoute{})); diff != "" {
			t.Errorf("-o %s: port 8080 (-want +got):\n%s", format, diff)
		}
		if p := e.Ports[1]; p.Server.String() != "default:deny" || !p.FailClosed || len(p.Authorizations) != 0 ||
			len(p.Routes) != 1 || p.Routes[0].Kind != "probe" || !cmp.Equal(p.Routes[0].Matches, []string{"GET /ready"}) {
			t.Errorf("-o %s: port 9090 (the pods' annotation deny, probes admitted) %+v", format, p)
		}
		if p := entries[1].Ports[1]; p.Server.String() != "default:cluster-authenticated" ||
			p.Authorizations[0].Allowed != "any authenticated from 10.0.0.0/8, fd00::/8" {
			t.Errorf("-o %s: port 9090 of the old template (the controller's default, its networks) %+v", format, p)
		}
	}
}

func TestAuthzBarePodsAndKinds(t *testing.T) {
	c := authzCluster(t, nil, controlPlane, shop)
	out, _, err := authzRun(t, c, authzOptions{target: targetArg{typ: kindPod, name: "web-7c4e-c3"}, output: "json"})
	if err != nil {
		t.Fatal(err)
	}
	var entries []authzEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 || entries[0].Resource != "pod/web-7c4e-c3" || entries[0].Template != "" {
		t.Errorf("pod/web-7c4e-c3: %+v", entries)
	}
	// Every pod of the namespace, each on its own; a finished one left out.
	out, _, err = authzRun(t, c, authzOptions{target: targetArg{typ: kindPod}, output: "json"})
	if err != nil {
		t.Fatal(err)
	}
	entries = nil
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatal(err)
	}
	var pods []string
	for _, e := range entries {
		pods = append(pods, e.Pod)
	}
	if want := []string{"web-5d8f-a1", "web-5d8f-b2", "web-7c4e-c3", "worker-6b7c-q2w"}; !cmp.Equal(pods, want) {
		t.Errorf("pods %v, want %v", pods, want)
	}
}

// TestAuthzWithoutControlPlane: without an install the controller's
// defaults apply, and stderr says so.
func TestAuthzWithoutControlPlane(t *testing.T) {
	c := authzCluster(t, nil, shop)
	out, errOut, err := authzRun(t, c, authzOptions{target: targetArg{typ: kindDeployment, name: "web"}, output: "json"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "Note: no Conduit control plane in namespace conduit (no Deployment conduit-controller nor ConfigMap conduit-config): policies are computed with the controller's defaults (default inbound policy all-unauthenticated, trust domain cluster.local)") {
		t.Errorf("stderr does not say the defaults apply:\n%s", errOut)
	}
	var entries []authzEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatal(err)
	}
	if p := entries[1].Ports[1]; p.Server.String() != "default:all-unauthenticated" || p.FailClosed || !p.Authorizations[0].Unauthenticated {
		t.Errorf("port 9090 of the old template: %+v", p)
	}
	if sa := entries[0].Ports[0].Authorizations[0].ServiceAccounts; !cmp.Equal(sa, []string{"shop/frontend"}) {
		t.Errorf("service accounts of the default trust domain: %v", sa)
	}
}

// TestAuthzInstalledValues: without the controller Deployment the values
// recorded in conduit-config give the settings.
func TestAuthzInstalledValues(t *testing.T) {
	cm := `apiVersion: v1
kind: ConfigMap
metadata: {name: conduit-config, namespace: conduit}
data:
  values: |
    identityTrustDomain: mesh.example
    policy:
      defaultInboundPolicy: all-authenticated
`
	c := authzCluster(t, nil, cm)
	got, err := installedMeshConfig(context.Background(), c.kube, "conduit")
	if err != nil {
		t.Fatal(err)
	}
	if got.trustDomain != "mesh.example" || got.defaultPolicy != "all-authenticated" || got.clusterNetworks != nil {
		t.Errorf("got %+v", got)
	}
	cl, err := got.cluster()
	if err != nil || len(cl.ClusterNetworks) != len(policy.DefaultClusterNetworks) {
		t.Errorf("cluster %+v, %v: want the default networks", cl, err)
	}
	bad := meshConfig{defaultPolicy: "allow", source: "the flags of Deployment conduit/conduit-controller"}
	if _, err := bad.cluster(); err == nil || !strings.Contains(err.Error(), `the controller's default inbound policy (from the flags of Deployment conduit/conduit-controller): "allow" is not a default inbound policy`) {
		t.Errorf("a bad installed policy: %v", err)
	}
}

func TestAuthzWithoutPolicyResources(t *testing.T) {
	c := authzCluster(t, servedResources{}, controlPlane, shop)
	out, errOut, err := authzRun(t, c, authzOptions{target: targetArg{typ: kindDeployment, name: "web"}, output: "json"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(errOut, "The policy.conduit.io resources are not installed in this cluster") {
		t.Errorf("stderr:\n%s", errOut)
	}
	var entries []authzEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil {
		t.Fatal(err)
	}
	if p := entries[0].Ports[0]; p.Server.String() != "default:deny" {
		t.Errorf("port 8080 without Servers: %+v", p)
	}
}

func TestAuthzNoPods(t *testing.T) {
	c := authzCluster(t, nil, controlPlane, `apiVersion: apps/v1
kind: Deployment
metadata: {name: idle, namespace: shop}
spec:
  selector: {matchLabels: {app: idle}}
  template:
    metadata: {labels: {app: idle}}
    spec: {containers: [{name: idle, image: idle}]}
`)
	out, errOut, err := authzRun(t, c, authzOptions{target: targetArg{typ: kindDeployment, name: "idle"}})
	if err != nil || out != "" || errOut != "No running pods of deployment/idle in namespace shop.\n" {
		t.Errorf("err %v, stdout %q, stderr %q", err, out, errOut)
	}
	out, _, err = authzRun(t, c, authzOptions{target: targetArg{typ: kindStatefulSet}, output: "json"})
	if err != nil || out != "[]\n" {
		t.Errorf("-o json of nothing: err %v, stdout %q", err, out)
	}
}

// TestAuthzBadInput: one line naming the input, nothing on stdout.
func TestAuthzBadInput(t *testing.T) {
	t.Setenv("KUBECONFIG", "/nonexistent")
	for _, tt := range []struct {
		args []string
		want string
	}{
		{[]string{"authz"}, "missing resource: give TYPE[/NAME], e.g. deploy/web"},
		{[]string{"authz", "svc/web"}, `resource "svc/web": "svc" is not a workload type; use TYPE[/NAME] with TYPE one of deployment (deploy), statefulset (sts), daemonset (ds), replicaset (rs), job, pod (po)`},
		{[]string{"authz", "deploy/web/x"}, `resource "deploy/web/x": "deploy" is not a workload type`},
		{[]string{"authz", "deploy", "web", "extra"}, `too many arguments "deploy web extra": give one TYPE[/NAME]`},
		{[]string{"authz", "deploy/web", "-o", "wide"}, `-o "wide" is not an output format of this command: use table, json or yaml`},
		{[]string{"authz", "deploy/web", "--timeout", "0s"}, "--timeout 0s: give a positive duration such as 1m"},
	} {
		out, _, err := runCLI(t, tt.args...)
		if err == nil || !strings.Contains(err.Error(), tt.want) || strings.Contains(err.Error(), "\n") {
			t.Errorf("%q: got %v, want one line with %q", tt.args, err, tt.want)
		}
		if out != "" {
			t.Errorf("%q: stdout %q, want nothing", tt.args, out)
		}
	}

	c := authzCluster(t, nil, controlPlane, shop)
	for _, tt := range []struct {
		target targetArg
		want   string
	}{
		{targetArg{typ: kindDeployment, name: "nope"}, "deployment \"nope\" not found in namespace \"shop\": list them with `kubectl get deployments -n shop`, or name the namespace with -n"},
		{targetArg{typ: kindPod, name: "nope"}, "pod \"nope\" not found in namespace \"shop\": list them with `kubectl get pods -n shop`, or name the namespace with -n"},
	} {
		out, _, err := authzRun(t, c, authzOptions{target: tt.target})
		if err == nil || err.Error() != tt.want || out != "" {
			t.Errorf("%s: err %v, stdout %q; want %q", tt.target, err, out, tt.want)
		}
	}
}

func TestAuthzForbidden(t *testing.T) {
	c := authzCluster(t, nil, controlPlane, shop)
	c.kube.(*fake.Clientset).PrependReactor("list", "pods", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetNamespace() != "" {
			return false, nil, nil
		}
		return true, nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", nil)
	})
	out, _, err := authzRun(t, c, authzOptions{target: targetArg{typ: kindDeployment, name: "web"}})
	if err == nil || !strings.HasPrefix(err.Error(), "you may not list pods in every namespace, which conduit authz reads as the controller does: ask your cluster admin for list and watch on pods, namespaces and the policy.conduit.io resources") || out != "" {
		t.Errorf("err %v, stdout %q", err, out)
	}
}

func TestMeshConfigFlags(t *testing.T) {
	var c meshConfig
	c.fromFlags([]string{"--trust-domain", "a.example", "--version", "--default-inbound-policy=deny", "--cluster-networks= 10.0.0.0/8 ,,fd00::/8"})
	want := meshConfig{trustDomain: "a.example", defaultPolicy: "deny", clusterNetworks: []string{"10.0.0.0/8", "fd00::/8"}}
	if diff := cmp.Diff(want, c, cmp.AllowUnexported(meshConfig{})); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestParseWorkload(t *testing.T) {
	for in, want := range map[string]targetArg{
		"deploy/web":       {kindDeployment, "web"},
		"Deployments/web":  {kindDeployment, "web"},
		"sts/db":           {kindStatefulSet, "db"},
		"ds":               {kindDaemonSet, ""},
		"rs/web-5d8f":      {kindReplicaSet, "web-5d8f"},
		"job/migrate":      {kindJob, "migrate"},
		"po/web-5d8f-a1":   {kindPod, "web-5d8f-a1"},
		"pods":             {kindPod, ""},
		"statefulsets/db2": {kindStatefulSet, "db2"},
	} {
		got, err := parseWorkload(in)
		if err != nil || got != want {
			t.Errorf("%s: got %+v, %v; want %+v", in, got, err, want)
		}
	}
}

func TestAuthzCompletion(t *testing.T) {
	t.Setenv("KUBECONFIG", writeKubeconfig(t, t.TempDir(), "prod", "https://127.0.0.1:1", "prod"))
	client := completionCluster()
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"authz", ""}, []string{"deployment", "statefulset", "daemonset", "replicaset", "job", "pod"}},
		{[]string{"au"}, []string{"authz"}},
		{[]string{"authz", "-n", "shop", "deploy/"}, []string{"deploy/web", "deploy/worker"}},
		{[]string{"authz", "-n", "shop", "po", "w"}, []string{"web-6d4b-x7k"}},
		{[]string{"authz", "-o", ""}, []string{"table", "json", "yaml"}},
	} {
		got, directive := completeWith(t, client, tt.args...)
		if diff := cmp.Diff(tt.want, got); diff != "" || directive != ":4" {
			t.Errorf("__complete %q: directive %s, candidates (-want +got):\n%s", tt.args, directive, diff)
		}
	}
}

// flakyDiscovery answers its first calls, then fails.
type flakyDiscovery struct {
	servedResources
	answers int
}

func (d *flakyDiscovery) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	if d.answers <= 0 {
		return nil, apierrors.NewServiceUnavailable("discovery is down")
	}
	d.answers--
	return d.servedResources.ServerResourcesForGroupVersion(gv)
}

// TestAuthzTimeout: an index that cannot sync ends the command at
// --timeout with one line.
func TestAuthzTimeout(t *testing.T) {
	c := authzCluster(t, nil, controlPlane, shop)
	c.discovery = &flakyDiscovery{servedResources: policyResources, answers: 2} // checkReadable's two group versions
	start := time.Now()
	out, _, err := authzRun(t, c, authzOptions{target: targetArg{typ: kindDeployment, name: "web"}, timeout: 500 * time.Millisecond})
	if err == nil || err.Error() != "reading the cluster took longer than --timeout 500ms; try again with a longer --timeout" || out != "" {
		t.Errorf("err %v, stdout %q", err, out)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("took %s", took)
	}
}

// TestAuthzTablePassableRoutes: under the table, a port whose routes a
// connection can pass is named — one that detects its protocol, one that
// is opaque — and ports that declare HTTP, or whose only routes are the
// probes, are not.
func TestAuthzTablePassableRoutes(t *testing.T) {
	route := func(kind, name string) authzRoute {
		return authzRoute{authzRef: authzRef{Kind: kind, Name: name, Namespace: "shop"}}
	}
	server := authzRef{Kind: "server", Name: "web", Namespace: "shop"}
	entry := authzEntry{Namespace: "shop", Resource: "pod/web-0", Pod: "web-0", Pods: []string{"web-0"}, Meshed: true, Ports: []authzPort{
		{Port: 8080, Server: server, Protocol: "detect", Routes: []authzRoute{route("probe", "probe"), route("httproute", "web-api"), route("grpcroute", "web-grpc")}},
		{Port: 8081, Server: authzRef{Kind: "server", Name: "api", Namespace: "shop"}, Protocol: "HTTP/1", Routes: []authzRoute{route("httproute", "api")}},
		{Port: 9000, Server: authzRef{Kind: "server", Name: "raw", Namespace: "shop"}, Protocol: "opaque", Routes: []authzRoute{route("grpcroute", "raw")}},
		{Port: 9090, Server: authzRef{Kind: "default", Name: "all-unauthenticated"}, Protocol: "detect", Routes: []authzRoute{route("probe", "probe")}},
	}}
	var b strings.Builder
	if err := writeAuthzTable(&b, []authzEntry{entry}); err != nil {
		t.Fatal(err)
	}
	var notes []string
	for _, l := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(l, "Port ") {
			notes = append(notes, l)
		}
	}
	want := []string{
		"Port 8080 detects its protocol: a connection that is not HTTP to detection passes its routes (httproute/web-api, grpcroute/web-grpc) under the port's authorizations; declare Server web's proxyProtocol.",
		"Port 9000 is opaque: its routes (grpcroute/raw) never apply.",
	}
	if diff := cmp.Diff(want, notes); diff != "" {
		t.Errorf("notes under the table (-want +got):\n%s\ntable:\n%s", diff, b.String())
	}
}
