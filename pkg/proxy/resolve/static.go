package resolve

import (
	"context"
	"fmt"
	"net"
	"strings"
)

// Static is a fixed table of authorities, from --outbound-route flags.
type Static map[string][]Endpoint

// Endpoints implements Resolver.
func (s Static) Endpoints(_ context.Context, authority string) ([]Endpoint, error) {
	eps, ok := s[strings.ToLower(authority)]
	if !ok {
		return nil, ErrNotFound
	}
	return eps, nil
}

// ParseRoute parses AUTHORITY=HOST:PORT (AUTHORITY without a port means
// port 80) and adds it to s; repeating an authority adds endpoints.
func (s Static) ParseRoute(route string) error {
	auth, addr, ok := strings.Cut(route, "=")
	if !ok || auth == "" || addr == "" {
		return fmt.Errorf("route %q: want AUTHORITY=HOST:PORT", route)
	}
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("route %q: endpoint %q: want HOST:PORT", route, addr)
	}
	auth = strings.ToLower(auth)
	if _, _, err := net.SplitHostPort(auth); err != nil {
		auth = net.JoinHostPort(auth, "80")
	}
	s[auth] = append(s[auth], Endpoint{Addr: addr})
	return nil
}
