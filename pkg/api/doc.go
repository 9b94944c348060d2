// Package api holds Conduit's gRPC contracts: the .proto files and the Go code
// generated from them, one package per service under <name>/v1:
//
//   - destination/v1: Destination.Get, endpoints with identities and labels
//   - identity/v1: Identity.Certify, certificates for proxies
//   - tap/v1: Tap.Observe (proxy) and TapAPI.TapByResource (controller)
//   - stats/v1: Stats.Stat and Stats.Edges (controller)
//   - policy/v1: InboundPolicies.WatchPort, who may call a proxy's ports
//   - net/v1: addresses shared by the others
//
// The generated code is committed. Regenerate it with pkg/api/hack/gen.sh after
// changing a .proto file; TestGeneratedCodeIsCurrent fails when it is stale.
package api
