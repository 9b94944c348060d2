package inject

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	"go.yaml.in/yaml/v3"
)

// podTarget locates one pod (a Pod, or a workload's pod template).
type podTarget struct {
	holder *yaml.Node // the mapping holding "metadata" and "spec"
	edits  *textEdits // records additions for splicing (nil: none)
	// namespace is the namespace the pod will run in ("" when unknown).
	namespace string
}

func (p podTarget) meta() *yaml.Node { return get(p.holder, "metadata") }
func (p podTarget) spec() *yaml.Node { return get(p.holder, "spec") }

// annotations returns the pod's annotations as a map (nil when none).
func (p podTarget) annotations() map[string]string { return stringMap(get(p.meta(), "annotations")) }

// stringAt returns what stringMap(m)[key] would, without making the map:
// the last scalar stored under key.
func stringAt(m *yaml.Node, key string) (string, bool) {
	if !isMap(m) {
		return "", false
	}
	for i := len(m.Content)&^1 - 2; i >= 0; i -= 2 {
		if m.Content[i].Value != key {
			continue
		}
		if v := resolve(m.Content[i+1]); v != nil && v.Kind == yaml.ScalarNode {
			return v.Value, true
		}
	}
	return "", false
}

func stringMap(m *yaml.Node) map[string]string {
	if !isMap(m) {
		return nil
	}
	out := make(map[string]string, len(m.Content)/2)
	for i := 0; i+1 < len(m.Content); i += 2 {
		if v := resolve(m.Content[i+1]); v != nil && v.Kind == yaml.ScalarNode {
			out[m.Content[i].Value] = v.Value
		}
	}
	return out
}

// restore is the record kept in AnnotationRestore: for every annotation and
// label injection set, the value it had before (nil: absent), and which
// containers of fields injection created. Uninject replays it backwards.
type restore struct {
	Annotations map[string]*string `json:"annotations,omitempty"`
	Labels      map[string]*string `json:"labels,omitempty"`
	Created     []string           `json:"created,omitempty"`
}

// Created field names.
const (
	createdMetadata       = "metadata"
	createdAnnotations    = "metadata.annotations"
	createdLabels         = "metadata.labels"
	createdInitContainers = "spec.initContainers"
	createdVolumes        = "spec.volumes"
)

// editor changes an object's metadata and records the original values, so
// that the change can be reversed exactly. Earlier records win: a pod
// annotated by the CLI and then injected by the webhook uninjects to what the
// user wrote.
type editor struct {
	holder *yaml.Node
	t      *textEdits
	rec    restore
	loaded bool // the object already had a record: keep it up to date
	// keepEmpty: a map or list injection adds to was there but empty, which
	// uninject cannot tell from one it created without a record.
	keepEmpty bool
}

func newEditor(holder *yaml.Node, t *textEdits) *editor {
	e := &editor{holder: holder, t: t}
	if s, ok := getString(get(get(holder, "metadata"), "annotations"), AnnotationRestore); ok {
		// A damaged record restarts from scratch.
		e.loaded = json.Unmarshal([]byte(s), &e.rec) == nil
	}
	if e.rec.Annotations == nil {
		e.rec.Annotations = map[string]*string{}
	}
	if e.rec.Labels == nil {
		e.rec.Labels = map[string]*string{}
	}
	return e
}

func (e *editor) created(what string, did bool) {
	if did && !slices.Contains(e.rec.Created, what) {
		e.rec.Created = append(e.rec.Created, what)
	}
}

func (e *editor) metaMap(key, createdName string) *yaml.Node {
	meta, c := e.t.ensureMap(e.holder, "metadata")
	e.created(createdMetadata, c)
	e.noteEmpty(meta, c)
	m, c := e.t.ensureMap(meta, key)
	e.created(createdName, c)
	e.noteEmpty(m, c)
	return m
}

func (e *editor) noteEmpty(n *yaml.Node, created bool) {
	if !created && len(n.Content) == 0 {
		e.keepEmpty = true
	}
}

// setAnnotation sets k=v and reports whether anything changed.
func (e *editor) setAnnotation(k, v string) bool {
	return e.setIn(e.metaMap("annotations", createdAnnotations), e.rec.Annotations, k, v)
}

func (e *editor) setLabel(k, v string) bool {
	return e.setIn(e.metaMap("labels", createdLabels), e.rec.Labels, k, v)
}

