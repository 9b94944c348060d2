package inject

import (
	"reflect"
	"strings"
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

// TestSpliceShapes runs layouts that the splicer must place right, or hand
// to the encoder, through both paths.
func TestSpliceShapes(t *testing.T) {
	const head = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n"
	for name, body := range map[string]string{
		"no trailing newline":      "    metadata:\n      labels:\n        app: web\n    spec:\n      containers:\n      - name: web\n        image: nginx",
		"trailing comments":        "    metadata:\n      labels:\n        app: web\n      # about labels\n    spec:\n      containers:\n      - name: web\n        image: nginx\n      # the end\n# really\n",
		"block scalar last":        "    spec:\n      containers:\n      - name: web\n        image: nginx\n        command:\n        - sh\n        - -c\n        - |\n          echo hi\n\n          # not a comment\n",
		"quoted multi-line last":   "    spec:\n      containers:\n      - name: web\n        image: \"nginx\n          #tag\"\n",
		"annotations with comment": "    metadata:\n      annotations:\n        # owners\n        team: a # inline\n      labels: {app: web}\n    spec:\n      containers:\n      - name: web\n        image: nginx\n",
		"indented sequences":       "    spec:\n      containers:\n        - name: web\n          image: nginx\n      initContainers:\n        - name: setup\n          image: busybox\n      volumes:\n        - name: v\n          emptyDir: {}\n",
		"document end marker":      "    spec:\n      containers:\n      - name: web\n        image: nginx\n...\n",
		"flow annotations":         "    metadata:\n      annotations: {}\n    spec:\n      containers: [{name: web, image: nginx}]\n",
		"crlf":                     "    spec:\r\n      containers:\r\n      - name: web\r\n        image: nginx\r\n",
		"tagged mapping":           "    metadata: !!map\n      labels:\n        app: web\n    spec: !!map\n      containers:\n      - name: web\n        image: nginx\n",
		"spec before metadata":     "    spec:\n      containers:\n      - name: web\n        image: nginx\n    metadata:\n      labels:\n        app: web\n",
	} {
		for _, manual := range []bool{false, true} {
			t.Run(name, func(t *testing.T) {
				in := []byte(head + body)
				out, res, err := Inject(in, testOptions(manual))
				if err != nil {
					t.Fatal(err)
				}
				if len(res) != 1 || !res[0].Changed {
					t.Fatalf("not injected: %+v", res)
				}
				if _, err := decodeObjects(out); err != nil {
					t.Fatalf("output does not parse: %v\n%s", err, out)
				}
				spliceMatchesEncode(t, in, testOptions(manual))
				uninjectMatchesEncode(t, out)
				back, _, err := Uninject(out, Options{})
				if err != nil {
					t.Fatal(err)
				}
				if want, got := objects(t, in), objects(t, back); !reflect.DeepEqual(want, got) {
					t.Errorf("uninject(inject(x)) != x:\n%s", lineDiff(string(in), string(back)))
				}
			})
		}
	}
}

// TestLayoutRoundTrip injects and uninjects pod specs in every combination
// of indentation width, list style (compact "- " at the key's column, or
// indented) per list, key order and present or absent lists: the output
// must parse, match re-encoding, and uninject must give back the very bytes.
func TestLayoutRoundTrip(t *testing.T) {
	type list struct {
		key   string
		items []string // each item's "k: v" lines
	}
	ctrs := list{"containers", []string{"name: web\nimage: nginx", "name: side\nimage: busybox"}}
	inits := list{"initContainers", []string{"name: setup\nimage: busybox"}}
	vols := list{"volumes", []string{"name: data\nemptyDir: {}"}}
	tols := list{"tolerations", []string{"key: a\noperator: Exists"}}
	write := func(b *strings.Builder, l list, col, indent int, compact bool) {
		pad := strings.Repeat(" ", col)
		b.WriteString(pad + l.key + ":\n")
		dash := col
		if !compact {
			dash += indent
		}
		for _, it := range l.items {
			for i, line := range strings.Split(it, "\n") {
				lead := strings.Repeat(" ", dash) + "- "
				if i > 0 {
					lead = strings.Repeat(" ", dash+2)
				}
				b.WriteString(lead + line + "\n")
			}
		}
	}
	n := 0
	for _, indent := range []int{2, 4} {
		for styles := range 1 << 4 { // compact or not, per list
			for present := range 1 << 3 { // initContainers, volumes, tolerations
				for _, tolsFirst := range []bool{false, true} {
					lists := []list{ctrs}
					if present&1 != 0 {
						lists = append(lists, inits)
					}
					if present&2 != 0 {
						lists = append(lists, vols)
					}
					if present&4 != 0 {
						if tolsFirst {
							lists = append([]list{tols}, lists...)
						} else {
							lists = append(lists, tols)
						}
					} else if tolsFirst {
						continue
					}
					in := func() string {
						var b strings.Builder
						ind := func(k int) string { return strings.Repeat(" ", k*indent) }
						b.WriteString("apiVersion: apps/v1\nkind: Deployment\nmetadata:\n" + ind(1) + "name: web\nspec:\n" + ind(1) + "template:\n")
						b.WriteString(ind(2) + "metadata:\n" + ind(3) + "labels:\n" + ind(4) + "app: web\n" + ind(2) + "spec:\n")
						for i, l := range lists {
							write(&b, l, 3*indent, indent, styles&(1<<i) != 0)
						}
						return b.String()
					}()
					for _, manual := range []bool{false, true} {
						n++
						out, res, err := Inject([]byte(in), testOptions(manual))
						if err != nil || len(res) != 1 || !res[0].Changed {
							t.Fatalf("inject failed (%v, %+v):\n%s", err, res, in)
						}
						if res[0].Reencoded != "" {
							t.Errorf("manual=%v: re-encoded (%s):\n%s", manual, res[0].Reencoded, in)
						}
						if _, err := decodeObjects(out); err != nil {
							t.Fatalf("manual=%v: output does not parse: %v\n%s", manual, err, out)
						}
						spliceMatchesEncode(t, []byte(in), testOptions(manual))
						back, res, err := Uninject(out, Options{})
						if err != nil {
							t.Fatalf("manual=%v: uninject: %v\n%s", manual, err, out)
						}
						if res[0].Reencoded != "" {
							t.Errorf("manual=%v: uninject re-encoded (%s):\n%s", manual, res[0].Reencoded, out)
						}
						if string(back) != in {
							t.Errorf("manual=%v: bytes differ after the round trip:\n%s", manual, lineDiff(in, string(back)))
						}
					}
				}
			}
		}
	}
	t.Logf("%d layouts", n)
}
