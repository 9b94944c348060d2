// Package discovery is the seam between the controller's Destination service
// and where endpoints come from: Kubernetes informers (package
// discovery/kube) or a local registry file (package discovery/local).
//
// A backend publishes Snapshots: the complete, immutable state of one
// authority. The Destination service turns consecutive snapshots into
// add/remove/no_endpoints updates for each stream, so a slow stream only ever
// skips intermediate states and never queues without bound.
package discovery

import (
	"errors"
	"fmt"
	"maps"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// ErrInvalidAuthority marks an authority that is not host:port.
var ErrInvalidAuthority = errors.New("invalid authority")

// Endpoint is one address serving an authority.
type Endpoint struct {
	Addr netip.AddrPort
	// Identity is the SPIFFE ID of the endpoint's proxy; empty when unmeshed.
	Identity string
	// Weight is relative to the authority's other endpoints; 0 means 1.
	Weight uint32
	// Labels describe the endpoint for metrics: pod, deployment, serviceaccount, ...
	Labels map[string]string
}

// Equal reports whether two endpoints would be announced identically.
func (e Endpoint) Equal(o Endpoint) bool {
	return e.Addr == o.Addr && e.Identity == o.Identity && e.Weight == o.Weight && maps.Equal(e.Labels, o.Labels)
}

// Snapshot is the state of one authority. Snapshots are shared between
// streams and must not be modified after they are published.
type Snapshot struct {
	// Exists is false when the backend knows no service behind the authority
	// (or one it cannot resolve, such as an ExternalName service): the proxy
	// should then connect to the original destination.
	Exists bool
	// Reason explains an empty snapshot to a human.
	Reason string
	// Labels apply to every endpoint: namespace, service.
	Labels map[string]string
	// Endpoints are keyed by address.
	Endpoints map[netip.AddrPort]Endpoint
	// Version, when not zero, identifies this snapshot among those a Hub
	// published: equal versions mean the same snapshot, so the changes
	// between two versions can be computed once for every stream.
	Version uint64
}

// Listener receives snapshots. Update must not block: backends call it while
// they hold their own locks.
type Listener interface {
	Update(Snapshot)
}

// ListenerFunc adapts a function to a Listener.
type ListenerFunc func(Snapshot)

// Update calls f(s).
func (f ListenerFunc) Update(s Snapshot) { f(s) }

// Backend resolves authorities.
type Backend interface {
	// Subscribe calls l.Update with the authority's current snapshot before
	// it returns, and again every time the snapshot changes, until cancel is
	// called. ctxToken is the caller's context token (may be empty), used to
	// resolve short names such as "web:80" in the caller's namespace.
	// It fails with ErrInvalidAuthority for an authority it cannot parse.
	Subscribe(authority, ctxToken string, l Listener) (cancel func(), err error)
}

// Target is what an authority names, as a backend resolves it: a
// Service by name (Namespace, Name; Hostname for one pod of a headless
// Service), an IP address (a cluster IP or a pod IP), or an External name
// outside the cluster; and the port. Outbound routing looks the Service up
// with it.
type Target struct {
	Namespace, Name, Hostname string
	IP                        netip.Addr
	External                  string
	Port                      uint16
}

// Authority is a parsed host:port.
type Authority struct {
	Host string // lower case, without a trailing dot
	Port uint16
	// IP is set when Host is an IP address.
	IP netip.Addr
}

func (a Authority) String() string {
	return net.JoinHostPort(a.Host, strconv.Itoa(int(a.Port)))
}

// ParseAuthority parses host:port. A missing port means 80, as in HTTP.
func ParseAuthority(s string) (Authority, error) {
	if s == "" {
		return Authority{}, fmt.Errorf("%w: empty", ErrInvalidAuthority)
	}
	host, portStr, err := net.SplitHostPort(s)
	if err != nil {
		// No port: the whole string is the host (brackets allowed for IPv6).
		host, portStr = strings.TrimSuffix(strings.TrimPrefix(s, "["), "]"), "80"
		if strings.Contains(host, ":") {
			if _, perr := netip.ParseAddr(host); perr != nil {
				return Authority{}, fmt.Errorf("%w %q: want host:port", ErrInvalidAuthority, s)
			}
		}
	}
	port, err := strconv.ParseUint(portStr, 10, 16)
	if err != nil || port == 0 {
		return Authority{}, fmt.Errorf("%w %q: port %q is not a number from 1 to 65535", ErrInvalidAuthority, s, portStr)
	}
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	if host == "" {
		return Authority{}, fmt.Errorf("%w %q: empty host", ErrInvalidAuthority, s)
	}
	a := Authority{Host: host, Port: uint16(port)}
	if ip, err := netip.ParseAddr(host); err == nil {
		if ip.Zone() != "" {
			// A zone names an interface of the sender's host: it means
			// nothing to a service, and may hold any byte (even "]").
			return Authority{}, fmt.Errorf("%w %q: an IPv6 zone (%%%s) names no service", ErrInvalidAuthority, s, ip.Zone())
		}
		a.IP = ip.Unmap()
	} else if !dnsName(host) {
		return Authority{}, fmt.Errorf("%w %q: host is not a DNS name or IP address", ErrInvalidAuthority, s)
	}
	return a, nil
}

// dnsName reports whether host (lower case) could be a DNS name: letters,
// digits, '-', '_' and non-empty dot-separated labels.
func dnsName(host string) bool {
	if len(host) > 253 {
		return false
	}
	for _, l := range strings.Split(host, ".") {
		if l == "" || len(l) > 63 {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
