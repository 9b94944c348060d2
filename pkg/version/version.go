// Package version is the version of every Conduit binary, set at link time:
//
//	go build -ldflags "-X github.com/conduitmesh/conduit/pkg/version.Version=v0.3.0"
//
// and the names of the images a version ships as. The release links
// Version=v{{.Version}} and tags its images v{{.Version}} (goreleaser.yaml),
// `make images` links the Makefile's VERSION (git describe: v0.3.0,
// v0.3.0-2-g12b7b85, 12b7b85-dirty) and tags with it; either way an image's
// tag is exactly the Version of the binary inside, with no v added or
// removed, and that is the tag `conduit install` (the chart's
// controlPlaneVersion) and the injector (conduit.io/proxy-version) use.
package version

import "fmt"

// Version is the release this binary belongs to. Development builds say "dev".
var Version = "dev"

// Image repositories, as goreleaser.yaml's kos publish them. The chart's
// values, the controller's --proxy-image and the CLI's `conduit inject`
// default to these.
const (
	ProxyImage      = "ghcr.io/conduitmesh/conduit-proxy"
	ControllerImage = "ghcr.io/conduitmesh/conduit-controller"
)

// ImageTag returns the tag of version v's images: v itself, checked against
// the OCI tag grammar (a VERSION like "v1.0+build" cannot be a tag).
func ImageTag(v string) (string, error) {
	if !validTag(v) {
		return "", fmt.Errorf("version %q cannot be an image tag: use at most 128 letters, digits, '_', '.' and '-', not starting with '.' or '-'", v)
	}
	return v, nil
}

// ImageRef returns repo:tag for version v, e.g.
// ImageRef(ProxyImage, "v0.3.0") = "ghcr.io/conduitmesh/conduit-proxy:v0.3.0".
func ImageRef(repo, v string) (string, error) {
	tag, err := ImageTag(v)
	if err != nil {
		return "", err
	}
	return repo + ":" + tag, nil
}

// validTag reports whether s matches the OCI distribution spec's tag
// grammar, [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func validTag(s string) bool {
	if len(s) == 0 || len(s) > 128 || s[0] == '.' || s[0] == '-' {
		return false
	}
	for _, c := range []byte(s) {
		ok := c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-'
		if !ok {
			return false
		}
	}
	return true
}
