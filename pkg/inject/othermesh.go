package inject

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// OtherMesh describes how another service mesh shows in a pod: two proxies
// and two redirects in one pod break it, so inject leaves such pods alone
// unless told to replace the other mesh (Options.ReplaceOtherMeshes).
type OtherMesh struct {
	Name string
	// Containers are the names of its containers and init containers.
	Containers []string
	// Markers are annotations that say the pod is, or will be, injected by
	// it: "key" (any value) or "key=value".
	Markers []string
	// Domains are the annotation and label domains it owns (the key's part
	// before "/", or a parent of it): removed when it is replaced.
	Domains []string
	// Namespaces are labels or annotations ("key" or "key=value") of a
	// namespace whose pods its injector meshes when they are created, and
	// OptOut the pod annotations or labels that exempt a pod from that.
	Namespaces, OptOut []string
	// Ports maps its annotations to Conduit's overrides carrying the same
	// setting, kept when it is replaced.
	Ports map[string]string
}

// Linkerd and Istio, as their injectors leave pods (Linkerd 2.x with or
// without its CNI plugin and native sidecars; Istio with or without its CNI
// plugin).
var (
	Linkerd = OtherMesh{
		Name:       "Linkerd",
		Containers: []string{"linkerd-proxy", "linkerd-init", "linkerd-network-validator"},
		Markers:    []string{"linkerd.io/proxy-version", "linkerd.io/inject=enabled", "linkerd.io/inject=ingress"},
		Domains:    []string{"linkerd.io"},
		Namespaces: []string{"linkerd.io/inject=enabled", "linkerd.io/inject=ingress"},
		OptOut:     []string{"linkerd.io/inject=disabled"},
		Ports: map[string]string{
			"config.linkerd.io/opaque-ports":        OverrideOpaquePorts,
			"config.linkerd.io/skip-inbound-ports":  OverrideSkipInboundPorts,
			"config.linkerd.io/skip-outbound-ports": OverrideSkipOutboundPorts,
		},
	}
	Istio = OtherMesh{
		Name:       "Istio",
		Containers: []string{"istio-proxy", "istio-init", "istio-validation"},
		Markers:    []string{"sidecar.istio.io/status", "sidecar.istio.io/inject=true"},
		Domains:    []string{"istio.io"},
		Namespaces: []string{"istio-injection=enabled", "istio.io/rev"},
		OptOut:     []string{"sidecar.istio.io/inject=false"},
		Ports: map[string]string{
			"traffic.sidecar.istio.io/excludeInboundPorts":  OverrideSkipInboundPorts,
			"traffic.sidecar.istio.io/excludeOutboundPorts": OverrideSkipOutboundPorts,
		},
	}
)

// DefaultOtherMeshes are the meshes inject knows without being told.
func DefaultOtherMeshes() []OtherMesh { return []OtherMesh{Linkerd, Istio} }

// OtherMeshesWith are DefaultOtherMeshes and, when containers or markers
// are given, the CustomMesh they describe.
func OtherMeshesWith(containers, markers []string) ([]OtherMesh, error) {
	meshes := DefaultOtherMeshes()
	if len(containers) == 0 && len(markers) == 0 {
		return meshes, nil
	}
	m, err := CustomMesh(containers, markers)
	if err != nil {
		return nil, err
	}
	return append(meshes, m), nil
}

// CustomMesh is a mesh named by the user: containers by name, and
// annotations ("key" or "key=value") that mark its pods.
func CustomMesh(containers, markers []string) (OtherMesh, error) {
	for _, m := range markers {
		k, _, _ := strings.Cut(m, "=")
		if k == "" || strings.ContainsAny(k, " \t") {
			return OtherMesh{}, fmt.Errorf("%q is not an annotation key or key=value", m)
		}
	}
	for _, c := range containers {
		if c == "" || strings.ContainsAny(c, " \t=") {
			return OtherMesh{}, fmt.Errorf("%q is not a container name", c)
		}
	}
	return OtherMesh{Name: "another mesh", Containers: containers, Markers: markers}, nil
}

