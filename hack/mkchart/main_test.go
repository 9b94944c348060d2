package main

import (
	"bytes"
	"io"
	"path/filepath"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chart/loader"
)

// TestPackage: the archive is the embedded chart stamped with the version,
// complete (schema, NOTES.txt, values-ha.yaml) and loadable by Helm.
func TestPackage(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	if err := run([]string{"-version", "v1.2.3", "-out", dir}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	want := filepath.Join(dir, "conduit-control-plane-1.2.3.tgz")
	if got := strings.TrimSpace(out.String()); got != want {
		t.Errorf("printed %q, want %q", got, want)
	}
	ch, err := loader.Load(want)
	if err != nil {
		t.Fatal(err)
	}
	if ch.Metadata.Version != "1.2.3" || ch.Metadata.AppVersion != "v1.2.3" {
		t.Errorf("version %q appVersion %q", ch.Metadata.Version, ch.Metadata.AppVersion)
	}
	if ch.Schema == nil {
		t.Error("no values.schema.json")
	}
	var names []string
	for _, f := range append(ch.Templates, ch.Files...) {
		names = append(names, f.Name)
	}
	for _, n := range []string{"templates/NOTES.txt", "templates/controller.yaml", "values-ha.yaml"} {
		if !strings.Contains(strings.Join(names, " "), n) {
			t.Errorf("the archive lacks %s: %v", n, names)
		}
	}
}

func TestRefusesNonSemVer(t *testing.T) {
	for _, args := range [][]string{{"-version", "dev"}, {"-version", "12b7b85"}, {}} {
		err := run(append(args, "-out", t.TempDir()), io.Discard, io.Discard)
		if err == nil {
			t.Errorf("%v: packaged a chart", args)
		}
	}
}
