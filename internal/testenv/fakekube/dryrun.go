package fakekube

import (
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	clienttesting "k8s.io/client-go/testing"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// DryRunPods answers server-side dry runs of pod creation on c (the proxy
// injector probe's) as the API server would, admission included: the n-th
// (from 1) gets answer(n, pod), pod being the request's, named from its
// generateName. Nothing is stored; other creates go on to the fake's
// tracker. It returns how many dry runs were answered.
func DryRunPods(c *fake.Clientset, answer func(n int, pod *corev1.Pod) (*corev1.Pod, error)) *atomic.Int32 {
	var calls atomic.Int32
	c.PrependReactor("create", "pods", func(a clienttesting.Action) (bool, runtime.Object, error) {
		ca, ok := a.(clienttesting.CreateActionImpl)
		if !ok || len(ca.GetCreateOptions().DryRun) == 0 {
			return false, nil, nil
		}
		pod := ca.GetObject().(*corev1.Pod).DeepCopy()
		if pod.Name == "" {
			pod.Name = pod.GenerateName + "x7k2q"
		}
		out, err := answer(int(calls.Add(1)), pod)
		return true, out, err
	})
	return &calls
}

// WithProxy is pod as Conduit's proxy injector returns it: with the proxy,
// a native sidecar.
func WithProxy(pod *corev1.Pod) *corev1.Pod {
	pod.Spec.InitContainers = append(pod.Spec.InitContainers, corev1.Container{Name: contract.ProxyContainerName})
	return pod
}
