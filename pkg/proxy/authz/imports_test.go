package authz

import (
	"testing"

	"github.com/conduitmesh/conduit/internal/testenv"
)

// linkable are the only packages outside the standard library this package
// may link (itself, and what they import): the proxy decodes protobuf by
// hand and speaks gRPC with grpcwire. cmd/conduit-proxy/deps_test.go bans
// heavy modules from the proxy binary once it imports this package; this
// allowlist is stricter and holds before it does.
var linkable = []string{
	"github.com/conduitmesh/conduit/pkg/proxy/authz",
	"github.com/conduitmesh/conduit/pkg/proxy/httpmatch",
	"github.com/conduitmesh/conduit/pkg/proxy/grpcwire",
	"github.com/conduitmesh/conduit/pkg/contract",
	"google.golang.org/protobuf/encoding/protowire",
	"google.golang.org/protobuf/internal/", // protowire's own imports
	"golang.org/x/net/",
}

func TestImports(t *testing.T) { testenv.LinksOnly(t, ".", linkable) }
