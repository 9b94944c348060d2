package cluster

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/conduitmesh/conduit/pkg/pki/pkitest"
)

// TestCluster starts one real control plane and proves what the other
// integration tests rely on: Deployments get Running+Ready pods (binder +
// kwok) that show up in EndpointSlices, limited users are really limited,
// and Stop leaves nothing behind.
func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real kube-apiserver")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	c, err := Start(ctx, Options{Log: tWriter{t}})
	if err != nil {
		t.Fatalf("Start: %v", err)
	}
	stopped := false
	defer func() {
		if !stopped {
			c.Stop() //nolint:errcheck // test already failed
		}
	}()

	t.Run("deployment pods become ready and get endpoints", func(t *testing.T) {
		testDeploymentBecomesReady(ctx, t, c)
	})
	t.Run("user kubeconfig is limited to its RBAC", func(t *testing.T) {
		path, err := c.UserKubeconfig("jane", "devs")
		if err != nil {
			t.Fatal(err)
		}
		testLimitedUser(ctx, t, c, path, rbacv1.Subject{Kind: rbacv1.UserKind, Name: "jane"})
	})
	t.Run("service account kubeconfig is limited to its RBAC", func(t *testing.T) {
		if err := c.CreateNamespace(ctx, "sa-test", nil); err != nil {
			t.Fatal(err)
		}
		path, err := c.ServiceAccountKubeconfig(ctx, "sa-test", "limited", 0)
		if err != nil {
			t.Fatal(err)
		}
		testLimitedUser(ctx, t, c, path, rbacv1.Subject{Kind: rbacv1.ServiceAccountKind, Name: "limited", Namespace: "sa-test"})

		// TokenReview (what the controller's Identity service does) accepts
		// the token and names the ServiceAccount.
		cfg, err := clientcmd.LoadFromFile(path)
		if err != nil {
			t.Fatal(err)
		}
		token := cfg.AuthInfos[cfg.Contexts[cfg.CurrentContext].AuthInfo].Token
		tr, err := c.Client.AuthenticationV1().TokenReviews().Create(ctx, &authenticationv1.TokenReview{Spec: authenticationv1.TokenReviewSpec{Token: token}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !tr.Status.Authenticated || tr.Status.User.Username != "system:serviceaccount:sa-test:limited" {
			t.Errorf("TokenReview of a TokenRequest token: %+v", tr.Status)
		}
	})

	t.Run("the API server's egress to the cluster network is refused", func(t *testing.T) {
		testEgressRefused(ctx, t, c)
	})

	pids := c.PIDs()
	dir := c.Dir
	stopped = true
	if err := c.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	for name, pid := range pids {
		if err := syscall.Kill(pid, 0); err == nil {
			t.Errorf("%s (pid %d) still running after Stop", name, pid)
		}
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("run dir %s still exists after Stop (err %v)", dir, err)
	}
}

func testDeploymentBecomesReady(ctx context.Context, t *testing.T, c *Cluster) {
	const ns = "harness"
	if err := c.CreateNamespace(ctx, ns, nil); err != nil {
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
				Spec: corev1.PodSpec{Containers: []corev1.Container{{
					Name: "web", Image: "example.com/web:1",
					Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
				}}},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: corev1.ServiceSpec{
			Selector: labels,
			Ports:    []corev1.ServicePort{{Name: "http", Port: 80, TargetPort: intstr.FromString("http")}},
		},
	}
	if _, err := c.Client.CoreV1().Services(ns).Create(ctx, svc, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	var pods []corev1.Pod
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, 2*time.Minute, true, func(ctx context.Context) (bool, error) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil || d.Status.ReadyReplicas != replicas {
			return false, nil
		}
		list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		if err != nil {
			return false, err
		}
		pods = list.Items
		return true, nil
	})
	if err != nil {
		t.Fatalf("deployment web never had %d ready replicas: %v", replicas, err)
	}
	want := map[string]bool{}
	for _, p := range pods {
		if p.Spec.NodeName != NodeName || p.Status.Phase != corev1.PodRunning || p.Status.PodIP == "" {
			t.Errorf("pod %s: node %q phase %s IP %q; want node %s, Running, an IP", p.Name, p.Spec.NodeName, p.Status.Phase, p.Status.PodIP, NodeName)
		}
		want[p.Status.PodIP] = true
	}

	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		slices, err := c.Client.DiscoveryV1().EndpointSlices(ns).List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=web"})
		if err != nil {
			return false, err
		}
		got := map[string]bool{}
		for _, s := range slices.Items {
			for _, e := range s.Endpoints {
				if e.Conditions.Ready != nil && *e.Conditions.Ready {
					for _, a := range e.Addresses {
						got[a] = true
					}
				}
			}
		}
		if len(got) != len(want) {
			return false, nil
		}
		for ip := range want {
			if !got[ip] {
				return false, nil
			}
		}
		return true, nil
	})
	if err != nil {
		t.Fatalf("EndpointSlices of service web never listed the ready pod IPs %v: %v", want, err)
	}
}

