package injector

import (
	"context"
	"fmt"

	"github.com/conduitmesh/conduit/pkg/inject"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// NamespaceGetter reads the labels and annotations of a namespace.
type NamespaceGetter interface {
	Namespace(ctx context.Context, name string) (inject.Namespace, error)
}

// KubeNamespaces reads namespaces from the Kubernetes API.
func KubeNamespaces(client kubernetes.Interface) NamespaceGetter { return kubeNamespaces{client} }

type kubeNamespaces struct{ client kubernetes.Interface }

func (k kubeNamespaces) Namespace(ctx context.Context, name string) (inject.Namespace, error) {
	ns, err := k.client.CoreV1().Namespaces().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return inject.Namespace{}, fmt.Errorf("reading namespace %q: %w", name, err)
	}
	return inject.Namespace{Name: name, Labels: ns.Labels, Annotations: ns.Annotations}, nil
}

// StaticNamespaces is a fixed set of namespaces (for tests and local mode);
// unknown names have no labels or annotations.
type StaticNamespaces map[string]inject.Namespace

// Namespace implements NamespaceGetter.
func (s StaticNamespaces) Namespace(_ context.Context, name string) (inject.Namespace, error) {
	ns, ok := s[name]
	if !ok {
		return inject.Namespace{Name: name}, nil
	}
	ns.Name = name
	return ns, nil
}
