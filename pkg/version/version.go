// Package version is the version of every Conduit binary, set at link time:
//
//	go build -ldflags "-X github.com/conduitmesh/conduit/pkg/version.Version=v0.3.0"
package version

// Version is the release this binary belongs to. Development builds say "dev".
var Version = "dev"

// Default proxy image and controller image repositories; the chart's values
// default to these at Version.
const (
	ProxyImage      = "ghcr.io/conduitmesh/conduit-proxy"
	ControllerImage = "ghcr.io/conduitmesh/conduit-controller"
)
