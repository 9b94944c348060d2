package install

import (
	"context"
	"slices"
	"strings"
	"testing"

	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	k8stesting "k8s.io/client-go/testing"

	"github.com/conduitmesh/conduit/manifests"
)

// The embedded install is the standard channel of the Gateway API version
// go.mod requires (consts.BundleVersion moves with it; hack/mkgatewaycrds'
// test compares the whole file with the module's).
func TestGatewayAPIObjectsCurrent(t *testing.T) {
	first, _, _ := strings.Cut(string(manifests.GatewayAPIStandardInstall), "\n")
	if want := "from sigs.k8s.io/gateway-api " + GatewayAPIVersion + ";"; !strings.Contains(first, want) {
		t.Fatalf("manifests/gatewayapi/standard-install.yaml starts %q, not from %s: run go run ./hack/mkgatewaycrds", first, GatewayAPIVersion)
	}
	objs, err := GatewayAPIObjects()
	if err != nil {
		t.Fatal(err)
	}
	var crds []string
	for _, o := range objs {
		if v := o.GetAnnotations()[GatewayAPIBundleAnnotation]; v != GatewayAPIVersion {
			t.Errorf("%s is of version %q, want %s: run go run ./hack/mkgatewaycrds", KeyOf(o), v, GatewayAPIVersion)
		}
		if o.GetKind() == "CustomResourceDefinition" {
			crds = append(crds, o.GetName())
		}
	}
	for _, want := range []string{"httproutes", "grpcroutes", "gateways", "gatewayclasses", "referencegrants"} {
		if !slices.Contains(crds, want+".gateway.networking.k8s.io") {
			t.Errorf("no %s CRD in %v", want, crds)
		}
	}
}

var crdGVK = schema.GroupVersionKind{Group: "apiextensions.k8s.io", Version: "v1", Kind: "CustomResourceDefinition"}

// gatewayClient serves CRDs (and ValidatingAdmissionPolicies when vap)
// holding objs; created CRDs are Established at once.
func gatewayClient(t *testing.T, vap bool, objs ...runtime.Object) (*Client, *dynamicfake.FakeDynamicClient) {
	t.Helper()
	mapper := meta.NewDefaultRESTMapper(nil)
	mapper.Add(crdGVK, meta.RESTScopeRoot)
	listKinds := map[schema.GroupVersionResource]string{{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}: "CustomResourceDefinitionList"}
	if vap {
		for _, k := range []string{"ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"} {
			gvk := schema.GroupVersionKind{Group: "admissionregistration.k8s.io", Version: "v1", Kind: k}
			mapper.Add(gvk, meta.RESTScopeRoot)
			m, _ := mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
			listKinds[m.Resource] = k + "List"
		}
	}
	dyn := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(), listKinds, objs...)
	dyn.PrependReactor("create", "customresourcedefinitions", func(a k8stesting.Action) (bool, runtime.Object, error) {
		u := a.(k8stesting.CreateAction).GetObject().(*unstructured.Unstructured)
		unstructured.SetNestedSlice(u.Object, []any{map[string]any{"type": "Established", "status": "True"}}, "status", "conditions")
		return false, nil, nil
	})
	return &Client{Dynamic: dyn, Mapper: mapper}, dyn
}

func TestInstallGatewayAPIKeepsExisting(t *testing.T) {
	objs, err := GatewayAPIObjects()
	if err != nil {
		t.Fatal(err)
	}
	// Another mesh installed a newer HTTPRoute CRD.
	newer := &unstructured.Unstructured{}
	newer.SetGroupVersionKind(crdGVK)
	newer.SetName("httproutes.gateway.networking.k8s.io")
	newer.SetAnnotations(map[string]string{GatewayAPIBundleAnnotation: "v9.0.0"})
	newer.Object["spec"] = map[string]any{"group": "gateway.networking.k8s.io", "owner": "other-mesh"}
	c, dyn := gatewayClient(t, true, newer)
	var details []string
	if err := c.InstallGatewayAPI(context.Background(), objs, func(d string) { details = append(details, d) }); err != nil {
		t.Fatal(err)
	}
	text := strings.Join(details, "\n")
	for _, want := range []string{
		"kept the existing CustomResourceDefinition httproutes.gateway.networking.k8s.io (v9.0.0)",
		"created CustomResourceDefinition grpcroutes.gateway.networking.k8s.io",
		"created ValidatingAdmissionPolicy safe-upgrades.gateway.networking.k8s.io",
		"created ValidatingAdmissionPolicyBinding safe-upgrades.gateway.networking.k8s.io",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("details lack %q:\n%s", want, text)
		}
	}
	live, err := c.Get(context.Background(), newer)
	if err != nil {
		t.Fatal(err)
	}
	if live.GetAnnotations()[GatewayAPIBundleAnnotation] != "v9.0.0" || live.Object["spec"].(map[string]any)["owner"] != "other-mesh" {
		t.Errorf("the existing CRD was changed: %v", live.Object)
	}
	for _, a := range dyn.Actions() {
		if a.GetVerb() == "update" || a.GetVerb() == "patch" {
			t.Errorf("an existing object was written: %v", a)
		}
	}
	// Again: everything exists, nothing is written.
	dyn.ClearActions()
	details = nil
	if err := c.InstallGatewayAPI(context.Background(), objs, func(d string) { details = append(details, d) }); err != nil {
		t.Fatal(err)
	}
	for _, a := range dyn.Actions() {
		if a.GetVerb() != "get" {
			t.Errorf("second run: %s %s", a.GetVerb(), a.GetResource().Resource)
		}
	}
	if len(details) != len(objs) || !strings.HasPrefix(details[0], "kept the existing") {
		t.Errorf("second run details:\n%s", strings.Join(details, "\n"))
	}
	// Created objects carry no install labels: uninstall leaves them.
	u, err := dyn.Resource(schema.GroupVersionResource{Group: "apiextensions.k8s.io", Version: "v1", Resource: "customresourcedefinitions"}).Get(context.Background(), "grpcroutes.gateway.networking.k8s.io", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if u.GetLabels()[LabelPartOf] != "" {
		t.Errorf("labels %v", u.GetLabels())
	}
}

// Before Kubernetes 1.30 there is no ValidatingAdmissionPolicy v1: the
// CRDs are installed without it.
func TestInstallGatewayAPIWithoutAdmissionPolicies(t *testing.T) {
	objs, err := GatewayAPIObjects()
	if err != nil {
		t.Fatal(err)
	}
	c, _ := gatewayClient(t, false)
	var details []string
	if err := c.InstallGatewayAPI(context.Background(), objs, func(d string) { details = append(details, d) }); err != nil {
		t.Fatal(err)
	}
	if text := strings.Join(details, "\n"); !strings.Contains(text, "skipped ValidatingAdmissionPolicy safe-upgrades.gateway.networking.k8s.io: the cluster does not serve admissionregistration.k8s.io/v1") {
		t.Errorf("details:\n%s", text)
	}
}
