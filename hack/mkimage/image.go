package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/conduitmesh/conduit/pkg/ociimage"
	"github.com/conduitmesh/conduit/pkg/version"
)

// repository returns a command's image repository (goreleaser.yaml kos:
// repositories, bare).
func repository(command string) (string, bool) {
	switch command {
	case "conduit-proxy":
		return version.ProxyImage, true
	case "conduit-controller":
		return version.ControllerImage, true
	}
	return "", false
}

// appDir is where ko puts the binary.
const appDir = "/ko-app"

// koDataPath is ko's KO_DATA_PATH; ko adds the directory (0555) even when
// the command has no kodata, as here.
const koDataPath = "/var/run/ko"

// koMode is the mode ko gives the binary and the directories it adds.
const koMode = 0o555

// newImage describes the image ko builds from rb on distroless
// static-debian12:nonroot, tagged as goreleaser.yaml's kos tag it: with
// the version linked into the binary (v{{.Version}} in a release), and
// latest.
func newImage(rb releaseBuild) (ociimage.Image, error) {
	repo, ok := repository(rb.Name)
	if !ok {
		return ociimage.Image{}, fmt.Errorf("command %s has no image: the release ships images of conduit-proxy and conduit-controller only", rb.Name)
	}
	bin := appDir + "/" + rb.Name
	img := ociimage.Image{
		Files:    map[string]string{bin: rb.Path},
		Contents: baseFiles(),
		Dirs:     baseDirs(),
		Modes:    map[string]os.FileMode{appDir: koMode, bin: koMode},
		Owners:   map[string]ociimage.Owner{baseWorkingDir: {UID: nonrootID, GID: nonrootID}},
		// The base's config, then ko's changes: the entrypoint (and no
		// Cmd), /ko-app appended to PATH, KO_DATA_PATH added.
		Entrypoint: []string{bin},
		User:       baseUser,
		WorkingDir: baseWorkingDir,
		OS:         "linux",
		Arch:       rb.Arch,
	}
	for _, d := range []string{"/var", "/var/run", koDataPath} {
		img.Dirs[d] = koMode
	}
	for _, tag := range []string{rb.Version, "latest"} {
		ref, err := version.ImageRef(repo, tag)
		if err != nil {
			return ociimage.Image{}, err
		}
		img.Refs = append(img.Refs, ref)
	}
	for _, e := range baseEnv() {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			e = "PATH=" + v + ":" + appDir
		}
		img.Env = append(img.Env, e)
	}
	img.Env = append(img.Env, "KO_DATA_PATH="+koDataPath)
	return img, nil
}
