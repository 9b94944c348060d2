package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/internal/testenv"
	"github.com/conduitmesh/conduit/pkg/controller/policy"
)

// authzPolicy is the README's example: the Server of web's http port and
// the policy that lets the frontend ServiceAccount call it.
const authzPolicy = `apiVersion: policy.conduit.io/v1beta1
kind: Server
metadata: {name: web-http, namespace: shop}
spec:
  podSelector: {matchLabels: {app: web}}
  port: http
  proxyProtocol: HTTP/1
---
apiVersion: policy.conduit.io/v1beta1
kind: MeshTLSAuthentication
metadata: {name: frontend, namespace: shop}
spec:
  identityRefs: [{kind: ServiceAccount, name: frontend}]
---
apiVersion: policy.conduit.io/v1beta1
kind: AuthorizationPolicy
metadata: {name: web-from-frontend, namespace: shop}
spec:
  targetRef: {group: policy.conduit.io, kind: Server, name: web-http}
  requiredAuthenticationRefs:
  - {group: policy.conduit.io, kind: MeshTLSAuthentication, name: frontend}
`

// TestAuthz: `conduit authz deploy/web -o json` against the real API server
// names the Server that selects the Deployment's port, the policy on it and
// the identity it admits, for the pods the Deployment's ReplicaSet made.
func TestAuthz(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	const ns = "shop"
	cli := buildBinary(t, "./cmd/conduit")
	applyPolicyCRDs(t)
	if err := testCluster.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}

	labels := map[string]string{"app": "web"}
	replicas := int32(2)
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec: corev1.PodSpec{Containers: []corev1.Container{
					{
						Name: "web", Image: "example.com/web:1",
						Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}, {Name: "admin", ContainerPort: 9090}},
					},
					// As the injector adds it; authz leaves its ports out.
					{
						Name: "conduit-proxy", Image: "ghcr.io/conduitmesh/conduit-proxy:dev",
						Ports: []corev1.ContainerPort{{Name: "conduit-proxy", ContainerPort: 4143}, {Name: "conduit-admin", ContainerPort: 4191}},
					},
				}},
			},
		},
	}
	if _, err := testCluster.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var pods []string
	testenv.Eventually(t, 2*time.Minute, 200*time.Millisecond, func() error {
		list, err := testCluster.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return err
		}
		pods = nil
		for _, p := range list.Items {
			if p.Status.Phase == corev1.PodRunning {
				pods = append(pods, p.Name)
			}
		}
		if len(pods) != int(replicas) {
			return fmt.Errorf("%d of %d pods of deploy/web running", len(pods), replicas)
		}
		return nil
	})
	slices.Sort(pods)

	dyn := dynamic.NewForConfigOrDie(testCluster.RESTConfig)
	for _, doc := range strings.Split(authzPolicy, "\n---\n") {
		m := map[string]any{}
		if err := yaml.Unmarshal([]byte(doc), &m); err != nil {
			t.Fatal(err)
		}
		u := &unstructured.Unstructured{Object: m}
		gvr := map[string]schema.GroupVersionResource{
			policy.KindServer:                policy.ServersResource,
			policy.KindMeshTLSAuthentication: policy.MeshTLSAuthenticationsResource,
			policy.KindAuthorizationPolicy:   policy.AuthorizationPoliciesResource,
		}[u.GetKind()]
		if _, err := dyn.Resource(gvr).Namespace(ns).Create(ctx, u, metav1.CreateOptions{}); err != nil {
			t.Fatalf("creating %s %s: %v", u.GetKind(), u.GetName(), err)
		}
	}

	// No control plane in -L: the controller's defaults, said on stderr.
	res := runBinary(t, cli, "", "authz", "deploy/web", "-n", ns, "-L", "authz-no-mesh", "-o", "json")
	if res.Code != 0 {
		t.Fatalf("conduit authz -o json: exit %d\nstdout:\n%s\nstderr:\n%s", res.Code, res.Stdout, res.Stderr)
	}
	if !strings.Contains(res.Stderr, "no Conduit control plane in namespace authz-no-mesh") {
		t.Errorf("stderr does not say the controller's defaults apply:\n%s", res.Stderr)
	}
	var entries []struct {
		Resource, Pod, Template string
		Pods                    []string
		Meshed                  bool
		Ports                   []struct {
			Port           uint32
			Server         struct{ Kind, Name, Namespace string }
			Protocol       string
			FailClosed     bool
			Authorizations []struct {
				Kind, Name, Allowed string
				Identities          []string
				ServiceAccounts     []string
			}
		}
	}
	if err := json.Unmarshal([]byte(res.Stdout), &entries); err != nil {
		t.Fatalf("conduit authz -o json printed no JSON (%v):\n%s", err, res.Stdout)
	}
	if len(entries) != 1 {
		t.Fatalf("%d entries, want one for the Deployment's one template:\n%s", len(entries), res.Stdout)
	}
	e := entries[0]
	if e.Resource != "deployment/web" || !strings.HasPrefix(e.Template, "pod-template-hash=") || !slices.Equal(e.Pods, pods) || !e.Meshed {
		t.Errorf("entry %s %s %v meshed %v, want deployment/web, its template and pods %v, meshed", e.Resource, e.Template, e.Pods, e.Meshed, pods)
	}
	if len(e.Ports) != 2 {
		t.Fatalf("ports %+v, want 8080 and 9090", e.Ports)
	}
	http, admin := e.Ports[0], e.Ports[1]
	if http.Port != 8080 || http.Server.Kind != "server" || http.Server.Name != "web-http" || http.Protocol != "HTTP/1" || !http.FailClosed {
		t.Errorf("port 8080: %+v, want Server web-http, HTTP/1, fail-closed", http)
	}
	wantID := "spiffe://cluster.local/ns/" + ns + "/sa/frontend"
	if len(http.Authorizations) != 1 || http.Authorizations[0].Name != "web-from-frontend" ||
		!slices.Equal(http.Authorizations[0].Identities, []string{wantID}) ||
		!slices.Equal(http.Authorizations[0].ServiceAccounts, []string{ns + "/frontend"}) {
		t.Errorf("port 8080's authorizations %+v, want web-from-frontend admitting %s", http.Authorizations, wantID)
	}
	if admin.Port != 9090 || admin.Server.Kind != "default" || admin.Server.Name != "all-unauthenticated" || admin.FailClosed {
		t.Errorf("port 9090: %+v, want the default all-unauthenticated", admin)
	}

	table := runBinary(t, cli, "", "authz", "deploy/web", "-n", ns, "-L", "authz-no-mesh")
	if table.Code != 0 || !strings.Contains(table.Stdout, "web-from-frontend") {
		t.Errorf("conduit authz: exit %d\nstdout:\n%s\nstderr:\n%s", table.Code, table.Stdout, table.Stderr)
	}
	t.Logf("conduit authz deploy/web -n %s:\n%s%s", ns, table.Stdout, table.Stderr)

	// Bad input: one line, nothing on stdout.
	bad := runBinary(t, cli, "", "authz", "deploy/nope", "-n", ns)
	if bad.Code == 0 || bad.Stdout != "" || strings.Count(strings.TrimSpace(bad.Stderr), "\n") != 0 ||
		!strings.Contains(bad.Stderr, `deployment "nope" not found in namespace "shop"`) {
		t.Errorf("deploy/nope: exit %d\nstdout:\n%s\nstderr:\n%s", bad.Code, bad.Stdout, bad.Stderr)
	}
}
