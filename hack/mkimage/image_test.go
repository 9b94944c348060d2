package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/conduitmesh/conduit/pkg/ociimage"
)

// The image is the one ko builds on distroless static-debian12:nonroot:
// ko's config on the base's, the binary at /ko-app, the base's stand-in
// files, and nothing else. (pkg/ociimage's tests check the archive itself.)
func TestImageIsKosLayout(t *testing.T) {
	img, err := newImage(releaseBuild{Path: "/build/conduit-proxy", Name: "conduit-proxy", Version: "v0.3.0", Arch: "arm64"})
	if err != nil {
		t.Fatal(err)
	}
	want := ociimage.Image{
		Refs:  []string{"ghcr.io/conduitmesh/conduit-proxy:v0.3.0", "ghcr.io/conduitmesh/conduit-proxy:latest"},
		Files: map[string]string{"/ko-app/conduit-proxy": "/build/conduit-proxy"},
		Contents: map[string][]byte{
			"/etc/passwd": []byte("root:x:0:0:root:/root:/sbin/nologin\n" +
				"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin\n" +
				"nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"),
			"/etc/group":         []byte("root:x:0:\nnobody:x:65534:\nnonroot:x:65532:\n"),
			"/etc/nsswitch.conf": []byte("hosts: files dns\n"),
		},
		Dirs: map[string]os.FileMode{"/tmp": 0o1777, "/home/nonroot": 0o700,
			"/var": 0o555, "/var/run": 0o555, "/var/run/ko": 0o555},
		Modes:      map[string]os.FileMode{"/ko-app": 0o555, "/ko-app/conduit-proxy": 0o555},
		Owners:     map[string]ociimage.Owner{"/home/nonroot": {UID: 65532, GID: 65532}},
		Entrypoint: []string{"/ko-app/conduit-proxy"},
		Env: []string{
			"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/ko-app",
			"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
			"KO_DATA_PATH=/var/run/ko",
		},
		User:       "65532",
		WorkingDir: "/home/nonroot",
		OS:         "linux",
		Arch:       "arm64",
	}
	if !reflect.DeepEqual(img, want) {
		t.Errorf("image\n got %+v\nwant %+v", img, want)
	}
	if _, err := newImage(releaseBuild{Name: "conduit", Version: "v1"}); err == nil || !strings.Contains(err.Error(), "has no image") {
		t.Errorf("an image of the CLI: %v", err)
	}
	if _, err := newImage(releaseBuild{Name: "conduit-proxy", Version: "v1+meta"}); err == nil || !strings.Contains(err.Error(), "cannot be an image tag") {
		t.Errorf("an untaggable version: %v", err)
	}
}

// Only release builds are packed: this test binary is not one, and the
// message says what to pass.
func TestRejectsNonReleaseBinaries(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	var stdout, stderr bytes.Buffer
	if err := run([]string{"-version", "v0.3.0", "-out", t.TempDir(), self}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "pass conduit-proxy or conduit-controller") {
		t.Errorf("packing the test binary: %v", err)
	}
	notGo := filepath.Join(t.TempDir(), "conduit-proxy")
	if err := os.WriteFile(notGo, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := run([]string{notGo}, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "not a Go binary") {
		t.Errorf("packing a shell script: %v", err)
	}
	if err := run(nil, &stdout, &stderr); err == nil || !strings.Contains(err.Error(), "no binaries given") {
		t.Errorf("no arguments: %v", err)
	}
}

// The version is what the binary prints for --version where it runs, and
// a string it contains where it cannot (another architecture).
func TestCheckVersion(t *testing.T) {
	script := filepath.Join(t.TempDir(), "conduit-proxy")
	if err := os.WriteFile(script, []byte("#!/bin/sh\necho conduit-proxy v0.3.0\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	here := releaseBuild{Path: script, Name: "conduit-proxy", Arch: runtime.GOARCH}
	here.Version = "v0.3.0"
	if err := checkVersion(here); err != nil {
		t.Errorf("matching version: %v", err)
	}
	here.Version = "v0.4.0"
	if err := checkVersion(here); err == nil || !strings.Contains(err.Error(), `says it is version "conduit-proxy v0.3.0", not "v0.4.0"`) {
		t.Errorf("other version: %v", err)
	}
	here.Version = ""
	if err := checkVersion(here); err == nil || !strings.Contains(err.Error(), "no -version given") {
		t.Errorf("no version: %v", err)
	}
	other := releaseBuild{Path: script, Name: "conduit-proxy", Arch: "other", Version: "v0.3.0"}
	if err := checkVersion(other); err != nil {
		t.Errorf("cross-built, version inside: %v", err)
	}
	other.Version = "v0.4.0"
	if err := checkVersion(other); err == nil || !strings.Contains(err.Error(), `does not contain version "v0.4.0"`) {
		t.Errorf("cross-built, version not inside: %v", err)
	}
}
