// Package install renders the embedded control plane chart and manages its
// lifecycle on a cluster: install (server-side apply), upgrade (re-render
// keeping the installed values and certificates, diff, apply, prune) and
// uninstall (delete the inventory by label).
package install

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"sort"
	"strings"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/conduitmesh/conduit/manifests"
)

// ReleaseName is the Helm release name the chart is rendered under; `helm
// template conduit manifests/` gives the same objects.
const ReleaseName = "conduit"

// LoadChart loads the chart embedded in the CLI as the chart of Conduit
// version v (see StampVersion).
func LoadChart(v string) (*chart.Chart, error) {
	ch, err := loadChartFS(manifests.Chart)
	if err != nil {
		return nil, err
	}
	StampVersion(ch, v)
	return ch, nil
}

// semVer is SemVer 2.0.0's grammar (semver.org), without a leading v.
var semVer = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$`)

// StampVersion makes ch the chart of Conduit version v, as the release
// packages it (hack/mkchart) and the CLI renders it: appVersion is v itself
// (the binaries' version and the images' tag, e.g. v0.3.0), and the chart
// version is v without its "v" when that is SemVer (0.3.0, 0.3.1-next,
// 0.3.0-2-g12b7b85). Other versions (dev, a bare commit) keep Chart.yaml's
// version; an empty v changes nothing.
func StampVersion(ch *chart.Chart, v string) {
	if v == "" {
		return
	}
	ch.Metadata.AppVersion = v
	if sv := strings.TrimPrefix(v, "v"); semVer.MatchString(sv) {
		ch.Metadata.Version = sv
	}
}

func loadChartFS(fsys fs.FS) (*chart.Chart, error) {
	var files []*loader.BufferedFile
	err := fs.WalkDir(fsys, ".", func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := fs.ReadFile(fsys, path)
		if err != nil {
			return err
		}
		files = append(files, &loader.BufferedFile{Name: path, Data: data})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading the embedded chart: %w", err)
	}
	ch, err := loader.LoadFiles(files)
	if err != nil {
		return nil, fmt.Errorf("loading the embedded chart: %w", err)
	}
	return ch, nil
}

// HAValues are the chart's high-availability overrides (values-ha.yaml).
func HAValues() (map[string]any, error) {
	data, err := fs.ReadFile(manifests.Chart, manifests.HAValuesFile)
	if err != nil {
		return nil, fmt.Errorf("reading %s: %w", manifests.HAValuesFile, err)
	}
	vals, err := chartutil.ReadValues(data)
	if err != nil {
		return nil, fmt.Errorf("parsing %s: %w", manifests.HAValuesFile, err)
	}
	return vals.AsMap(), nil
}

// Render renders the chart with user-supplied values (merged over the
// chart's defaults by Helm's rules) into objects in apply order. Values the
// chart's values.schema.json rejects give a *ValueError.
func Render(ch *chart.Chart, userValues map[string]any) ([]*unstructured.Unstructured, error) {
	ns, _ := userValues["namespace"].(string)
	if ns == "" {
		ns, _ = ch.Values["namespace"].(string)
	}
	// Checked here for its one-line error; Helm's own check (the same
	// schema) would list every failure over several lines.
	if err := ValidateValues(ch, userValues); err != nil {
		return nil, err
	}
	opts := chartutil.ReleaseOptions{Name: ReleaseName, Namespace: ns, Revision: 1, IsInstall: true}
	vals, err := chartutil.ToRenderValuesWithSchemaValidation(ch, userValues, opts, chartutil.DefaultCapabilities, true)
	if err != nil {
		return nil, fmt.Errorf("computing chart values: %w", err)
	}
	files, err := engine.Render(ch, vals)
	if err != nil {
		return nil, fmt.Errorf("rendering the chart: %w", err)
	}
	names := make([]string, 0, len(files))
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var objs []*unstructured.Unstructured
	for _, name := range names {
		if !strings.HasSuffix(name, ".yaml") {
			continue // _helpers.tpl, NOTES.txt
		}
		got, err := DecodeObjects(strings.NewReader(files[name]))
		if err != nil {
			return nil, fmt.Errorf("parsing rendered %s: %w", name, err)
		}
		objs = append(objs, got...)
	}
	if err := recordUserValues(objs, userValues); err != nil {
		return nil, err
	}
	SortForApply(objs)
	return objs, nil
}

// UserValuesKey is the key of ConfigMap conduit-config that holds the values
// the user gave (flags, files, generated certificates; private keys
// removed), as Helm keeps a release's config apart from the chart's
// defaults. `conduit upgrade` re-renders from them, so a new version's
// chart defaults apply unless the user set a value. The chart's own
// "values" key holds the merged values (what `helm template` also writes).
const UserValuesKey = "userValues"

// recordUserValues adds the user values to the rendered conduit-config.
func recordUserValues(objs []*unstructured.Unstructured, userValues map[string]any) error {
	vals := deepCopyMap(userValues)
	deletePath(vals, "identity", "issuer", "keyPEM")
	deletePath(vals, "webhook", "keyPEM")
	delete(vals, "controlPlaneVersion")
	b, err := yaml.Marshal(vals)
	if err != nil {
		return fmt.Errorf("recording the install's values: %w", err)
	}
	for _, o := range objs {
		if o.GetKind() == "ConfigMap" && o.GetName() == ConfigMapName {
			return unstructured.SetNestedField(o.Object, string(b), "data", UserValuesKey)
		}
	}
	return nil
}

// DecodeObjects parses a multi-document YAML (or JSON) stream into objects,
// skipping empty documents and unwrapping v1 Lists.
func DecodeObjects(r io.Reader) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(r, 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if err == io.EOF {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.IsList() {
			list, err := u.ToList()
			if err != nil {
				return nil, err
			}
			for i := range list.Items {
				objs = append(objs, &list.Items[i])
			}
			continue
		}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("document without kind or metadata.name")
		}
		objs = append(objs, u)
	}
}

// applyOrder ranks kinds so that what others depend on exists first and the
// webhook, which intercepts pod creation, comes last.
var applyOrder = []string{
	"Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole", "ClusterRoleBinding",
	"Role", "RoleBinding", "Secret", "ConfigMap", "Service", "Deployment", "PodDisruptionBudget",
	"MutatingWebhookConfiguration", "ValidatingWebhookConfiguration",
}

func kindRank(kind string) int {
	for i, k := range applyOrder {
		if k == kind {
			return i
		}
	}
	return len(applyOrder)
}

// SortForApply orders objects by kind dependency, then namespace and name.
func SortForApply(objs []*unstructured.Unstructured) {
	sort.SliceStable(objs, func(i, j int) bool {
		a, b := objs[i], objs[j]
		if ra, rb := kindRank(a.GetKind()), kindRank(b.GetKind()); ra != rb {
			return ra < rb
		}
		if a.GetNamespace() != b.GetNamespace() {
			return a.GetNamespace() < b.GetNamespace()
		}
		return a.GetName() < b.GetName()
	})
}

// SortForDelete is the reverse of SortForApply: the webhook goes first and
// the namespace last.
func SortForDelete(objs []*unstructured.Unstructured) {
	SortForApply(objs)
	for i, j := 0, len(objs)-1; i < j; i, j = i+1, j-1 {
		objs[i], objs[j] = objs[j], objs[i]
	}
}

// ObjectKey identifies an object across renders and the cluster.
type ObjectKey struct {
	GroupKind schema.GroupKind
	Namespace string
	Name      string
}

// KeyOf returns the key of obj.
func KeyOf(obj *unstructured.Unstructured) ObjectKey {
	return ObjectKey{GroupKind: obj.GroupVersionKind().GroupKind(), Namespace: obj.GetNamespace(), Name: obj.GetName()}
}

func (k ObjectKey) String() string {
	kind := k.GroupKind.Kind
	if k.Namespace == "" {
		return fmt.Sprintf("%s %s", kind, k.Name)
	}
	return fmt.Sprintf("%s %s/%s", kind, k.Namespace, k.Name)
}

// WriteYAML writes objects as one multi-document YAML stream.
func WriteYAML(w io.Writer, objs []*unstructured.Unstructured) error {
	var buf bytes.Buffer
	for _, obj := range objs {
		data, err := yaml.Marshal(obj.Object)
		if err != nil {
			return fmt.Errorf("encoding %s: %w", KeyOf(obj), err)
		}
		buf.WriteString("---\n")
		buf.Write(data)
	}
	_, err := w.Write(buf.Bytes())
	return err
}

// WriteJSON writes objects as one indented v1 List.
func WriteJSON(w io.Writer, objs []*unstructured.Unstructured) error {
	items := make([]any, len(objs))
	for i, obj := range objs {
		items[i] = obj.Object
	}
	list := map[string]any{"apiVersion": "v1", "kind": "List", "items": items}
	data, err := json.MarshalIndent(list, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the objects: %w", err)
	}
	_, err = w.Write(append(data, '\n'))
	return err
}
