package inject

import (
	"bytes"
	"fmt"

	corev1 "k8s.io/api/core/v1"
)

// Namespace is what the injector knows of the namespace a pod is created in.
type Namespace struct {
	Name        string
	Labels      map[string]string
	Annotations map[string]string
}

// enabled reports whether the namespace asks for injection, by annotation
// or, failing that, by label.
func (ns Namespace) enabled() bool {
	if v, ok := ns.Annotations[AnnotationInject]; ok {
		return v == ValueEnabled
	}
	return ns.Labels[AnnotationInject] == ValueEnabled
}

// InjectPod decides whether a Pod (JSON, as an admission request carries it)
// created in ns gets a proxy and, if so, returns the injected Pod as JSON.
// When it does not, reason says why and out is nil. The pod's
// conduit.io/inject annotation wins over the namespace's; "disabled" on the
// pod always wins. config.conduit.io/* overrides apply from the namespace,
// then from the pod. A pod of another of meshes (nil: DefaultOtherMeshes()),
// or in a namespace another mesh's injector also meshes, is never injected:
// the webhook cannot take the other proxy out.
func InjectPod(pod []byte, ns Namespace, base ProxyConfig, meshes []OtherMesh) (out []byte, reason string, err error) {
	root, err := jsonToNode(pod)
	if err != nil {
		return nil, "", fmt.Errorf("decoding the pod: %w", err)
	}
	if !isMap(root) {
		return nil, "", fmt.Errorf("decoding the pod: not a JSON object")
	}
	p := podTarget{holder: root, namespace: ns.Name}
	if reason := p.skipReason(base.ControlPlaneNamespace); reason != "" {
		return nil, reason, nil
	}
	if v := p.annotations()[AnnotationInject]; v != ValueEnabled && !ns.enabled() {
		return nil, "injection is not enabled on the pod or its namespace", nil
	}
	if meshes == nil {
		meshes = DefaultOtherMeshes()
	}
	if m, what := p.otherMesh(meshes); what != "" {
		return nil, fmt.Sprintf("it is meshed by %s (%s): two proxies in one pod cannot work; migrate its workload with `conduit inject --force`", m.Name, what), nil
	}
	for _, m := range meshes {
		if reason := m.namespaceInjects(p, ns); reason != "" {
			return nil, reason, nil
		}
	}
	// config.conduit.io/* on the namespace apply to all its pods; the pod's
	// own annotations win (inject applies them on top).
	base, err = base.WithOverrides(ns.Annotations)
	if err != nil {
		return nil, "", fmt.Errorf("namespace %s: %w", ns.Name, err)
	}
	if err := p.inject(base, nil, sidecarCache{}, false); err != nil {
		return nil, "", err
	}
	var buf bytes.Buffer
	if err := nodeToJSON(&buf, root); err != nil {
		return nil, "", err
	}
	return buf.Bytes(), "", nil
}

// Meshed reports whether a pod spec carries Conduit's proxy, as a native
// sidecar (an init container) or as a container.
func Meshed(spec *corev1.PodSpec) bool {
	for _, cs := range [][]corev1.Container{spec.InitContainers, spec.Containers} {
		for _, c := range cs {
			if c.Name == ProxyContainerName {
				return true
			}
		}
	}
	return false
}