func (e *editor) setIn(m *yaml.Node, rec map[string]*string, k, v string) bool {
	old, had := getString(m, k)
	if _, recorded := rec[k]; !recorded {
		if had {
			rec[k] = &old
		} else {
			rec[k] = nil
		}
	}
	if had && old == v {
		return false
	}
	e.t.set(m, k, strNode(v))
	return true
}

// commit writes the record into the object's annotations when uninject
// could not do without it: without a record, uninject removes the proxy
// version annotation and label and an "enabled" conduit.io/inject, and the
// maps that leaves empty, which undoes the common case exactly.
func (e *editor) commit() error {
	if !e.loaded && !e.recordNeeded() {
		return nil
	}
	m := e.metaMap("annotations", createdAnnotations)
	b, err := json.Marshal(e.rec)
	if err != nil {
		return fmt.Errorf("recording the injection: %w", err)
	}
	e.t.set(m, AnnotationRestore, strNode(string(b)))
	return nil
}

func (e *editor) recordNeeded() bool {
	if e.keepEmpty {
		return true
	}
	for k, v := range e.rec.Annotations {
		if v != nil || (k != AnnotationInject && k != AnnotationProxyVersion) {
			return true
		}
	}
	for k, v := range e.rec.Labels {
		if v != nil || k != LabelProxyVersion {
			return true
		}
	}
	return false
}

// skipReason says why the pod must not be meshed, or "".
func (p podTarget) skipReason(controlPlaneNS string) string {
	spec := p.spec()
	if !isMap(spec) {
		return "it has no pod spec"
	}
	if reason := p.outOfReach(controlPlaneNS); reason != "" {
		return reason
	}
	if hasContainer(get(spec, "containers"), ProxyContainerName) || hasContainer(get(spec, "initContainers"), ProxyContainerName) {
		return "it is already meshed (it has a conduit-proxy container)"
	}
	if v, _ := getString(get(p.meta(), "annotations"), AnnotationInject); v == ValueDisabled {
		return "it is annotated " + AnnotationInject + ": " + ValueDisabled
	}
	return ""
}

// outOfReach says why inject never meshes the pod, whatever it carries (""
// when it may): inject skips such pods and uninject leaves them alone.
func (p podTarget) outOfReach(controlPlaneNS string) string {
	if v, _ := getString(p.spec(), "hostNetwork"); v == "true" {
		return "the pod uses hostNetwork, so its traffic cannot be redirected to a proxy"
	}
	if controlPlaneNS != "" && p.namespace == controlPlaneNS {
		return "it is in the control plane namespace " + controlPlaneNS
	}
	return ""
}

// annotate marks the pod for the webhook and writes the overrides as
// config.conduit.io/* annotations. It reports whether anything changed.
func (p podTarget) annotate(overrides map[string]string) (bool, error) {
	e := newEditor(p.holder, p.edits)
	changed := e.setAnnotation(AnnotationInject, ValueEnabled)
	for _, name := range sortedKeys(overrides) {
		if e.setAnnotation(ConfigPrefix+name, overrides[name]) {
			changed = true
		}
	}
	if !changed {
		return false, nil
	}
	return true, e.commit()
}

// sidecarFor returns the rendered sidecar for cfg, caching by configuration.
type sidecarCache map[ProxyConfig]*sidecar

func (c sidecarCache) get(cfg ProxyConfig) (*sidecar, error) {
	if s, ok := c[cfg]; ok {
		return s, nil
	}
	s, err := newSidecar(cfg)
	if err != nil {
		return nil, err
	}
	c[cfg] = s
	return s, nil
}

