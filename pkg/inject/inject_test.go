package inject

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
	corev1 "k8s.io/api/core/v1"
)

var update = flag.Bool("update", false, "rewrite the golden files")

// testOptions are the options the golden files were made with.
func testOptions(manual bool) Options {
	return Options{Manual: manual, Proxy: testProxyConfig("v1.2.3")}
}

// testProxyConfig is DefaultProxyConfig with the test trust anchors.
func testProxyConfig(version string) ProxyConfig {
	pem, err := os.ReadFile(filepath.Join("testdata", "trust-anchors.pem"))
	if err != nil {
		panic(err)
	}
	c := DefaultProxyConfig(version)
	c.TrustAnchorsPEM = string(pem)
	return c
}

// inputs returns the golden inputs: testdata/<name>.input.{yaml,json}.
func inputs(t testing.TB) map[string][]byte {
	t.Helper()
	return inputsLike(t, "testdata/*.input.*")
}

// inputsLike returns the files that match pattern, by base name.
func inputsLike(t testing.TB, pattern string) map[string][]byte {
	t.Helper()
	paths, err := filepath.Glob(pattern)
	if err != nil || len(paths) == 0 {
		t.Fatalf("no inputs like %s: %v", pattern, err)
	}
	out := map[string][]byte{}
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(p)] = b
	}
	return out
}

// goldenName turns "job.input.yaml" into "job.manual.golden.yaml".
func goldenName(input, mode string) string {
	name, ext, _ := strings.Cut(input, ".input.")
	return name + "." + mode + ".golden." + ext
}

func checkGolden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(want, got) {
		t.Errorf("%s differs (-want +got):\n%s", name, lineDiff(string(want), string(got)))
	}
}

// lineDiff is a small line-oriented diff for test failures.
func lineDiff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	var b strings.Builder
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			b.WriteString("-" + wl + "\n+" + gl + "\n")
		}
	}
	return b.String()
}

func TestGolden(t *testing.T) {
	for name, in := range inputs(t) {
		for _, mode := range []string{"manual", "annotate"} {
			t.Run(name+"/"+mode, func(t *testing.T) {
				out, _, err := Inject(in, testOptions(mode == "manual"))
				if err != nil {
					t.Fatal(err)
				}
				checkGolden(t, goldenName(name, mode), out)
			})
		}
	}
}

