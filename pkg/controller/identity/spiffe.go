package identity

import (
	"fmt"
	"net/url"
	"strings"
)

// ID is a proxy's SPIFFE ID: spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
type ID struct {
	TrustDomain    string
	Namespace      string
	ServiceAccount string
}

func (id ID) String() string {
	return "spiffe://" + id.TrustDomain + "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount
}

// URL returns the ID as a URI SAN.
func (id ID) URL() *url.URL {
	return &url.URL{Scheme: "spiffe", Host: id.TrustDomain, Path: "/ns/" + id.Namespace + "/sa/" + id.ServiceAccount}
}

// ParseID parses spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>.
func ParseID(s string) (ID, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "spiffe" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Port() != "" {
		return ID{}, fmt.Errorf("identity %q is not spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	parts := strings.Split(strings.TrimPrefix(u.Path, "/"), "/")
	if len(parts) != 4 || parts[0] != "ns" || parts[2] != "sa" || parts[1] == "" || parts[3] == "" || u.String() != s {
		return ID{}, fmt.Errorf("identity %q is not spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	id := ID{TrustDomain: u.Host, Namespace: parts[1], ServiceAccount: parts[3]}
	if id.String() != s || id.URL().String() != s { // escaped characters: the certificate would name another string
		return ID{}, fmt.Errorf("identity %q is not spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>", s)
	}
	return id, nil
}
