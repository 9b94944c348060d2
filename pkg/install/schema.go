package install

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/santhosh-tekuri/jsonschema/v6/kind"
	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chartutil"

	"github.com/conduitmesh/conduit/pkg/pki"
)

// ValueError is a chart value that the chart's values.schema.json rejects:
// one line naming the value, what is wrong and what to do.
type ValueError struct {
	// Path is the value's path as --set spells it: controller.replicas,
	// webhook.otherMeshContainers[0], controller.podLabels.app\.kubernetes\.io/name.
	Path    string
	Problem string // what is wrong with it
	Fix     string // what to do
	// Others are the paths of further rejected values, if any.
	Others []string
}

func (e *ValueError) Error() string {
	s := fmt.Sprintf("invalid chart value %s: %s; %s", e.Path, e.Problem, e.Fix)
	if len(e.Others) > 0 {
		s += fmt.Sprintf(" (also invalid: %s)", strings.Join(e.Others, ", "))
	}
	return s
}

// ValidateValues checks userValues, merged over ch's defaults by Helm's
// rules, against the chart's values.schema.json, as `helm install` does,
// and returns a *ValueError for the first value it rejects (by path).
func ValidateValues(ch *chart.Chart, userValues map[string]any) error {
	if ch.Schema == nil {
		return nil
	}
	vals, err := chartutil.CoalesceValues(ch, userValues)
	if err != nil {
		return fmt.Errorf("merging the values with the chart's defaults: %w", err)
	}
	// A null is no value (`--set key=null` removes one), whatever the key.
	dropNulls(vals)
	raw, err := jsonschema.UnmarshalJSON(bytes.NewReader(ch.Schema))
	if err != nil {
		return fmt.Errorf("the chart's values.schema.json is not JSON: %w", err)
	}
	const loc = "file:///values.schema.json"
	c := jsonschema.NewCompiler()
	if err := c.AddResource(loc, raw); err != nil {
		return fmt.Errorf("loading the chart's values.schema.json: %w", err)
	}
	sch, err := c.Compile(loc)
	if err != nil {
		return fmt.Errorf("compiling the chart's values.schema.json: %w", err)
	}
	err = sch.Validate(map[string]any(vals))
	var ve *jsonschema.ValidationError
	if err == nil {
		return checkLifetime(vals)
	} else if !errors.As(err, &ve) {
		return fmt.Errorf("checking the values against values.schema.json: %w", err)
	}
	var found []*ValueError
	for _, leaf := range leaves(ve) {
		found = append(found, describe(leaf, vals, raw))
	}
	sort.SliceStable(found, func(i, j int) bool { return found[i].Path < found[j].Path })
	first := found[0]
	for _, o := range found[1:] {
		if o.Path != first.Path && (len(first.Others) == 0 || first.Others[len(first.Others)-1] != o.Path) {
			first.Others = append(first.Others, o.Path)
		}
	}
	return first
}

// leaves are the errors of ve that have no further causes: the failing
// keywords themselves.
func leaves(ve *jsonschema.ValidationError) []*jsonschema.ValidationError {
	if len(ve.Causes) == 0 {
		return []*jsonschema.ValidationError{ve}
	}
	var out []*jsonschema.ValidationError
	for _, c := range ve.Causes {
		out = append(out, leaves(c)...)
	}
	return out
}

