package policy

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	apiwatch "k8s.io/apimachinery/pkg/watch"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	corefake "k8s.io/client-go/kubernetes/typed/core/v1/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/conduitmesh/conduit/pkg/contract"
)

// Local is the inbound policy of the local discovery mode (`conduit demo`,
// tests): the same Index as in a cluster, over in-memory clientsets that
// Apply keeps in step with the local registry (contract.Registry) — its
// namespaces, its proxies as pods (labels and named ports), its policy
// objects. Each change is a create, update or delete the informers see, so
// the Index wakes the streams of the pods it concerns as it would in a
// cluster.
type Local struct {
	*Index

	kube *localClient
	dyn  *dynamicfake.FakeDynamicClient

	// watches counts the watches the informers opened (see Run).
	watches atomic.Int32

	mu sync.Mutex // serializes Apply (and Run holds it while the informers start); guards applied and created
	// applied are the objects the clientsets hold, as the registry gave
	// them; created when each was first created (its creationTimestamp:
	// the oldest Server selecting a port wins).
	applied map[objectKey]runtime.Object
	created map[objectKey]metav1.Time
}

// objectKey names an object of a resource.
type objectKey struct {
	gvr             schema.GroupVersionResource
	namespace, name string
}

var (
	podsResource       = schema.GroupVersionResource{Version: "v1", Resource: "pods"}
	namespacesResource = schema.GroupVersionResource{Version: "v1", Resource: "namespaces"}
)

// localKinds are the objects a registry's policies may hold, in the order
// Apply creates them: what others refer to first, so that a new Server
// seldom refuses clients for an instant before its policies are seen (the
// informers of different resources keep no order between them). Each has
// its check: the conversion the Index makes.
var localKinds = []struct {
	gvr      schema.GroupVersionResource
	kind     string
	listKind string
	check    func(*unstructured.Unstructured) error
}{
	{MeshTLSAuthenticationsResource, KindMeshTLSAuthentication, "MeshTLSAuthenticationList", converts[MeshTLSAuthentication]},
	{NetworkAuthenticationsResource, KindNetworkAuthentication, "NetworkAuthenticationList", converts[NetworkAuthentication]},
	{AuthorizationPoliciesResource, KindAuthorizationPolicy, "AuthorizationPolicyList", converts[AuthorizationPolicy]},
	{HTTPRoutesResource, KindHTTPRoute, "HTTPRouteList", converts[HTTPRoute]},
	{GRPCRoutesResource, KindGRPCRoute, "GRPCRouteList", converts[GRPCRoute]},
	{ServersResource, KindServer, "ServerList", converts[Server]},
}

func converts[T any](u *unstructured.Unstructured) error {
	_, err := fromUnstructured[T](u)
	return err
}

// applyOrder ranks resources for creation: namespaces, the policy
// objects (localKinds' order), then pods. Deletions go the other way.
func applyOrder(gvr schema.GroupVersionResource) int {
	switch gvr {
	case namespacesResource:
		return 0
	case podsResource:
		return len(localKinds) + 1
	}
	for i, k := range localKinds {
		if k.gvr == gvr {
			return i + 1
		}
	}
	return len(localKinds) + 2
}

// LocalOptions configure a Local index.
type LocalOptions struct {
	Cluster Cluster
	Log     *slog.Logger
}

// NewLocal returns an index with no objects; Apply gives it the registry's,
// Run starts it.
func NewLocal(opts LocalOptions) (*Local, error) {
	listKinds := map[schema.GroupVersionResource]string{}
	for _, k := range localKinds {
		listKinds[k.gvr] = k.listKind
	}
	l := &Local{
		dyn:     dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds),
		applied: map[objectKey]runtime.Object{},
		created: map[objectKey]metav1.Time{},
	}
	tracker := k8stesting.NewObjectTracker(scheme.Scheme, scheme.Codecs.UniversalDecoder())
	l.kube = newLocalClient(tracker, l.watchReactor(tracker))
	l.dyn.PrependWatchReactor("*", l.watchReactor(l.dyn.Tracker()))
	var err error
	l.Index, err = NewIndex(Options{
		Client:    l.kube,
		Dynamic:   l.dyn,
		Discovery: localDiscovery{},
		Cluster:   opts.Cluster,
		Log:       opts.Log,
		// Nothing to rediscover: every resource is served from the start.
		Rediscover: 24 * time.Hour,
	})
	if err != nil {
		return nil, err
	}
	return l, nil
}

// localClient is the part of a clientset the Index uses, CoreV1 (its Pod
// and Namespace informers), on an in-memory object tracker.
// (k8s.io/client-go/kubernetes/fake would do too, but it links the fake of
// every API group: 16 MB more of controller binary.)
type localClient struct {
	kubernetes.Interface // nil: the Index calls no other method
	core                 corefake.FakeCoreV1
}

