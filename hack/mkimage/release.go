package main

import (
	"bytes"
	"context"
	"debug/buildinfo"
	"debug/elf"
	"fmt"
	"os"
	"os/exec"
	"path"
	"runtime"
	"slices"
	"strings"
	"time"
)

// modulePath is the product's module; its commands are packed.
const modulePath = "github.com/conduitmesh/conduit"

// releaseFlags is how the release builds a binary (goreleaser.yaml builds,
// the Makefile).
const releaseFlags = `CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w -X ` + modulePath + `/pkg/version.Version=VERSION"`

// releaseBuild is a checked release binary.
type releaseBuild struct {
	Path    string // the binary's file
	Name    string // command name: conduit-proxy, conduit-controller
	Version string // linked in
	Arch    string // GOARCH
}

// readRelease checks that file is built as the release builds it, with
// version linked in, and says which command it is for which architecture.
// The build info shows CGO_ENABLED, GOOS, GOARCH and -trimpath (Go does not
// record -ldflags under -trimpath); the ELF file shows -s -w (no symbol
// table, no DWARF); the version is what the binary prints for --version
// when it can run here, else a string the binary must contain.
func readRelease(file, version string) (releaseBuild, error) {
	bi, err := buildinfo.ReadFile(file)
	if err != nil {
		return releaseBuild{}, fmt.Errorf("%s: not a Go binary with build information: %w", file, err)
	}
	rb := releaseBuild{Path: file, Name: path.Base(bi.Path), Version: version}
	if !strings.HasPrefix(bi.Path, modulePath+"/cmd/") {
		return rb, fmt.Errorf("%s is built from %s, not from %s/cmd/...: pass conduit-proxy or conduit-controller", file, bi.Path, modulePath)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	rb.Arch = settings["GOARCH"]
	var wrong []string
	for _, kv := range [][2]string{{"-trimpath", "true"}, {"CGO_ENABLED", "0"}, {"GOOS", "linux"}} {
		if got := settings[kv[0]]; got != kv[1] {
			wrong = append(wrong, fmt.Sprintf("%s=%q, want %q", kv[0], got, kv[1]))
		}
	}
	if len(wrong) == 0 {
		wrong = append(wrong, stripped(file)...)
	}
	if len(wrong) > 0 {
		return rb, fmt.Errorf("%s is not a release build (%s): build it with %s (make images does)", file, strings.Join(wrong, "; "), releaseFlags)
	}
	if err := checkVersion(rb); err != nil {
		return rb, err
	}
	return rb, nil
}

// stripped reports what of -s -w is missing from an ELF binary.
func stripped(file string) []string {
	f, err := elf.Open(file)
	if err != nil {
		return []string{"not an ELF file: " + err.Error()}
	}
	defer f.Close()
	var wrong []string
	if f.Section(".symtab") != nil {
		wrong = append(wrong, "has a symbol table (no -ldflags -s)")
	}
	if slices.ContainsFunc(f.Sections, func(s *elf.Section) bool { return strings.HasPrefix(s.Name, ".debug_") }) {
		wrong = append(wrong, "has DWARF (no -ldflags -w)")
	}
	return wrong
}

// checkVersion checks that rb's binary is linked with rb.Version.
func checkVersion(rb releaseBuild) error {
	if rb.Version == "" {
		return fmt.Errorf("no -version given: pass the VERSION %s was linked with", rb.Path)
	}
	if rb.Arch == runtime.GOARCH && runtime.GOOS == "linux" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, rb.Path, "--version").Output()
		if err != nil {
			return fmt.Errorf("running %s --version: %w", rb.Path, err)
		}
		fields := strings.Fields(string(out))
		if len(fields) == 0 || fields[len(fields)-1] != rb.Version {
			return fmt.Errorf("%s says it is version %q, not %q: build it with VERSION=%s", rb.Path, strings.TrimSpace(string(out)), rb.Version, rb.Version)
		}
		return nil
	}
	// Built for another architecture: the linked string must be in it.
	data, err := os.ReadFile(rb.Path)
	if err != nil {
		return err
	}
	if !bytes.Contains(data, []byte(rb.Version)) {
		return fmt.Errorf("%s does not contain version %q: build it with VERSION=%s", rb.Path, rb.Version, rb.Version)
	}
	return nil
}
