// Package controller is Conduit's control plane: Run serves a Config (the
// conduit-controller flags) by wiring together the libraries below it, with
// an admin port (/metrics, /ready, /live) and gRPC call metrics of its own:
//
//   - discovery: the Backend seam and its snapshot Hub; discovery/kube
//     (informers on Services, EndpointSlices, Pods, ReplicaSets) and
//     discovery/local (a registry file, for `conduit demo` and tests)
//   - destination: the Destination gRPC service, streaming the difference
//     between consecutive snapshots to every watching proxy
//   - identity: the issuer, token validators (TokenReview, local tokens) and
//     the Identity gRPC service; also the controller's own certificate
//   - injector: the proxy-injector admission webhook
//   - policy: the InboundPolicies gRPC service, each port's inbound policy
//     from the policy.conduit.io resources (a default policy without a cluster)
//   - stats, tap: the Stats and TapAPI services
package controller