func newLocalClient(tracker k8stesting.ObjectTracker, watch k8stesting.WatchReactionFunc) *localClient {
	c := &localClient{core: corefake.FakeCoreV1{Fake: &k8stesting.Fake{}}}
	c.core.AddReactor("*", "*", k8stesting.ObjectReaction(tracker))
	c.core.AddWatchReactor("*", watch)
	return c
}

// CoreV1 implements kubernetes.Interface.
func (c *localClient) CoreV1() corev1client.CoreV1Interface { return &c.core }

// IsWatchListSemanticsUnSupported tells the informers' reflectors to list
// then watch: the tracker cannot stream a list as watch events (what the
// fake clientsets say too).
func (c *localClient) IsWatchListSemanticsUnSupported() bool { return true }

// watchReactor opens a watch on tracker, as the fake clients do, and
// counts it.
func (l *Local) watchReactor(tracker k8stesting.ObjectTracker) k8stesting.WatchReactionFunc {
	return func(action k8stesting.Action) (bool, apiwatch.Interface, error) {
		var opts metav1.ListOptions
		if w, ok := action.(k8stesting.WatchActionImpl); ok {
			opts = w.ListOptions
		}
		w, err := tracker.Watch(action.GetResource(), action.GetNamespace(), opts)
		if err != nil {
			return false, nil, err
		}
		l.watches.Add(1)
		return true, w, nil
	}
}

// Run runs the index until ctx is done. Apply waits while the informers
// list and start watching: the in-memory clientsets cannot replay a change
// made between an informer's list and its watch, which would be lost.
func (l *Local) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	l.mu.Lock()
	go func() {
		defer l.mu.Unlock()
		// Pods, Namespaces and each policy resource.
		want := int32(2 + len(localKinds))
		for l.WaitSynced(ctx) == nil && l.watches.Load() < want {
			select {
			case <-ctx.Done():
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	return l.Index.Run(ctx)
}

// localDiscovery serves every policy and route resource.
type localDiscovery struct{}

// ServerResourcesForGroupVersion implements Discovery.
func (localDiscovery) ServerResourcesForGroupVersion(gv string) (*metav1.APIResourceList, error) {
	out := &metav1.APIResourceList{GroupVersion: gv}
	for _, k := range localKinds {
		if k.gvr.GroupVersion().String() == gv {
			out.APIResources = append(out.APIResources, metav1.APIResource{Name: k.gvr.Resource, Kind: k.kind, Namespaced: true})
		}
	}
	return out, nil
}

// Apply makes the clientsets hold exactly the registry's namespaces, pods
// and policy objects. It checks every object first and changes nothing
// when one is invalid; then it creates what is new, updates what changed
// and deletes what is gone, so that the informers see each change.
func (l *Local) Apply(r contract.Registry) error {
	want, err := localObjects(r)
	if err != nil {
		return err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]objectKey, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b objectKey) int { return applyOrder(a.gvr) - applyOrder(b.gvr) })
	ctx := context.Background()
	var errs []error
	for _, k := range keys {
		obj, old := want[k], l.applied[k]
		if old != nil && equality.Semantic.DeepEqual(old, obj) {
			continue
		}
		if err := l.write(ctx, k, obj, old == nil); err != nil {
			errs = append(errs, err)
			continue
		}
		l.applied[k] = obj
	}
	var gone []objectKey
	for k := range l.applied {
		if want[k] == nil {
			gone = append(gone, k)
		}
	}
	slices.SortFunc(gone, func(a, b objectKey) int { return applyOrder(b.gvr) - applyOrder(a.gvr) })
	for _, k := range gone {
		if err := l.delete(ctx, k); err != nil {
			errs = append(errs, err)
			continue
		}
		delete(l.applied, k)
		delete(l.created, k)
	}
	return errors.Join(errs...)
}

// write creates or updates one object, with the creation time it was
// first given.
func (l *Local) write(ctx context.Context, k objectKey, obj runtime.Object, create bool) error {
	obj = obj.DeepCopyObject()
	if _, ok := l.created[k]; !ok {
		l.created[k] = metav1.Now()
	}
	created := l.created[k]
	var err error
	switch o := obj.(type) {
	case *corev1.Pod:
		o.CreationTimestamp = created
		if create {
			_, err = l.kube.CoreV1().Pods(k.namespace).Create(ctx, o, metav1.CreateOptions{})
		} else {
			_, err = l.kube.CoreV1().Pods(k.namespace).Update(ctx, o, metav1.UpdateOptions{})
		}
	case *corev1.Namespace:
		o.CreationTimestamp = created
		if create {
			_, err = l.kube.CoreV1().Namespaces().Create(ctx, o, metav1.CreateOptions{})
		} else {
			_, err = l.kube.CoreV1().Namespaces().Update(ctx, o, metav1.UpdateOptions{})
		}
	case *unstructured.Unstructured:
		if ts := o.GetCreationTimestamp(); ts.IsZero() {
			o.SetCreationTimestamp(created)
		}
		ri := l.dyn.Resource(k.gvr).Namespace(k.namespace)
		if create {
			_, err = ri.Create(ctx, o, metav1.CreateOptions{})
		} else {
			_, err = ri.Update(ctx, o, metav1.UpdateOptions{})
		}
	}
	if err != nil {
		return fmt.Errorf("%s %s/%s: %w", k.gvr.Resource, k.namespace, k.name, err)
	}
	return nil
}

