package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/conduitmesh/conduit/internal/testenv"
	"github.com/conduitmesh/conduit/pkg/controller/stats"
	ctltap "github.com/conduitmesh/conduit/pkg/controller/tap"
	"github.com/conduitmesh/conduit/pkg/inject"
)

// TestTapAuthorization checks the controller's tap authorization against a
// real API server: a ServiceAccount token is reviewed (TokenReview) and its
// RBAC permission to tap is checked per namespace (SubjectAccessReview).
func TestTapAuthorization(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testCluster
	allowed, denied := "obs-tap-allowed", "obs-tap-denied"
	for _, ns := range []string{allowed, denied} {
		if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	}
	path, err := c.ServiceAccountKubeconfig(ctx, allowed, "tapper", 0)
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := clientcmd.LoadFromFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var token string
	for _, a := range cfg.AuthInfos {
		token = a.Token
	}
	if token == "" {
		t.Fatalf("no token in %s", path)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "conduit-tap", Namespace: allowed},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{ctltap.TapGroup}, Resources: []string{ctltap.TapResource}, Verbs: []string{ctltap.TapVerb}}},
	}
	if _, err := c.Client.RbacV1().Roles(allowed).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	binding := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "tapper-can-tap", Namespace: allowed},
		RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "Role", Name: "conduit-tap"},
		Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Name: "tapper", Namespace: allowed}},
	}
	if _, err := c.Client.RbacV1().RoleBindings(allowed).Create(ctx, binding, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	az := ctltap.KubeAuthorizer{Client: c.Client}
	web := func(ns string) stats.Ref { return stats.Ref{Namespace: ns, Type: stats.TypeDeployment, Name: "web"} }
	// The RBAC authorizer sees new bindings through its informers.
	testenv.Eventually(t, 30*time.Second, 200*time.Millisecond, func() error {
		if err := az.Authorize(ctx, ctltap.Caller{Token: token}, web(allowed)); err != nil {
			return fmt.Errorf("tapper in %s: %w", allowed, err)
		}
		return nil
	})
	err = az.Authorize(ctx, ctltap.Caller{Token: token}, web(denied))
	want := `forbidden: user "system:serviceaccount:obs-tap-allowed:tapper" cannot tap deployment/web in namespace obs-tap-denied`
	if err == nil || !strings.HasPrefix(err.Error(), want) {
		t.Errorf("tapper in %s: %v\nwant %s…", denied, err, want)
	}
	if err := az.Authorize(ctx, ctltap.Caller{Token: "not-a-token"}, web(allowed)); err == nil || !strings.Contains(err.Error(), "forbidden") {
		t.Errorf("a bogus token: %v", err)
	}
	if err := az.Authorize(ctx, ctltap.Caller{}, web(allowed)); err == nil {
		t.Errorf("a caller without a token from the network was admitted")
	}
}

// TestStatsKubePods lists meshed pods from informers on a real API server:
// a Deployment's pod (run by kwok) is found with its deployment, service,
// identity and admin address.
func TestStatsKubePods(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c := testCluster
	ns := "obs-stats-pods"
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Client.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{}) })
	one := int32(1)
	labels := map[string]string{"app": "web"}
	podLabels := map[string]string{"app": "web", stats.ProxyVersionLabel: "test"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: &one,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: podLabels},
				Spec: corev1.PodSpec{ServiceAccountName: "default", NodeName: "kwok-node-0",
					// kwok reports both containers running: the pod runs a proxy.
					Containers: []corev1.Container{{Name: "app", Image: "example/web"},
						{Name: inject.ProxyContainerName, Image: "example/proxy"}}},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "web-svc", Namespace: ns},
		Spec: corev1.ServiceSpec{Selector: labels, Ports: []corev1.ServicePort{{Port: 80}}}}
	if _, err := c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	factory := informers.NewSharedInformerFactoryWithOptions(c.Client, 0, informers.WithNamespace(ns))
	kp := stats.KubePods{Pods: factory.Core().V1().Pods().Lister(), Services: factory.Core().V1().Services().Lister()}
	stop := make(chan struct{})
	factory.Start(stop)
	defer func() { close(stop); factory.Shutdown() }()
	factory.WaitForCacheSync(ctx.Done())

	var got []stats.Pod
	for {
		pods, err := kp.List(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(pods) == 1 && pods[0].Running && pods[0].Meshed() {
			got = pods
			break
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no running meshed pod listed: %+v", pods)
		case <-time.After(200 * time.Millisecond):
		}
	}
	p := got[0]
	if p.Labels["deployment"] != "web" || p.Labels["service"] != "web-svc" || p.Identity != "spiffe://cluster.local/ns/"+ns+"/sa/default" ||
		!strings.HasSuffix(p.AdminAddr, ":4191") {
		t.Errorf("pod = %+v", p)
	}
	if !stats.Owns(p, stats.Ref{Namespace: ns, Type: stats.TypeDeployment, Name: "web"}) {
		t.Errorf("deploy/web does not own %s", p.Name)
	}
}