// found says what of m the pod carries ("" when nothing): the first
// container, else the first marker.
func (m OtherMesh) found(p podTarget) string {
	spec := p.spec()
	for _, key := range []string{"initContainers", "containers"} {
		for _, name := range m.Containers {
			if hasContainer(get(spec, key), name) {
				return "container " + name
			}
		}
	}
	annotations, labels := p.podKeyValues()
	return marked(m.Markers, annotations, labels)
}

// keyValues are annotations or labels: a pod's YAML mapping (node), read as
// stringMap reads it but without making a map (most pods are looked at for
// every other mesh's markers, and carry none), or the API's map (m).
type keyValues struct {
	node *yaml.Node
	m    map[string]string
}

func (kv keyValues) lookup(k string) (string, bool) {
	if kv.node != nil {
		return stringAt(kv.node, k)
	}
	v, ok := kv.m[k]
	return v, ok
}

// podKeyValues returns the pod's annotations and labels.
func (p podTarget) podKeyValues() (annotations, labels keyValues) {
	meta := p.meta()
	return keyValues{node: get(meta, "annotations")}, keyValues{node: get(meta, "labels")}
}

// marked returns the first of markers ("key" or "key=value") found in the
// annotations or labels, as "annotation key: value" ("" when none).
func marked(markers []string, annotations, labels keyValues) string {
	for _, mk := range markers {
		k, v, hasValue := strings.Cut(mk, "=")
		for _, w := range []struct {
			what string
			kv   keyValues
		}{{"annotation", annotations}, {"label", labels}} {
			if got, ok := w.kv.lookup(k); ok && (!hasValue || got == v) {
				return w.what + " " + k + ": " + got
			}
		}
	}
	return ""
}

// namespaceInjects says why the other mesh's injector will also mesh a pod
// created in ns ("" when it will not).
func (m OtherMesh) namespaceInjects(p podTarget, ns Namespace) string {
	what := marked(m.Namespaces, keyValues{m: ns.Annotations}, keyValues{m: ns.Labels})
	if what == "" {
		return ""
	}
	if annotations, labels := p.podKeyValues(); marked(m.OptOut, annotations, labels) != "" {
		return ""
	}
	return fmt.Sprintf("its namespace %s is also meshed by %s (%s): two proxies in one pod cannot work; choose one mesh for the namespace",
		ns.Name, m.Name, what)
}

// owns reports whether an annotation or label key is in m's domains.
func (m OtherMesh) owns(key string) bool {
	domain, _, found := strings.Cut(key, "/")
	if !found {
		return false
	}
	for _, d := range m.Domains {
		if domain == d || strings.HasSuffix(domain, "."+d) {
			return true
		}
	}
	return false
}

// otherMesh returns the first of meshes the pod carries and what shows it.
func (p podTarget) otherMesh(meshes []OtherMesh) (OtherMesh, string) {
	for _, m := range meshes {
		if what := m.found(p); what != "" {
			return m, what
		}
	}
	return OtherMesh{}, ""
}

// otherMeshReason is the skip reason for a pod of another mesh.
func otherMeshReason(m OtherMesh, what string) string {
	return fmt.Sprintf("it is meshed by %s (%s): two proxies in one pod cannot work; migrate it with --force, which replaces %s's proxy with Conduit's",
		m.Name, what, m.Name)
}

