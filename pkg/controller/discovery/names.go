package discovery

import "strings"

// ServiceName is a service named by a DNS form of the authority.
type ServiceName struct {
	Namespace string
	Name      string
	// Hostname is set for a pod's name under a headless service:
	// <hostname>.<service>.<namespace>.svc.<cluster-domain>.
	Hostname string
}

// ParseServiceHost recognises the names a pod uses for a service:
// svc.ns.svc.<clusterDomain>, svc.ns.svc, svc.ns, and (with defaultNamespace)
// svc; also host.svc.ns.svc.<clusterDomain> for a pod of a headless service.
// It reports false for any other name, such as an external host.
func ParseServiceHost(host, clusterDomain, defaultNamespace string) (ServiceName, bool) {
	host = strings.TrimSuffix(strings.ToLower(host), ".")
	clusterDomain = strings.Trim(strings.ToLower(clusterDomain), ".")
	if rest, ok := strings.CutSuffix(host, ".svc."+clusterDomain); ok {
		host = rest + ".svc"
	}
	labels := strings.Split(host, ".")
	if labels[len(labels)-1] == "svc" {
		labels = labels[:len(labels)-1]
		switch len(labels) {
		case 2:
			return ServiceName{Namespace: labels[1], Name: labels[0]}, validLabels(labels)
		case 3:
			return ServiceName{Namespace: labels[2], Name: labels[1], Hostname: labels[0]}, validLabels(labels)
		}
		return ServiceName{}, false
	}
	switch len(labels) {
	case 1:
		if defaultNamespace == "" {
			return ServiceName{}, false
		}
		return ServiceName{Namespace: defaultNamespace, Name: labels[0]}, validLabels(labels)
	case 2:
		return ServiceName{Namespace: labels[1], Name: labels[0]}, validLabels(labels)
	}
	return ServiceName{}, false
}

// validLabels reports whether every label is a DNS-1123 label, which is what
// service, namespace and pod host names are.
func validLabels(labels []string) bool {
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for _, c := range l {
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-') {
				return false
			}
		}
	}
	return true
}

// SpiffeID returns the identity of a service account's proxies.
func SpiffeID(trustDomain, namespace, serviceAccount string) string {
	if serviceAccount == "" {
		serviceAccount = "default"
	}
	return "spiffe://" + trustDomain + "/ns/" + namespace + "/sa/" + serviceAccount
}