// objects decodes a YAML or JSON stream into plain values, one per document.
func objects(t *testing.T, b []byte) []any {
	t.Helper()
	out, err := decodeObjects(b)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func decodeObjects(b []byte) ([]any, error) {
	var out []any
	if looksLikeJSON(b) {
		dec := json.NewDecoder(bytes.NewReader(b))
		for {
			var v any
			if err := dec.Decode(&v); errors.Is(err, io.EOF) {
				return out, nil
			} else if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var v any
		if err := dec.Decode(&v); errors.Is(err, io.EOF) {
			return out, nil
		} else if err != nil {
			return nil, err
		}
		if v != nil {
			out = append(out, v)
		}
	}
}

// encoderFaithful reports whether yaml.v3 re-encodes every document of a
// YAML stream to the same objects (it does not for some degenerate inputs,
// such as anchored null keys); comparisons with re-encoding need that.
func encoderFaithful(b []byte) bool {
	if looksLikeJSON(b) {
		return true
	}
	want, err := decodeObjects(b)
	if err != nil {
		return false
	}
	var buf bytes.Buffer
	for _, d := range splitYAML(b) {
		root, err := parseYAMLDoc(d.body)
		if err != nil {
			return false
		}
		if root.Kind == 0 {
			continue
		}
		buf.WriteString("---\n")
		if encodeYAML(&buf, root, d.body) != nil {
			return false
		}
	}
	got, err := decodeObjects(buf.Bytes())
	return err == nil && reflect.DeepEqual(want, got)
}

func TestIdempotent(t *testing.T) {
	for name, in := range inputs(t) {
		for _, first := range []bool{false, true} {
			for _, second := range []bool{false, true} {
				once, _, err := Inject(in, testOptions(first))
				if err != nil {
					t.Fatal(err)
				}
				twice, res, err := Inject(once, testOptions(second))
				if err != nil {
					t.Fatal(err)
				}
				if second == first && !bytes.Equal(once, twice) {
					t.Errorf("%s manual=%v: injecting twice changed the output:\n%s", name, first, lineDiff(string(once), string(twice)))
				}
				if second == first {
					for _, r := range res {
						if r.Changed {
							t.Errorf("%s manual=%v: second pass reports %s %q changed", name, first, r.Kind, r.Name)
						}
					}
				}
			}
		}
	}
}

func TestUninjectRoundTrip(t *testing.T) {
	for name, in := range inputs(t) {
		for _, manual := range []bool{false, true} {
			injected, _, err := Inject(in, testOptions(manual))
			if err != nil {
				t.Fatal(err)
			}
			back, res, err := Uninject(injected, Options{})
			if err != nil {
				t.Fatal(err)
			}
			for _, r := range res {
				if r.Reencoded != "" && !strings.HasPrefix(name, "mixed.") && !strings.HasSuffix(name, ".json") {
					t.Errorf("%s manual=%v: uninject re-encoded %s %q: %s", name, manual, r.Kind, r.Name, r.Reencoded)
				}
			}
			if want, got := objects(t, in), objects(t, back); !reflect.DeepEqual(want, got) {
				t.Errorf("%s manual=%v: uninject(inject(x)) != x:\n%s", name, manual, lineDiff(string(in), string(back)))
			}
			// Additions and removals are spliced into the text, so the
			// bytes come back too, comments and layout included (not for
			// mixed, whose flow-style labels inject had to re-encode).
			if !strings.HasPrefix(name, "mixed.") && !bytes.Equal(in, back) {
				t.Errorf("%s manual=%v: bytes differ after the round trip:\n%s", name, manual, lineDiff(string(in), string(back)))
			}
			again, res, err := Uninject(back, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(again, back) {
				t.Errorf("%s: uninjecting twice changed the output", name)
			}
			for _, r := range res {
				if r.Changed {
					t.Errorf("%s: second uninject reports %s %q changed", name, r.Kind, r.Name)
				}
			}
		}
	}
}

// spliceMatchesEncode checks that writing additions into the original text
// gives the same objects as re-encoding the whole document.
func spliceMatchesEncode(t *testing.T, in []byte, opts Options) {
	t.Helper()
	spliced, _, err := Inject(in, opts)
	if err != nil || !encoderFaithful(in) {
		return
	}
	p, err := newInjector(opts)
	if err != nil {
		t.Fatal(err)
	}
	p.noSplice = true
	encoded, _, err := p.stream(in)
	if err != nil {
		t.Fatalf("re-encoding failed where splicing worked: %v", err)
	}
	if !reflect.DeepEqual(objects(t, spliced), objects(t, encoded)) {
		t.Errorf("spliced and re-encoded output differ:\n%s", lineDiff(string(encoded), string(spliced)))
	}
}

func TestSpliceMatchesEncode(t *testing.T) {
	for name, in := range inputs(t) {
		for _, manual := range []bool{false, true} {
			t.Run(name, func(t *testing.T) { spliceMatchesEncode(t, in, testOptions(manual)) })
		}
	}
}

// uninjectMatchesEncode is spliceMatchesEncode for Uninject.
func uninjectMatchesEncode(t *testing.T, in []byte) {
	t.Helper()
	spliced, _, err := Uninject(in, Options{})
	if err != nil || !encoderFaithful(in) {
		return
	}
	p := &processor{mode: modeUninject, noSplice: true}
	encoded, _, err := p.stream(in)
	if err != nil {
		t.Fatalf("re-encoding failed where splicing worked: %v", err)
	}
	if !reflect.DeepEqual(objects(t, spliced), objects(t, encoded)) {
		t.Errorf("spliced and re-encoded uninject differ:\n%s", lineDiff(string(encoded), string(spliced)))
	}
}

// TestUninjectLegacy: workloads injected by earlier versions, whose proxy
// mounted the trust anchors from a ConfigMap volume, uninject exactly too.
func TestUninjectLegacy(t *testing.T) {
	in, err := os.ReadFile(filepath.Join("testdata", "deployment.input.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(filepath.Join("testdata", "legacy", "deployment.configmap-trust-roots.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	back, _, err := Uninject(old, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back, in) {
		t.Errorf("uninject of a legacy injection differs from the input:\n%s", lineDiff(string(in), string(back)))
	}
}

func TestUninjectSpliceMatchesEncode(t *testing.T) {
	for name, in := range inputs(t) {
		for _, manual := range []bool{false, true} {
			t.Run(name, func(t *testing.T) {
				out, _, err := Inject(in, testOptions(manual))
				if err != nil {
					t.Fatal(err)
				}
				uninjectMatchesEncode(t, out)
			})
		}
	}
}

func TestMeshed(t *testing.T) {
	for _, tc := range []struct {
		spec corev1.PodSpec
		want bool
	}{
		{corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}}}, false},
		{corev1.PodSpec{InitContainers: []corev1.Container{{Name: InitContainerName}, {Name: ProxyContainerName}}, Containers: []corev1.Container{{Name: "app"}}}, true},
		{corev1.PodSpec{Containers: []corev1.Container{{Name: "app"}, {Name: ProxyContainerName}}}, true},
	} {
		if got := Meshed(&tc.spec); got != tc.want {
			t.Errorf("Meshed(%+v) = %v, want %v", tc.spec, got, tc.want)
		}
	}
}
