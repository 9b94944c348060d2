package install

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/conduitmesh/conduit/internal/testenv/fakekube"
	"github.com/conduitmesh/conduit/pkg/contract"
)

// namespace is a Namespace as the API server keeps it: labelled with its name.
func namespace(name string, labels map[string]string) *corev1.Namespace {
	l := map[string]string{corev1.LabelMetadataName: name}
	for k, v := range labels {
		l[k] = v
	}
	return &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: l}, Status: corev1.NamespaceStatus{Phase: corev1.NamespaceActive}}
}

// rolledOut is every Deployment of objs as the deployment controller leaves
// it once rolled out.
func rolledOut(t *testing.T, objs []*unstructured.Unstructured) []runtime.Object {
	t.Helper()
	var out []runtime.Object
	for _, o := range objs {
		if o.GetKind() != "Deployment" {
			continue
		}
		var d appsv1.Deployment
		if err := runtime.DefaultUnstructuredConverter.FromUnstructured(o.Object, &d); err != nil {
			t.Fatal(err)
		}
		want := int32(1)
		if d.Spec.Replicas != nil {
			want = *d.Spec.Replicas
		}
		d.Generation = 1
		d.Status = appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: want, UpdatedReplicas: want, ReadyReplicas: want, AvailableReplicas: want}
		out = append(out, &d)
	}
	if len(out) == 0 {
		t.Fatal("the chart has no Deployment")
	}
	return out
}

// injector answers the probe's dry runs on c with answer, checking that
// the probe pod asks for injection.
func injector(t *testing.T, c *fake.Clientset, answer func(n int, pod *corev1.Pod) (*corev1.Pod, error)) *atomic.Int32 {
	return fakekube.DryRunPods(c, func(n int, pod *corev1.Pod) (*corev1.Pod, error) {
		if pod.Annotations[contract.AnnotationInject] != "enabled" {
			t.Errorf("the probe pod is not annotated for injection: %v", pod.Annotations)
		}
		return answer(n, pod)
	})
}

func TestWaitReadyWaitsForTheInjector(t *testing.T) {
	objs, _ := renderForTest(t, ValueOptions{})
	webhookDown := apierrors.NewInternalError(errors.New(`failed calling webhook "proxy-injector.conduit.io": failed to call webhook: Post "https://conduit-controller.conduit.svc:443/inject?timeout=10s": dial tcp 198.18.1.7:443: connect: connection refused`))
	cases := []struct {
		name    string
		answer  func(n int, pod *corev1.Pod) (*corev1.Pod, error)
		timeout time.Duration
		skip    bool   // WaitOptions.SkipInjector
		calls   int32  // probes made
		err     string // "" for success
		detail  string // one of the details reported
	}{
		{
			name: "admitted without a proxy twice (failurePolicy Ignore), then injected",
			answer: func(n int, p *corev1.Pod) (*corev1.Pod, error) {
				if n <= 2 {
					return p, nil
				}
				return fakekube.WithProxy(p), nil
			},
			timeout: time.Minute, calls: 3,
			detail: "proxy injector: the API server admitted a pod annotated conduit.io/inject=enabled in namespace default without the proxy",
		},
		{
			name: "the API server cannot call the webhook (failurePolicy Fail), then can",
			answer: func(n int, p *corev1.Pod) (*corev1.Pod, error) {
				if n == 1 {
					return nil, webhookDown
				}
				return fakekube.WithProxy(p), nil
			},
			timeout: time.Minute, calls: 2,
			detail: "proxy injector: the API server cannot call the proxy injector for a pod in namespace default: Internal error occurred: failed calling webhook",
		},
		{
			name:    "SkipInjector: the Deployments only",
			answer:  func(_ int, p *corev1.Pod) (*corev1.Pod, error) { return p, nil },
			timeout: time.Minute, skip: true,
		},
		{
			name:    "never injected: times out naming the Service",
			answer:  func(_ int, p *corev1.Pod) (*corev1.Pod, error) { return p, nil },
			timeout: 300 * time.Millisecond,
			err:     "timed out after 300ms: proxy injector: the API server admitted a pod annotated conduit.io/inject=enabled in namespace default without the proxy: the proxy injector did not answer (the API server calls the injector through Service conduit/conduit-controller port 443: check that the Service has ready endpoints",
		},
		{
			name: "another admission controller refuses the pod: not waited for, said",
			answer: func(int, *corev1.Pod) (*corev1.Pod, error) {
				return nil, apierrors.NewForbidden(schema.GroupResource{Resource: "pods"}, "", errors.New(`violates PodSecurity "restricted:latest"`))
			},
			timeout: time.Minute, calls: 1,
			detail: `not waiting for the proxy injector: probing the proxy injector with a dry-run pod in namespace default: pods is forbidden: violates PodSecurity "restricted:latest"`,
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			kube := fake.NewClientset(append(rolledOut(t, objs), namespace("default", nil), namespace("kube-system", nil))...)
			calls := injector(t, kube, tc.answer)
			var details []string
			err := (&Client{Kube: kube}).WaitReady(context.Background(), objs, WaitOptions{Timeout: tc.timeout, Interval: time.Millisecond, SkipInjector: tc.skip}, func(d string) { details = append(details, d) })
			if tc.err == "" && err != nil {
				t.Fatalf("WaitReady: %v (details %q)", err, details)
			}
			if tc.err != "" && (err == nil || !strings.HasPrefix(err.Error(), tc.err)) {
				t.Fatalf("WaitReady: %v\nwant an error starting %q", err, tc.err)
			}
			if calls.Load() != tc.calls && tc.err == "" {
				t.Errorf("%d probes; want %d", calls.Load(), tc.calls)
			}
			found := tc.detail == ""
			for _, d := range details {
				found = found || strings.HasPrefix(d, tc.detail)
			}
			if !found {
				t.Errorf("details %q\nwant one starting %q", details, tc.detail)
			}
			if pods, _ := kube.CoreV1().Pods("").List(context.Background(), metav1.ListOptions{}); len(pods.Items) != 0 {
				t.Errorf("the probe stored %d pods", len(pods.Items))
			}
		})
	}
}

