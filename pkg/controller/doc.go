// Package controller is the root of Conduit's control plane libraries; the
// conduit-controller command wires them together:
//
//   - discovery: the Backend seam and its snapshot Hub; discovery/kube
//     (informers on Services, EndpointSlices, Pods, ReplicaSets) and
//     discovery/local (a registry file, for `conduit demo` and tests)
//   - destination: the Destination gRPC service, streaming the difference
//     between consecutive snapshots to every watching proxy
//   - identity: the issuer, token validators (TokenReview, local tokens) and
//     the Identity gRPC service; also the controller's own certificate
//   - injector: the proxy-injector admission webhook
//   - stats, tap: the Stats and TapAPI services
package controller
