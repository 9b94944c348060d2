package stats

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

func TestKubePods(t *testing.T) {
	yes := true
	running := corev1.ContainerState{Running: &corev1.ContainerStateRunning{}}
	podIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	svcIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	add := func(idx cache.Indexer, o any) {
		if err := idx.Add(o); err != nil {
			t.Fatal(err)
		}
	}
	add(podIdx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "emoji", Name: "web-5d8f-abcde",
			Labels:          map[string]string{"app": "web", "pod-template-hash": "5d8f", ProxyVersionLabel: "dev"},
			OwnerReferences: []metav1.OwnerReference{{Kind: "ReplicaSet", Name: "web-5d8f", Controller: &yes}}},
		Spec: corev1.PodSpec{ServiceAccountName: "web"},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "10.0.0.7",
			InitContainerStatuses: []corev1.ContainerStatus{{Name: "conduit-proxy", State: running}}},
	})
	add(podIdx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "emoji", Name: "plain", Labels: map[string]string{"app": "web"}},
		Status:     corev1.PodStatus{Phase: corev1.PodPending},
	})
	add(podIdx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "emoji", Name: "done"},
		Status:     corev1.PodStatus{Phase: corev1.PodSucceeded},
	})
	add(svcIdx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "emoji", Name: "web-svc"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}})
	add(svcIdx, &corev1.Service{ObjectMeta: metav1.ObjectMeta{Namespace: "other", Name: "web-svc"},
		Spec: corev1.ServiceSpec{Selector: map[string]string{"app": "web"}}})

	k := KubePods{Pods: corelisters.NewPodLister(podIdx), Services: corelisters.NewServiceLister(svcIdx)}
	got, err := k.List(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	want := []Pod{
		{Namespace: "emoji", Name: "plain", Labels: map[string]string{"serviceaccount": "default", "service": "web-svc"}},
		{Namespace: "emoji", Name: "web-5d8f-abcde", Running: true, AdminAddr: "10.0.0.7:4191",
			Identity: "spiffe://cluster.local/ns/emoji/sa/web",
			Labels:   map[string]string{"serviceaccount": "web", "deployment": "web", "service": "web-svc"}},
	}
	if len(got) == 2 && got[0].Name != "plain" {
		got[0], got[1] = got[1], got[0]
	}
	if d := cmp.Diff(want, got); d != "" {
		t.Errorf("pods (-want +got):\n%s", d)
	}
}
