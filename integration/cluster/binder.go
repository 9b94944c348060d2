package cluster

import (
	"context"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// startBinder stands in for kube-scheduler: it binds every pending pod that
// has no node to kwok-node-0. Pods that name another scheduler
// (spec.schedulerName other than default-scheduler) are left alone, so a test
// can keep a pod unscheduled on purpose. The goroutine is owned by the
// cluster: Stop ends it.
func (c *Cluster) startBinder() {
	ctx, cancel := context.WithCancel(context.Background())
	c.stopBind = cancel
	c.bindDone = make(chan struct{})
	factory := informers.NewSharedInformerFactoryWithOptions(c.Client, 5*time.Second,
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.FieldSelector = "spec.nodeName=" }))
	bind := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok || !needsBinding(pod) {
			return
		}
		err := c.Client.CoreV1().Pods(pod.Namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: NodeName},
		}, metav1.CreateOptions{})
		// Conflict/NotFound: bound or deleted meanwhile. Other errors are
		// retried on the next resync.
		if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
			fmt.Fprintf(c.opts.Log, "cluster: binding pod %s/%s: %v\n", pod.Namespace, pod.Name, err)
		}
	}
	informer := factory.Core().V1().Pods().Informer()
	informer.AddEventHandler(cache.ResourceEventHandlerFuncs{ //nolint:errcheck // the registration handle is not needed
		AddFunc:    bind,
		UpdateFunc: func(_, obj any) { bind(obj) },
	})
	factory.Start(ctx.Done())
	go func() { // owned by the cluster: ends when Stop cancels ctx
		<-ctx.Done()
		factory.Shutdown()
		close(c.bindDone)
	}()
}

func needsBinding(pod *corev1.Pod) bool {
	if pod.Spec.NodeName != "" || pod.DeletionTimestamp != nil {
		return false
	}
	if s := pod.Spec.SchedulerName; s != "" && s != corev1.DefaultSchedulerName {
		return false
	}
	return pod.Status.Phase == corev1.PodPending || pod.Status.Phase == ""
}