func TestWaitReadyProbesOnlyOnceRolledOut(t *testing.T) {
	objs, _ := renderForTest(t, ValueOptions{})
	deploys := rolledOut(t, objs)
	pending := deploys[0].(*appsv1.Deployment)
	pending.Status.ReadyReplicas, pending.Status.AvailableReplicas = 0, 0
	kube := fake.NewClientset(append(deploys, namespace("default", nil))...)
	calls := injector(t, kube, func(_ int, p *corev1.Pod) (*corev1.Pod, error) { return fakekube.WithProxy(p), nil })
	err := (&Client{Kube: kube}).WaitReady(context.Background(), objs, WaitOptions{Timeout: 100 * time.Millisecond, Interval: time.Millisecond}, func(string) {})
	if err == nil || !strings.Contains(err.Error(), "replicas ready (see `kubectl get pods -n conduit`, or raise --timeout)") {
		t.Fatalf("WaitReady: %v; want a timeout on the rollout", err)
	}
	if calls.Load() != 0 {
		t.Errorf("probed the injector %d times before the controller rolled out", calls.Load())
	}
}

func TestInjectorProbeNamespace(t *testing.T) {
	objs, _ := renderForTest(t, ValueOptions{})
	wh, err := injectorWebhook(objs)
	if err != nil || wh == nil {
		t.Fatalf("injectorWebhook: %v, %v", wh, err)
	}
	controlPlane := map[string]string{"conduit.io/is-control-plane": "true"}
	terminating := namespace("aaa", nil) // as the API server marks a deleted namespace
	deleted := metav1.Now()
	terminating.DeletionTimestamp, terminating.Finalizers = &deleted, []string{"kubernetes"}
	terminating.Status.Phase = corev1.NamespaceTerminating
	cases := []struct {
		name string
		nss  []runtime.Object
		want string
	}{
		{"default when covered", []runtime.Object{namespace("apps", nil), namespace("default", nil)}, "default"},
		{"else the first covered by name", []runtime.Object{namespace("default", controlPlane), namespace("kube-system", nil), namespace("conduit", nil), terminating, namespace("zoo", nil), namespace("apps", nil)}, "apps"},
		{"none covered", []runtime.Object{namespace("kube-system", nil), namespace("conduit", nil)}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := InjectorProbeNamespace(context.Background(), fake.NewClientset(tc.nss...), wh.NamespaceSelector)
			if err != nil || got != tc.want {
				t.Errorf("InjectorProbeNamespace = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
