package inject

import (
	"fmt"
	"maps"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// checkSharedParse checks that documents parsed by a shared decoder come out
// as each parses alone: the same error, or the same nodes at the same
// positions (comments aside: documents with changes to write anew are parsed
// again alone).
func checkSharedParse(t *testing.T, data []byte) (shared int) {
	t.Helper()
	docs := splitYAML(data)
	got := make([]parsedDoc, len(docs))
	parseDocs(data, docs, got)
	for i, d := range docs {
		want, wantErr := parseYAMLDoc(d.body)
		g := got[i]
		if g.shared {
			shared++
		}
		if fmt.Sprint(g.err) != fmt.Sprint(wantErr) {
			t.Fatalf("document %d (shared %v): error %v, alone %v\n%s", i+1, g.shared, g.err, wantErr, d.body)
		}
		if wantErr != nil {
			continue
		}
		if diff := nodeDiff(g.root, want, "$"); diff != "" {
			t.Fatalf("document %d (shared %v): %s\n%s", i+1, g.shared, diff, d.body)
		}
	}
	return shared
}

// nodeDiff describes the first difference between two trees, comments aside.
func nodeDiff(a, b *yaml.Node, path string) string {
	if (a == nil) != (b == nil) {
		return path + ": one is nil"
	}
	if a == nil {
		return ""
	}
	if a.Kind != b.Kind || a.Style != b.Style || a.Tag != b.Tag || a.Value != b.Value || a.Anchor != b.Anchor ||
		a.Line != b.Line || a.Column != b.Column || len(a.Content) != len(b.Content) || (a.Alias == nil) != (b.Alias == nil) {
		return fmt.Sprintf("%s: %+v != %+v", path, *a, *b)
	}
	for i := range a.Content {
		if d := nodeDiff(a.Content[i], b.Content[i], fmt.Sprintf("%s[%d]", path, i)); d != "" {
			return d
		}
	}
	return ""
}

func TestSharedParse(t *testing.T) {
	// In name order: a map's order changed which documents ended up in a
	// stretch with one that makes the whole stream fall back, and the
	// check on all of them below failed about one run in three.
	ins := inputs(t)
	var all []string
	for _, name := range slices.Sorted(maps.Keys(ins)) {
		in := ins[name]
		t.Run(name, func(t *testing.T) { checkSharedParse(t, in) })
		all = append(all, string(in))
	}
	docs := []string{
		"# only a comment\n",
		"apiVersion: v1\nkind: Pod\nmetadata:\n  name: a # trailing\nspec:\n  containers:\n  - name: c\n    image: i\n# foot\n",
		"",
		"\n\n",
		"  indented: 1\n  b: 2\n",
		"apiVersion: v1\nkind: ConfigMap\ndata:\n  k: |\n    one\n\n    two\n",
		"a: &x {b: 1}\nc: *x\n",
		"a: 1\n...\n",
		"a: 1\n...\nb: 2\n",
		"a: \"caf\u00e9\"\nb: \"x\u2028y\"\n",
		"\ufeffa: 1\n",
		"a: 1\r\nb: 2\r\n",
		"a: [1,\n",
		"a: 1\na: 2\n",
		"- 1\n- 2\n",
		"plain\n  continued\n",
		"a: 'single\n  quoted'\n",
		"%YAML 1.2\n---\na: 1\n",
		"k: v\n#c\n",
		"# head\n\nkind: Pod # k\n",
		"!!map\na: 1\n",
		"# c\n&x\na: 1\n",
		"? complex\n: key\n",
		"{a: 1, b: [2, 3]}\n",
		"\"quoted\": 'keys'\n\tx\n",
		"a: {b: 1\n",
		"a: 1",
	}
	for i, sep := range []string{"---\n", "--- # c\n", "---   \n"} {
		stream := strings.Join(docs, sep)
		t.Run(fmt.Sprint("edge cases ", i), func(t *testing.T) { checkSharedParse(t, []byte(stream)) })
	}
	// Every pair in a row, between plain documents.
	shared := 0
	for _, a := range docs {
		for _, b := range docs {
			stream := strings.Join([]string{docs[1], a, b, docs[1]}, "---\n")
			shared += checkSharedParse(t, []byte(stream))
		}
	}
	t.Logf("%d documents of pairs parsed by a shared decoder", shared)
	stream := strings.Join(all, "---\n")
	if n := checkSharedParse(t, []byte(stream)); n == 0 {
		t.Error("no document was parsed by a shared decoder")
	}
}