// replaceMesh takes m out of the pod: its containers, the volumes only they
// mounted, the annotations and labels of its domains, and (Istio) the
// probes it rewrote to its own agent. Settings Conduit has an equivalent for
// (opaque and skipped ports) are returned as overrides.
func (p podTarget) replaceMesh(m OtherMesh) map[string]string {
	t, spec, meta := p.edits, p.spec(), p.meta()
	ann := p.annotations()
	carried := map[string]string{}
	for _, k := range sortedKeys(m.Ports) {
		if v, ok := ann[k]; ok {
			if n, err := NormalizeOverride(m.Ports[k], v); err == nil {
				carried[m.Ports[k]] = n
			}
		}
	}
	restoreIstioProbes(p)
	var gone []string
	for _, key := range []string{"initContainers", "containers"} {
		ctrs := get(spec, key)
		for _, name := range m.Containers {
			if c := namedItem(ctrs, name); c != nil {
				gone = append(gone, mountNames(c)...)
				t.removeNamed(ctrs, name)
				if len(ctrs.Content) == 0 && key == "initContainers" {
					t.del(spec, key)
				}
			}
		}
	}
	kept := map[string]bool{}
	for _, key := range []string{"initContainers", "containers", "ephemeralContainers"} {
		if s := get(spec, key); isSeq(s) {
			for _, c := range s.Content {
				for _, v := range mountNames(resolve(c)) {
					kept[v] = true
				}
			}
		}
	}
	vols := get(spec, "volumes")
	for _, v := range gone {
		if !kept[v] {
			t.removeNamed(vols, v)
		}
	}
	if isSeq(vols) && len(vols.Content) == 0 && len(gone) > 0 {
		t.del(spec, "volumes")
	}
	for _, key := range []string{"annotations", "labels"} {
		kv := get(meta, key)
		var drop []string
		for _, k := range sortedKeys(stringMap(kv)) {
			if m.owns(k) || (m.Name == Istio.Name && key == "annotations" && istioScrape(kv, k)) {
				drop = append(drop, k)
			}
		}
		for _, k := range drop {
			t.del(kv, k)
		}
		if len(drop) > 0 && len(kv.Content) == 0 {
			t.del(meta, key)
		}
	}
	return carried
}

// istioScrape reports whether k is one of the prometheus.io annotations
// Istio points at its own agent (/stats/prometheus on port 15020).
func istioScrape(ann *yaml.Node, k string) bool {
	if !strings.HasPrefix(k, "prometheus.io/") {
		return false
	}
	path, _ := getString(ann, "prometheus.io/path")
	port, _ := getString(ann, "prometheus.io/port")
	return path == "/stats/prometheus" && port == "15020"
}

// restoreIstioProbes gives the app containers back the probes Istio
// rewrote to /app-health/<container>/<kind> on its agent: the originals are
// kept in istio-proxy's ISTIO_KUBE_APP_PROBERS variable.
func restoreIstioProbes(p podTarget) {
	spec := p.spec()
	var raw string
	for _, key := range []string{"containers", "initContainers"} {
		if c := namedItem(get(spec, key), "istio-proxy"); c != nil {
			if env := namedItem(get(c, "env"), "ISTIO_KUBE_APP_PROBERS"); env != nil {
				raw, _ = getString(env, "value")
			}
		}
	}
	if raw == "" {
		return
	}
	var probers map[string]map[string]json.RawMessage
	if json.Unmarshal([]byte(raw), &probers) != nil {
		return
	}
	ctrs := get(spec, "containers")
	if !isSeq(ctrs) {
		return
	}
	kinds := []struct{ field, suffix string }{{"livenessProbe", "livez"}, {"readinessProbe", "readyz"}, {"startupProbe", "startupz"}}
	for _, c := range ctrs.Content {
		c = resolve(c)
		name, _ := getString(c, "name")
		for _, k := range kinds {
			probe := get(c, k.field)
			path, _ := getString(get(probe, "httpGet"), "path")
			orig, ok := probers["/app-health/"+name+"/"+k.suffix]
			if path == "" || !ok || path != "/app-health/"+name+"/"+k.suffix {
				continue
			}
			p.edits.del(probe, "httpGet")
			for _, h := range slices.Sorted(maps.Keys(orig)) {
				if h == "timeoutSeconds" {
					continue
				}
				if n, err := jsonToNode(orig[h]); err == nil {
					p.edits.set(probe, h, n)
				}
			}
		}
	}
}

// mountNames returns the volumes a container mounts.
func mountNames(c *yaml.Node) []string {
	var names []string
	if s := get(c, "volumeMounts"); isSeq(s) {
		for _, m := range s.Content {
			if n, ok := getString(m, "name"); ok {
				names = append(names, n)
			}
		}
	}
	return names
}
