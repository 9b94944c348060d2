package inject

import (
	"maps"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Result is what happened to one object.
type Result struct {
	Doc       int    // 1-based number of the document in its input
	Kind      string // as written in the object ("" when it has none)
	Name      string
	Namespace string
	Changed   bool
	// Reason says why the object was left alone (Changed is false).
	Reason string
	// Reencoded says why the changed object's document was written anew
	// instead of edited in place: its objects are right, but its layout and
	// comments may differ, and uninject cannot give back the same bytes
	// ("" when it was edited in place, or for JSON, always re-encoded).
	Reencoded string
	// Replaced names the mesh whose proxy Conduit's replaced (--force).
	Replaced string
}

// workload returns the API groups of a supported kind and the path from the
// object to the mapping that holds its pod's metadata and spec.
func workload(kind string) (groups, path []string, ok bool) {
	template := []string{"spec", "template"}
	switch kind {
	case "Pod":
		return []string{""}, nil, true
	case "ReplicationController":
		return []string{""}, template, true
	case "Deployment", "ReplicaSet", "DaemonSet":
		return []string{"apps", "extensions"}, template, true
	case "StatefulSet":
		return []string{"apps"}, template, true
	case "Job":
		return []string{"batch"}, template, true
	case "CronJob":
		return []string{"batch"}, []string{"spec", "jobTemplate", "spec", "template"}, true
	}
	return nil, nil, false
}

func group(apiVersion string) string {
	g, _, found := strings.Cut(apiVersion, "/")
	if !found {
		return ""
	}
	return g
}

// mode is what an operation does to each pod.
type mode int

const (
	modeAnnotate mode = iota
	modeManual
	modeUninject
)

// processor applies one operation to every object of a stream.
type processor struct {
	mode      mode
	opts      Options
	cache     sidecarCache
	overrides map[string]string
	// edits records the current document's additions (nil: none); it is
	// scratch when set, reused for each document.
	edits   *textEdits
	scratch textEdits
	splicer splicer
	// noSplice re-encodes every changed document (tests compare the two).
	noSplice bool
}

// object processes one top-level document or List item and appends a
// Result per object.
func (p *processor) object(doc int, obj *yaml.Node, results []Result) []Result {
	obj = resolve(obj)
	kind, _ := getString(obj, "kind")
	r := Result{Doc: doc, Kind: kind}
	if !isMap(obj) {
		r.Reason = "it is not a Kubernetes object"
		return append(results, r)
	}
	r.Name, _ = getString(get(obj, "metadata"), "name")
	if r.Name == "" {
		r.Name, _ = getString(get(obj, "metadata"), "generateName")
	}
	r.Namespace, _ = getString(get(obj, "metadata"), "namespace")
	apiVersion, _ := getString(obj, "apiVersion")

	if items := get(obj, "items"); isSeq(items) && strings.HasSuffix(kind, "List") {
		for _, it := range items.Content {
			results = p.object(doc, it, results)
		}
		return results
	}
	if kind == "Namespace" && group(apiVersion) == "" {
		return append(results, p.namespace(obj, r))
	}
	groups, path, ok := workload(kind)
	if !ok || !slices.Contains(groups, group(apiVersion)) {
		r.Reason = "it has no pod template"
		if kind == "" {
			r.Reason = "it has no kind"
		}
		return append(results, r)
	}
	holder := obj
	if path != nil {
		holder = getPath(obj, path...)
	}
	if !isMap(holder) {
		r.Reason = "it has no pod template"
		return append(results, r)
	}
	pod := podTarget{holder: holder, namespace: r.Namespace, edits: p.edits}
	if p.mode == modeUninject {
		if reason := pod.outOfReach(p.opts.Proxy.ControlPlaneNamespace); reason != "" {
			r.Reason = reason + "; inject never meshes it, so it is left as it is"
			return append(results, r)
		}
		r.Changed = uninjectObject(holder, p.edits)
		if !r.Changed {
			r.Reason = "it is not injected"
		}
		return append(results, r)
	}
	if reason := pod.skipReason(p.opts.Proxy.ControlPlaneNamespace); reason != "" {
		r.Reason = reason
		return append(results, r)
	}
	overrides := p.overrides
	for {
		m, what := pod.otherMesh(p.opts.OtherMeshes)
		if what == "" {
			break
		}
		if !p.opts.ReplaceOtherMeshes {
			r.Reason = otherMeshReason(m, what)
			return append(results, r)
		}
		carried := pod.replaceMesh(m)
		if r.Replaced != "" {
			r.Replaced += " and "
		}
		r.Replaced += m.Name
		if len(carried) > 0 {
			// The user's flags win over what the other mesh had.
			overrides = maps.Clone(overrides)
			for k, v := range carried {
				if _, set := p.overrides[k]; !set {
					overrides[k] = v
				}
			}
		}
	}
	var err error
	if p.mode == modeManual {
		err = pod.inject(p.opts.Proxy, overrides, p.cache, true)
		r.Changed = err == nil
	} else {
		r.Changed, err = pod.annotate(overrides)
		if err == nil && !r.Changed {
			r.Reason = "it is already annotated " + AnnotationInject + ": " + ValueEnabled
		}
	}
	if err != nil {
		r.Changed = false
		r.Reason = err.Error()
	}
	return append(results, r)
}

// namespace handles a Namespace object: annotated for the webhook by
// default, left alone by --manual (there is no pod to inject).
func (p *processor) namespace(obj *yaml.Node, r Result) Result {
	switch p.mode {
	case modeUninject:
		if ns := p.opts.Proxy.ControlPlaneNamespace; ns != "" && r.Name == ns {
			r.Reason = "it is the control plane namespace, which inject never annotates: left as it is"
			return r
		}
		r.Changed = uninjectObject(obj, p.edits)
		if !r.Changed {
			r.Reason = "it is not annotated"
		}
	case modeManual:
		r.Reason = "namespaces are annotated only without --manual"
	default:
		if v, _ := getString(getPath(obj, "metadata", "annotations"), AnnotationInject); v == ValueDisabled {
			r.Reason = "it is annotated " + AnnotationInject + ": " + ValueDisabled
			return r
		}
		e := newEditor(obj, p.edits)
		if e.setAnnotation(AnnotationInject, ValueEnabled) {
			r.Changed = true
			if err := e.commit(); err != nil {
				r.Changed, r.Reason = false, err.Error()
			}
		} else {
			r.Reason = "it is already annotated " + AnnotationInject + ": " + ValueEnabled
		}
	}
	return r
}
