package install

import (
	"fmt"
	"os"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/strvals"
)

// ValueOptions are the ways a user changes the chart's values, applied in
// this order (later wins): --ha, -f files, --set, --set-string, then the
// dedicated flags that were given.
type ValueOptions struct {
	HA              bool
	ValuesFiles     []string
	Set             []string
	SetString       []string
	Namespace       string // -L; empty keeps the values' namespace
	TrustDomain     string
	Replicas        int // 0 keeps the values' replicas
	ProxyImage      string
	ControllerImage string
	ImageVersion    string // for both images; empty means the control plane version
}

// Merge applies o on top of base (the stored values on upgrade, empty on
// install) and returns the new user values. base is not modified.
func (o ValueOptions) Merge(base map[string]any) (map[string]any, error) {
	vals := deepCopyMap(base)
	if o.HA {
		ha, err := HAValues()
		if err != nil {
			return nil, err
		}
		mergeInto(vals, ha)
	}
	for _, path := range o.ValuesFiles {
		data, err := readValuesFile(path)
		if err != nil {
			return nil, err
		}
		mergeInto(vals, data)
	}
	for _, s := range o.Set {
		if err := strvals.ParseInto(s, vals); err != nil {
			return nil, fmt.Errorf("--set %q: %w (use --set key=value[,key=value])", s, err)
		}
	}
	for _, s := range o.SetString {
		if err := strvals.ParseIntoString(s, vals); err != nil {
			return nil, fmt.Errorf("--set-string %q: %w (use --set-string key=value[,key=value])", s, err)
		}
	}
	if o.Namespace != "" {
		if ns, ok := vals["namespace"].(string); ok && ns != "" && ns != o.Namespace {
			return nil, fmt.Errorf("namespace %q from -L contradicts namespace=%q from the values: give only one", o.Namespace, ns)
		}
		vals["namespace"] = o.Namespace
	}
	if o.TrustDomain != "" {
		vals["identityTrustDomain"] = o.TrustDomain
	}
	if o.Replicas < 0 {
		return nil, fmt.Errorf("--controller-replicas %d: must be at least 1", o.Replicas)
	}
	if o.Replicas > 0 {
		setPath(vals, o.Replicas, "controller", "replicas")
	}
	if o.ProxyImage != "" {
		setPath(vals, o.ProxyImage, "proxy", "image", "name")
	}
	if o.ControllerImage != "" {
		setPath(vals, o.ControllerImage, "controller", "image", "name")
	}
	if o.ImageVersion != "" {
		setPath(vals, o.ImageVersion, "proxy", "image", "version")
		setPath(vals, o.ImageVersion, "controller", "image", "version")
	}
	return vals, nil
}

// Check reports the first of these values (merged over the chart's
// defaults) that the chart's values.schema.json rejects, as a *ValueError.
// Commands that need a cluster call it first, so that a bad --set fails
// the same with or without one.
func (o ValueOptions) Check() error {
	ch, err := LoadChart("")
	if err != nil {
		return err
	}
	vals, err := o.Merge(map[string]any{})
	if err != nil {
		return err
	}
	return ValidateValues(ch, vals)
}

func readValuesFile(path string) (map[string]any, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading values file: %w", err)
	}
	vals, err := chartutil.ReadValues(data)
	if err != nil {
		return nil, fmt.Errorf("values file %s is not a YAML map: %w", path, err)
	}
	return vals.AsMap(), nil
}

// mergeInto deep-merges src into dst; src wins, maps merge, and a null in
// src deletes the key (Helm's rule).
func mergeInto(dst, src map[string]any) {
	for k, sv := range src {
		if sv == nil {
			delete(dst, k)
			continue
		}
		sm, sIsMap := sv.(map[string]any)
		dm, dIsMap := dst[k].(map[string]any)
		if sIsMap && dIsMap {
			mergeInto(dm, sm)
			continue
		}
		if sIsMap {
			sv = deepCopyMap(sm)
		}
		dst[k] = sv
	}
}

func deepCopyMap(m map[string]any) map[string]any {
	out := make(map[string]any, len(m))
	for k, v := range m {
		switch v := v.(type) {
		case map[string]any:
			out[k] = deepCopyMap(v)
		case []any:
			out[k] = append(make([]any, 0, len(v)), v...) // keep [] as [], not null
		default:
			out[k] = v
		}
	}
	return out
}

// setPath sets vals[p0][p1]...=v, creating maps on the way.
func setPath(vals map[string]any, v any, path ...string) {
	m := vals
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[path[len(path)-1]] = v
}

// getString returns vals[p0][p1]... as a string ("" when absent).
func getString(vals map[string]any, path ...string) string {
	var cur any = vals
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return ""
		}
		cur = m[p]
	}
	s, _ := cur.(string)
	return s
}

// deletePath removes vals[p0][p1]...; missing parents are fine.
func deletePath(vals map[string]any, path ...string) {
	m := vals
	for _, p := range path[:len(path)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			return
		}
		m = next
	}
	delete(m, path[len(path)-1])
}