// inject writes the full sidecar into the pod. base is the configuration
// before this pod's annotations; overrides (from the CLI) are written as
// annotations and win over the pod's own.
// Without record (the webhook: pods are never uninjected) nothing is kept
// for uninject beyond what it can work out.
func (p podTarget) inject(base ProxyConfig, overrides map[string]string, cache sidecarCache, record bool) error {
	e := newEditor(p.holder, p.edits)
	for _, name := range sortedKeys(overrides) {
		e.setAnnotation(ConfigPrefix+name, overrides[name])
	}
	cfg, err := base.WithOverrides(p.annotations())
	if err != nil {
		return err
	}
	sc, err := cache.get(cfg)
	if err != nil {
		return err
	}
	e.setAnnotation(AnnotationInject, ValueEnabled)
	e.setAnnotation(AnnotationProxyVersion, cfg.Version)
	e.setLabel(LabelProxyVersion, cfg.Version)

	// The sidecar's nodes are shared, not copied: nothing edits them later.
	t, spec := p.edits, p.spec()
	inits, c := t.ensureSeq(spec, "initContainers")
	e.created(createdInitContainers, c)
	e.noteEmpty(inits, c)
	t.insertAt(inits, 0, sc.init)
	if cfg.NativeSidecar {
		t.insertAt(inits, 1, sc.proxy)
	} else {
		ctrs, _ := t.ensureSeq(spec, "containers")
		t.insertAt(ctrs, len(ctrs.Content), sc.proxy)
	}
	vols, c := t.ensureSeq(spec, "volumes")
	e.created(createdVolumes, c)
	e.noteEmpty(vols, c)
	t.insertAt(vols, len(vols.Content), sc.tokenVol)
	if !record {
		return nil
	}
	return e.commit()
}

// uninject removes everything inject and annotate added and restores what
// they changed. It reports whether anything changed.
func uninjectObject(holder *yaml.Node, t *textEdits) bool {
	changed := false
	if spec := get(holder, "spec"); isMap(spec) {
		for _, key := range []string{"initContainers", "containers"} {
			s := get(spec, key)
			if t.removeNamed(s, ProxyContainerName) {
				changed = true
			}
			if t.removeNamed(s, InitContainerName) {
				changed = true
			}
		}
		v := get(spec, "volumes")
		if t.removeNamed(v, TokenVolumeName) {
			changed = true
		}
		if t.removeNamed(v, legacyTrustRootsVolume) {
			changed = true
		}
	}
	meta := get(holder, "metadata")
	ann := get(meta, "annotations")
	raw, hasRecord := getString(ann, AnnotationRestore)
	var rec restore
	if hasRecord && json.Unmarshal([]byte(raw), &rec) == nil {
		t.del(ann, AnnotationRestore)
		t.replay(ann, rec.Annotations)
		t.replay(get(meta, "labels"), rec.Labels)
		spec := get(holder, "spec")
		for _, what := range slices.Backward(rec.Created) {
			switch what {
			case createdInitContainers:
				t.delIfEmpty(spec, "initContainers")
			case createdVolumes:
				t.delIfEmpty(spec, "volumes")
			case createdAnnotations:
				t.delIfEmpty(meta, "annotations")
			case createdLabels:
				t.delIfEmpty(meta, "labels")
			}
		}
		// metadata last: it holds the other two.
		if slices.Contains(rec.Created, createdMetadata) {
			t.delIfEmpty(holder, "metadata")
		}
		return true
	}
	// No (usable) record: take off what injection always adds, and the
	// maps that leaves empty.
	if hasRecord {
		t.del(ann, AnnotationRestore)
		changed = true
	}
	if t.del(ann, AnnotationProxyVersion) {
		changed = true
	}
	if v, _ := getString(ann, AnnotationInject); v == ValueEnabled && t.del(ann, AnnotationInject) {
		changed = true
	}
	if t.del(get(meta, "labels"), LabelProxyVersion) {
		changed = true
	}
	if changed {
		spec := get(holder, "spec")
		t.delIfEmpty(spec, "initContainers")
		t.delIfEmpty(spec, "volumes")
		t.delIfEmpty(meta, "annotations")
		t.delIfEmpty(meta, "labels")
		t.delIfEmpty(holder, "metadata")
	}
	return changed
}

// replay restores the recorded values (nil: the key was absent).
func (t *textEdits) replay(m *yaml.Node, rec map[string]*string) {
	if !isMap(m) {
		return
	}
	for _, k := range slices.Sorted(maps.Keys(rec)) {
		if v := rec[k]; v == nil {
			t.del(m, k)
		} else if old, _ := getString(m, k); old != *v {
			t.set(m, k, strNode(*v))
		}
	}
}

func (t *textEdits) delIfEmpty(m *yaml.Node, key string) {
	if v := get(m, key); v != nil && (v.Kind == yaml.MappingNode || v.Kind == yaml.SequenceNode) && len(v.Content) == 0 {
		t.del(m, key)
	}
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