// testLimitedUser checks a kubeconfig can do nothing until subject is bound
// to a Role, and then exactly what the Role allows.
func testLimitedUser(ctx context.Context, t *testing.T, c *Cluster, kubeconfig string, subject rbacv1.Subject) {
	rc, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	client, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ns := "rbac-" + subject.Name
	if err := c.CreateNamespace(ctx, ns, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing configmaps without RBAC: got %v, want Forbidden", err)
	}
	role := &rbacv1.Role{
		ObjectMeta: metav1.ObjectMeta{Name: "cm-reader", Namespace: ns},
		Rules:      []rbacv1.PolicyRule{{APIGroups: []string{""}, Resources: []string{"configmaps"}, Verbs: []string{"list"}}},
	}
	if _, err := c.Client.RbacV1().Roles(ns).Create(ctx, role, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	rb := &rbacv1.RoleBinding{
		ObjectMeta: metav1.ObjectMeta{Name: "cm-reader", Namespace: ns},
		RoleRef:    rbacv1.RoleRef{APIGroup: rbacv1.GroupName, Kind: "Role", Name: "cm-reader"},
		Subjects:   []rbacv1.Subject{subject},
	}
	if _, err := c.Client.RbacV1().RoleBindings(ns).Create(ctx, rb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		_, err := client.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
		return err == nil, nil
	})
	if err != nil {
		t.Fatalf("listing configmaps never allowed after binding %v: %v", subject, err)
	}
	if _, err := client.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{}); !apierrors.IsForbidden(err) {
		t.Fatalf("listing secrets with a configmap-only role: got %v, want Forbidden", err)
	}
}

// tWriter sends the harness log to the test log.
type tWriter struct{ t *testing.T }

func (w tWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// testEgressRefused makes the API server call a webhook through a Service's
// ClusterIP, an address no one here owns: the egress guard refuses the
// connection (nothing is sent off the machine) and records it.
func testEgressRefused(ctx context.Context, t *testing.T, c *Cluster) {
	if err := c.CreateNamespace(ctx, "egress-test", map[string]string{"egress-test": "yes"}); err != nil {
		t.Fatal(err)
	}
	svc, err := c.Client.CoreV1().Services("egress-test").Create(ctx, &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "hook"},
		Spec:       corev1.ServiceSpec{Ports: []corev1.ServicePort{{Port: 443, TargetPort: intstr.FromInt32(8443)}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	fail, none := admissionregistrationv1.Fail, admissionregistrationv1.SideEffectClassNone
	port := int32(443)
	hook, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "egress-test"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name:                    "egress-test.conduit.io",
			AdmissionReviewVersions: []string{"v1"},
			SideEffects:             &none,
			FailurePolicy:           &fail,
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{Service: &admissionregistrationv1.ServiceReference{Namespace: "egress-test", Name: "hook", Port: &port}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"egress-test": "yes"}},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
		}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Delete(ctx, hook.Name, metav1.DeleteOptions{}) //nolint:errcheck // the cluster is stopped next
	pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "p"}, Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "a", Image: "b"}}}}
	// The API server may not have read the new webhook yet: retry until it
	// calls it.
	target := "CONNECT " + svc.Spec.ClusterIP + ":443"
	var createErr error
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		_, createErr = c.Client.CoreV1().Pods("egress-test").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		for _, r := range c.RefusedEgress() {
			if r == target {
				return true, nil
			}
		}
		return false, nil
	})
	if err != nil {
		t.Fatalf("the guard never saw %q (refused %v; last create: %v)", target, c.RefusedEgress(), createErr)
	}
	if createErr == nil || !strings.Contains(createErr.Error(), "failed calling webhook") {
		t.Errorf("creating a pod behind the unreachable webhook: %v; want the API server's failed call", createErr)
	}

	// Routed, the same Service reaches a webhook on loopback, which labels
	// the pod.
	ca := pkitest.Anchor(t, "hook.egress-test.svc", func(c *x509.Certificate) {
		c.KeyUsage |= x509.KeyUsageDigitalSignature
		c.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		c.DNSNames = []string{"hook.egress-test.svc"}
	})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var review admissionv1.AdmissionReview
		if err := json.NewDecoder(r.Body).Decode(&review); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		pt := admissionv1.PatchTypeJSONPatch
		review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true, PatchType: &pt,
			Patch: []byte(`[{"op":"add","path":"/metadata/labels","value":{"routed":"yes"}}]`)}
		review.Request = nil
		json.NewEncoder(w).Encode(review) //nolint:errcheck // the API server reports a bad answer
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.TLS()}}
	srv.StartTLS()
	defer srv.Close()
	unroute, err := c.RouteEgress(svc.Spec.ClusterIP+":443", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer unroute()
	patch := `[{"op":"replace","path":"/webhooks/0/clientConfig/caBundle","value":"` + base64.StdEncoding.EncodeToString(ca.PEM()) + `"}]`
	if _, err := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations().Patch(ctx, hook.Name, types.JSONPatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	var got *corev1.Pod
	err = wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, time.Minute, true, func(ctx context.Context) (bool, error) {
		got, createErr = c.Client.CoreV1().Pods("egress-test").Create(ctx, pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		return createErr == nil && got.Labels["routed"] == "yes", nil
	})
	if err != nil {
		t.Fatalf("the routed webhook never labelled the pod (last create: %v)", createErr)
	}
}