// describe turns one failing keyword into a ValueError; vals are the
// validated values (to tell list indices from keys) and raw the schema (for
// the descriptions and the known keys).
func describe(leaf *jsonschema.ValidationError, vals map[string]any, raw any) *ValueError {
	path := valuePath(vals, leaf.InstanceLocation)
	node := schemaNode(raw, leaf.SchemaURL)
	what, _ := node["description"].(string)
	e := &ValueError{Path: path, Fix: "correct it in the -f values file or the --set flag that gives it"}
	switch k := leaf.ErrorKind.(type) {
	case *kind.Type:
		want := strings.Join(k.Want, " or ")
		e.Problem = fmt.Sprintf("it is %s %s, the chart needs %s %s", article(k.Got), k.Got, article(k.Want[0]), want)
		switch {
		case slices.Contains(k.Want, "object"):
			e.Fix = fmt.Sprintf("give its keys instead (--set %s.<key>=<value>)", path)
		case slices.Contains(k.Want, "array"):
			e.Fix = fmt.Sprintf("give a list (--set %s={a,b})", path)
		case k.Got == "string":
			e.Fix = "write it unquoted in the -f values file, or use --set rather than --set-string"
		case slices.Contains(k.Want, "string"):
			e.Fix = "quote it in the -f values file, or use --set-string rather than --set"
		}
	case *kind.Enum:
		e.Problem = fmt.Sprintf("%s is not one of %s", jsonText(k.Got), enumText(k.Want))
		e.Fix = "use one of those"
	case *kind.AdditionalProperties:
		sort.Strings(k.Properties)
		e.Path = joinPath(path, k.Properties[0])
		e.Problem = "the chart has no such value"
		known := knownKeys(node)
		e.Fix = fmt.Sprintf("check its spelling against values.yaml, or remove it (--set %s=null)", e.Path)
		if len(known) > 0 {
			where := path
			if where == "" {
				where = "the chart"
			}
			e.Fix = fmt.Sprintf("check its spelling (%s has %s), or remove it (--set %s=null)", where, strings.Join(known, ", "), e.Path)
		}
		for _, p := range k.Properties[1:] {
			e.Others = append(e.Others, joinPath(path, p))
		}
	case *kind.Pattern:
		if what != "" {
			e.Problem = fmt.Sprintf("%q is not %s", k.Got, what)
		} else {
			e.Problem = fmt.Sprintf("%q does not match %s", k.Got, k.Want)
		}
	case *kind.Minimum:
		e.Problem = withWhat(fmt.Sprintf("%s is less than %s", k.Got.RatString(), k.Want.RatString()), what)
	case *kind.Maximum:
		e.Problem = withWhat(fmt.Sprintf("%s is more than %s", k.Got.RatString(), k.Want.RatString()), what)
	case *kind.MinLength:
		e.Problem = withWhat(fmt.Sprintf("it has %d characters, at least %d are needed", k.Got, k.Want), what)
	case *kind.MaxLength:
		e.Problem = withWhat(fmt.Sprintf("it has %d characters, at most %d are allowed", k.Got, k.Want), what)
	default:
		e.Problem = withWhat(leaf.BasicOutput().Error.String(), what)
	}
	if e.Path == "" {
		e.Path = "(the values as a whole)"
	}
	return e
}

// dropNulls removes the null values of m, recursively.
func dropNulls(m map[string]any) {
	for k, v := range m {
		switch v := v.(type) {
		case nil:
			delete(m, k)
		case map[string]any:
			dropNulls(v)
		}
	}
}

// valuePath spells a JSON pointer's tokens as --set does: keys joined with
// dots (a dot inside a key escaped), list indices in brackets.
func valuePath(vals map[string]any, tokens []string) string {
	path := ""
	var cur any = vals
	for _, tok := range tokens {
		if list, ok := cur.([]any); ok {
			path += "[" + tok + "]"
			cur = nil
			if i, err := strconv.Atoi(tok); err == nil && i < len(list) {
				cur = list[i]
			}
			continue
		}
		path = joinPath(path, tok)
		m, _ := cur.(map[string]any)
		cur = m[tok]
	}
	return path
}

// joinPath appends key to a --set path.
func joinPath(path, key string) string {
	key = strings.ReplaceAll(key, ".", `\.`)
	if path == "" {
		return key
	}
	return path + "." + key
}

// schemaNode returns the schema object at url's fragment (a JSON pointer
// into raw), or nil.
func schemaNode(raw any, schemaURL string) map[string]any {
	_, frag, _ := strings.Cut(schemaURL, "#")
	cur := raw
	for _, tok := range strings.Split(strings.TrimPrefix(frag, "/"), "/") {
		if tok == "" {
			continue
		}
		if t, err := url.PathUnescape(tok); err == nil {
			tok = t
		}
		tok = strings.NewReplacer("~1", "/", "~0", "~").Replace(tok)
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[tok]
	}
	m, _ := cur.(map[string]any)
	return m
}

// knownKeys are the keys a schema object names in "properties", sorted.
func knownKeys(node map[string]any) []string {
	props, _ := node["properties"].(map[string]any)
	keys := make([]string, 0, len(props))
	for k := range props {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// withWhat adds the schema's description of the value to a problem.
func withWhat(problem, what string) string {
	if what == "" {
		return problem
	}
	return problem + " (want " + what + ")"
}

func article(typ string) string {
	if typ != "" && strings.ContainsAny(typ[:1], "aeiou") {
		return "an"
	}
	return "a"
}

func jsonText(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Sprint(v)
	}
	return string(b)
}

func enumText(want []any) string {
	parts := make([]string, len(want))
	for i, w := range want {
		parts[i] = jsonText(w)
	}
	return strings.Join(parts, ", ")
}

// checkLifetime checks what the schema cannot: that the workload
// certificates' lifetime is at least the controller's minimum (a shorter
// one would stop the controller at start, in a crash loop).
func checkLifetime(vals map[string]any) error {
	identity, _ := vals["identity"].(map[string]any)
	issuer, _ := identity["issuer"].(map[string]any)
	v, _ := issuer["issuanceLifetime"].(string)
	if d, err := time.ParseDuration(v); err == nil && d < pki.MinLeafLifetime {
		return &ValueError{Path: "identity.issuer.issuanceLifetime",
			Problem: fmt.Sprintf("%s is shorter than the %v the controller needs", v, pki.MinLeafLifetime),
			Fix:     fmt.Sprintf("give at least %v (the default is 24h0m0s)", pki.MinLeafLifetime)}
	}
	return nil
}
