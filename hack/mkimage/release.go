package main

import (
	"debug/buildinfo"
	"fmt"
	"path"
	"slices"
	"strings"
)

// modulePath is the product's module; its commands are packed.
const modulePath = "github.com/conduitmesh/conduit"

// versionVar is the variable the release links the version into.
const versionVar = modulePath + "/pkg/version.Version"

// releaseBuild is what a binary's build information says about it.
type releaseBuild struct {
	Path    string // the binary's file
	Name    string // command name: conduit-proxy, conduit-controller
	Version string // linked into versionVar
	Arch    string // GOARCH
}

// readRelease reads a binary's build information and checks that it is
// built as the release builds it (goreleaser.yaml builds, the Makefile's
// build): static (CGO_ENABLED=0) for linux, -trimpath, stripped (-s -w),
// with the version linked in. The image's tag is that version.
func readRelease(file string) (releaseBuild, error) {
	bi, err := buildinfo.ReadFile(file)
	if err != nil {
		return releaseBuild{}, fmt.Errorf("%s: not a Go binary with build information: %w", file, err)
	}
	rb := releaseBuild{Path: file, Name: path.Base(bi.Path)}
	if !strings.HasPrefix(bi.Path, modulePath+"/cmd/") {
		return rb, fmt.Errorf("%s is built from %s, not from %s/cmd/...: pass conduit-proxy or conduit-controller", file, bi.Path, modulePath)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	rb.Arch = settings["GOARCH"]
	var wrong []string
	for key, want := range map[string]string{"CGO_ENABLED": "0", "GOOS": "linux", "-trimpath": "true"} {
		if got := settings[key]; got != want {
			wrong = append(wrong, fmt.Sprintf("%s=%q (want %q)", key, got, want))
		}
	}
	slices.Sort(wrong)
	flags := ldflags(settings["-ldflags"])
	for _, f := range []string{"-s", "-w"} {
		if !slices.Contains(flags, f) {
			wrong = append(wrong, "ldflags without "+f)
		}
	}
	v, ok := linkedVersion(flags)
	if !ok {
		wrong = append(wrong, "no -X "+versionVar+"=VERSION in ldflags")
	}
	rb.Version = v
	if len(wrong) > 0 {
		return rb, fmt.Errorf("%s is not a release build (%s): build it with CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags \"-s -w -X %s=VERSION\" (make images does)",
			file, strings.Join(wrong, ", "), versionVar)
	}
	return rb, nil
}

// ldflags splits the recorded -ldflags value into arguments, -X=a=b as
// "-X", "a=b".
func ldflags(s string) []string {
	var out []string
	for _, f := range strings.Fields(s) {
		if v, ok := strings.CutPrefix(f, "-X="); ok {
			out = append(out, "-X", v)
			continue
		}
		out = append(out, f)
	}
	return out
}

// linkedVersion returns the last value -X gives versionVar (the linker's
// rule: the last one wins).
func linkedVersion(flags []string) (v string, ok bool) {
	for i := 0; i+1 < len(flags); i++ {
		if flags[i] != "-X" && flags[i] != "--X" {
			continue
		}
		if val, found := strings.CutPrefix(flags[i+1], versionVar+"="); found {
			v, ok = val, true
		}
	}
	return v, ok
}
