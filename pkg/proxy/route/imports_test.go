package route

import (
	"testing"

	"github.com/conduitmesh/conduit/internal/testenv"
)

// TestImports: the proxy decodes protobuf by hand; this package links
// nothing but the standard library, protowire, grpcwire, httpmatch and
// x/net's hpack (cmd/conduit-proxy/deps_test.go bans heavy modules from
// the binary once it imports this package; this holds before it does).
func TestImports(t *testing.T) {
	testenv.LinksOnly(t, ".", []string{
		"github.com/conduitmesh/conduit/pkg/proxy/route",
		"github.com/conduitmesh/conduit/pkg/proxy/httpmatch",
		"github.com/conduitmesh/conduit/pkg/proxy/grpcwire",
		"google.golang.org/protobuf/encoding/protowire",
		"google.golang.org/protobuf/internal/", // protowire's own imports
		"golang.org/x/net/",                    // hpack
	})
}
