package version

import (
	"strings"
	"testing"
)

func TestImageRef(t *testing.T) {
	for _, v := range []string{"v0.3.0", "v0.3.0-rc.1", "v0.3.0-2-g12b7b85", "12b7b85-dirty", "dev", "_x", strings.Repeat("a", 128)} {
		got, err := ImageRef(ProxyImage, v)
		if err != nil || got != ProxyImage+":"+v {
			t.Errorf("ImageRef(%q) = %q, %v; want the version as the tag", v, got, err)
		}
	}
	for _, v := range []string{"", "v1.0+build", "-x", ".x", "a b", "v1/2", strings.Repeat("a", 129)} {
		if got, err := ImageRef(ProxyImage, v); err == nil || !strings.Contains(err.Error(), "cannot be an image tag") {
			t.Errorf("ImageRef(%q) = %q, %v; want a tag error", v, got, err)
		}
	}
}
