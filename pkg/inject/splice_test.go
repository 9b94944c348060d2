package inject

import (
	"testing"

	yamlv2 "go.yaml.in/yaml/v2"
	"go.yaml.in/yaml/v3"
)

// TestScalarRendering checks that scalars written by the splicer read back
// as the same strings with YAML 1.2 (yaml.v3) and YAML 1.1 (yaml.v2, as
// older kubectl) readers.
func TestScalarRendering(t *testing.T) {
	for _, s := range []string{
		"enabled", "v1.2.3", "50m", "64Mi", "1", "1e3", "0x1F", "1_000", "12:30", "2001-12-14",
		"3306,5432", "8000-9000", "true", "Yes", "off", "y", "null", "~", "", " lead", "a: b", "#x",
		"-", "- a", "{x}", "[x]", `quote"d`, "multi\nline", "tab\there", "ünï", "@at", "`tick", "%pct",
		`{"annotations":{"conduit.io/inject":null}}`, "conduit.io/proxy-version",
	} {
		text, ok := plainOrQuoted(strNode(s))
		if !ok {
			t.Fatalf("%q not rendered", s)
		}
		var v3 map[string]any
		if err := yaml.Unmarshal([]byte("k: "+text+"\n"), &v3); err != nil || v3["k"] != s {
			t.Errorf("%q written as %s reads back as %#v with yaml.v3 (%v)", s, text, v3["k"], err)
		}
		var v2 map[string]any
		if err := yamlv2.Unmarshal([]byte("k: "+text+"\n"), &v2); err != nil || v2["k"] != s {
			t.Errorf("%q written as %s reads back as %#v with yaml.v2 (%v)", s, text, v2["k"], err)
		}
	}
}
