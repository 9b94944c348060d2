package api

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
)

// TestGeneratedCodeIsCurrent regenerates every .pb.go file into a temporary
// directory and compares it with the committed one.
func TestGeneratedCodeIsCurrent(t *testing.T) {
	if _, err := exec.LookPath("protoc"); err != nil {
		t.Skip("protoc is not installed (Debian: apt-get install protobuf-compiler libprotobuf-dev)")
	}
	if testing.Short() {
		t.Skip("builds the protoc plugins; skipped with -short")
	}
	out := t.TempDir()
	cmd := exec.Command("bash", filepath.Join("hack", "gen.sh"), out)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("hack/gen.sh failed: %v\n%s", err, b)
	}

	committed := generatedFiles(t, ".")
	fresh := generatedFiles(t, out)
	if diff := setDiff(fresh, committed); len(diff) > 0 {
		t.Errorf("generated but not committed: %s (run pkg/api/hack/gen.sh)", strings.Join(diff, ", "))
	}
	if diff := setDiff(committed, fresh); len(diff) > 0 {
		t.Errorf("committed but no longer generated: %s (delete them)", strings.Join(diff, ", "))
	}
	for _, name := range fresh {
		want, err := os.ReadFile(filepath.Join(out, name))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil {
			continue // reported above
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is stale: run pkg/api/hack/gen.sh and commit the result", name)
		}
	}
}

// generatedFiles lists the .pb.go files under root, relative to it.
func generatedFiles(t *testing.T, root string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() && d.Name() == "hack" {
			return filepath.SkipDir
		}
		if !d.IsDir() && strings.HasSuffix(path, ".pb.go") {
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("listing generated files under %s: %v", root, err)
	}
	sort.Strings(names)
	return names
}

// setDiff returns the names in a that are not in b.
func setDiff(a, b []string) []string {
	in := make(map[string]bool, len(b))
	for _, s := range b {
		in[s] = true
	}
	var out []string
	for _, s := range a {
		if !in[s] {
			out = append(out, s)
		}
	}
	return out
}