func (l *Local) delete(ctx context.Context, k objectKey) error {
	var err error
	switch k.gvr {
	case podsResource:
		err = l.kube.CoreV1().Pods(k.namespace).Delete(ctx, k.name, metav1.DeleteOptions{})
	case namespacesResource:
		err = l.kube.CoreV1().Namespaces().Delete(ctx, k.name, metav1.DeleteOptions{})
	default:
		err = l.dyn.Resource(k.gvr).Namespace(k.namespace).Delete(ctx, k.name, metav1.DeleteOptions{})
	}
	if err != nil {
		return fmt.Errorf("deleting %s %s/%s: %w", k.gvr.Resource, k.namespace, k.name, err)
	}
	return nil
}

// localObjects are the registry's objects by key: its namespaces, a pod
// per proxy (its labels, and one container declaring its named ports) and
// its policy objects, each checked as the Index will read it.
func localObjects(r contract.Registry) (map[objectKey]runtime.Object, error) {
	out := map[objectKey]runtime.Object{}
	var errs []error
	add := func(what string, k objectKey, obj runtime.Object) {
		if out[k] != nil {
			errs = append(errs, fmt.Errorf("%s: %s %s/%s is listed twice", what, k.gvr.Resource, k.namespace, k.name))
			return
		}
		out[k] = obj
	}
	for i, ns := range r.Namespaces {
		add(fmt.Sprintf("namespaces[%d]", i), objectKey{namespacesResource, "", ns.Name}, &corev1.Namespace{
			ObjectMeta: metav1.ObjectMeta{Name: ns.Name, Labels: ns.Labels, Annotations: ns.Annotations},
		})
		if s, ok := ns.Annotations[contract.AnnotationDefaultInboundPolicy]; ok {
			if err := contract.CheckDefaultInboundPolicy(s); err != nil {
				errs = append(errs, fmt.Errorf("namespaces[%d] (%s): annotation %s: %w", i, ns.Name, contract.AnnotationDefaultInboundPolicy, err))
			}
		}
	}
	for i, p := range r.Proxies {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: p.Pod, Namespace: p.Namespace, Labels: p.Labels},
			Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}},
		}
		for _, port := range p.Ports {
			pod.Spec.Containers[0].Ports = append(pod.Spec.Containers[0].Ports, corev1.ContainerPort{
				Name: port.Name, ContainerPort: int32(port.Port), Protocol: corev1.ProtocolTCP,
			})
		}
		add(fmt.Sprintf("proxies[%d]", i), objectKey{podsResource, p.Namespace, p.Pod}, pod)
	}
	for i, obj := range r.Policies {
		what := fmt.Sprintf("policies[%d]", i)
		u, gvr, err := policyObject(obj)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", what, err))
			continue
		}
		add(what, objectKey{gvr, u.GetNamespace(), u.GetName()}, u)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return out, nil
}

// policyObject turns a registry's policy object into what the dynamic
// client holds (numbers as int64, as decoded from JSON by the API
// machinery), checking its kind and its fields.
func policyObject(obj map[string]any) (*unstructured.Unstructured, schema.GroupVersionResource, error) {
	raw, err := json.Marshal(obj)
	if err != nil {
		return nil, schema.GroupVersionResource{}, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return nil, schema.GroupVersionResource{}, err
	}
	gvk := u.GroupVersionKind()
	where := fmt.Sprintf("%s %s/%s", gvk.Kind, u.GetNamespace(), u.GetName())
	if u.GetName() == "" || u.GetNamespace() == "" {
		return nil, schema.GroupVersionResource{}, fmt.Errorf("%s: metadata.name and metadata.namespace are required", where)
	}
	var kinds []string
	for _, k := range localKinds {
		kinds = append(kinds, k.gvr.GroupVersion().String()+" "+k.kind)
		if k.gvr.GroupVersion() != gvk.GroupVersion() || k.kind != gvk.Kind {
			continue
		}
		if err := k.check(u); err != nil {
			return nil, schema.GroupVersionResource{}, err
		}
		return u, k.gvr, nil
	}
	return nil, schema.GroupVersionResource{}, fmt.Errorf("%s: apiVersion %s kind %s is not a policy object: want one of %v", where, u.GetAPIVersion(), gvk.Kind, kinds)
}
