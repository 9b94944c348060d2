package fakekube

import (
	"context"
	"fmt"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic/dynamicinformer"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/conduitmesh/conduit/internal/testenv"
)

// TestWatchDelete: once Wait returns, a delete reaches the informer.
func TestWatchDelete(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	client := fake.NewClientset(&corev1.Pod{ObjectMeta: metav1.ObjectMeta{Namespace: "shop", Name: "web-0"}})
	w := Watch(client, "pods")
	factory := informers.NewSharedInformerFactory(client, 0)
	lister := factory.Core().V1().Pods().Lister()
	factory.Start(ctx.Done())
	defer func() { cancel(); factory.Shutdown() }()
	factory.WaitForCacheSync(ctx.Done())
	w.Wait(ctx, t, 10*time.Second)
	if err := client.CoreV1().Pods("shop").Delete(ctx, "web-0", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := lister.Pods("shop").Get("web-0")
		if apierrors.IsNotFound(err) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the informer still lists the deleted pod: %v", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// fatalTB records Fatalf instead of ending the test.
type fatalTB struct {
	testing.TB
	msg string
}

func (f *fatalTB) Helper() {}
func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
}

// TestWaitFails: without a watch of every resource, Wait fails the test
// and names what was not watched.
func TestWaitFails(t *testing.T) {
	client := fake.NewClientset()
	w := Watch(client, "pods", "services")
	if _, err := client.CoreV1().Pods("").Watch(context.Background(), metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	tb := &fatalTB{TB: t}
	w.Wait(context.Background(), tb, 50*time.Millisecond)
	if tb.msg != "no informer watched [services] within 50ms" {
		t.Errorf("Wait with services not watched: %q", tb.msg)
	}
	if _, err := client.CoreV1().Services("").Watch(context.Background(), metav1.ListOptions{}); err != nil {
		t.Fatal(err)
	}
	tb = &fatalTB{TB: t}
	w.Wait(context.Background(), tb, 10*time.Second)
	if tb.msg != "" {
		t.Errorf("Wait once both are watched: %q", tb.msg)
	}
}

// TestWatchDeleteDynamic: the same with a dynamic fake client and a
// dynamic informer, as the policy index and route fixtures run.
func TestWatchDeleteDynamic(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	gvr := schema.GroupVersionResource{Group: "gateway.networking.k8s.io", Version: "v1", Resource: "httproutes"}
	route := &unstructured.Unstructured{}
	route.SetAPIVersion("gateway.networking.k8s.io/v1")
	route.SetKind("HTTPRoute")
	route.SetNamespace("shop")
	route.SetName("web")
	client := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
		map[schema.GroupVersionResource]string{gvr: "HTTPRouteList"}, route)
	w := Watch(client, "httproutes")
	factory := dynamicinformer.NewDynamicSharedInformerFactory(client, 0)
	lister := factory.ForResource(gvr).Lister()
	factory.Start(ctx.Done())
	defer func() { cancel(); factory.Shutdown() }()
	factory.WaitForCacheSync(ctx.Done())
	w.Wait(ctx, t, 10*time.Second)
	if err := client.Resource(gvr).Namespace("shop").Delete(ctx, "web", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 10*time.Second, 5*time.Millisecond, func() error {
		if _, err := lister.ByNamespace("shop").Get("web"); !apierrors.IsNotFound(err) {
			return fmt.Errorf("the informer still lists the deleted route: %v", err)
		}
		return nil
	})
}
