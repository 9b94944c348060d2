// Package policy serves each proxy the inbound policy of its pod's ports
// (conduit.policy.v1.InboundPolicies.WatchPort) from the policy.conduit.io
// resources: the Server that selects the port (the oldest, when several
// do) with its protocol, the AuthorizationPolicies that target it or its
// namespace, and the Gateway API HTTPRoutes and GRPCRoutes whose parentRef
// it is, each with the policies that target the route; a port no Server
// selects gets the default policy (the pod's
// config.conduit.io/default-inbound-policy annotation, else its
// namespace's, else the cluster's). The kubelet's HTTP probes of a port
// without routes of its own stay admitted whatever the policy.
//
// The Index computes policies from informer caches and wakes the streams
// of a pod when an object that may change its policy changes; the GRPCServer
// sends a stream's policy again only when it differs from the last one
// sent. In the local discovery mode (`conduit demo`), Local runs the same
// Index over in-memory clientsets that it keeps in step with the local
// registry's namespaces, proxies and policy objects.
package policy
