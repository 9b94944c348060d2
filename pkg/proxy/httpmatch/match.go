// Package httpmatch matches HTTP requests against Gateway API route
// matches (conduit.policy.v1.HttpMatch: path, method, headers, query
// parameters) with the Gateway API's precedence. It is the matching core
// that inbound authorization (pkg/proxy/authz: a port's HTTP routes) and
// outbound routing (pkg/proxy/route: a Service's HTTPRoutes and
// GRPCRoutes) share: one decoder of the match messages, one precedence,
// one Request view over both of the proxy's header representations.
//
// Matches are compiled once when a message is decoded (regular expressions
// anchored to the whole value, header names lowered and canonicalized) and
// sorted by precedence (Sort), so that Pick returns the first that
// matches. Pick allocates nothing, on either kind of Request (a regular
// expression on a percent-encoded query parameter value excepted).
//
// The package links nothing but the standard library, protowire and
// grpcwire (the proxy decodes protobuf by hand).
package httpmatch

import (
	"regexp"
	"slices"
)

type pathKind uint8

const (
	pathAny pathKind = iota // no path match: every path
	pathPrefix
	pathRegex
	pathExact
)

// pathMatch is a compiled conduit.policy.v1.PathMatch.
type pathMatch struct {
	kind pathKind
	// value is the exact path, or the prefix without trailing slashes.
	value string
	re    *regexp.Regexp
}

func matchPath[S text](p *pathMatch, path S) bool {
	switch p.kind {
	case pathExact:
		return string(path) == p.value
	case pathPrefix:
		n := len(p.value)
		if len(path) < n || string(path[:n]) != p.value {
			return false
		}
		// Whole segments only: "/api" matches "/api" and "/api/x", not "/apix".
		return len(path) == n || path[n] == '/'
	case pathRegex:
		return reMatch(p.re, path)
	}
	return true
}

type valueKind uint8

const (
	// valuePresent: no value match: the header or parameter must be
	// present.
	valuePresent valueKind = iota
	valueExact
	valueRegex
)

// valueMatch is a compiled header or query parameter match.
type valueMatch struct {
	// name is lower case for headers, as given for query parameters.
	name string
	// canon is a header's canonical name (http.Header's key).
	canon string
	kind  valueKind
	exact string
	re    *regexp.Regexp
}

func matchValue[S text](m *valueMatch, v S) bool {
	switch m.kind {
	case valueExact:
		return string(v) == m.exact
	case valueRegex:
		return reMatch(m.re, v)
	}
	return true
}

func reMatch[S text](re *regexp.Regexp, s S) bool {
	switch v := any(s).(type) {
	case string:
		return re.MatchString(v)
	case []byte:
		return re.Match(v)
	}
	return re.MatchString(string(s))
}

// Match is one compiled conduit.policy.v1.HttpMatch. Build matches with
// Matches; the zero Match matches every request.
type Match struct {
	// Index is what the match selects, for its user to set: authz's route,
	// route's rule.
	Index   int
	path    pathMatch
	method  string
	headers []valueMatch
	query   []valueMatch
}

// PathPrefix returns the path prefix m matches, without trailing slashes
// ("" for "/"), and true; false when m's path match is exact or a regular
// expression. A match without a path match is the prefix "/", as in the
// Gateway API.
func (m *Match) PathPrefix() (string, bool) {
	switch m.path.kind {
	case pathAny, pathPrefix:
		return m.path.value, true
	}
	return "", false
}

// Pick returns the position in ms (sorted by Sort) of the first match r
// satisfies, or -1.
func Pick(ms []Match, r *Request) int {
	if r.std {
		return pick(ms, r.sMethod, r.sPath, r.sQuery, r)
	}
	return pick(ms, r.method, r.path, r.query, r)
}

func pick[S text](ms []Match, method, path, query S, r *Request) int {
next:
	for i := range ms {
		m := &ms[i]
		if !matchPath(&m.path, path) || (m.method != "" && string(method) != m.method) {
			continue
		}
		for j := range m.headers {
			if !r.headerMatches(&m.headers[j]) {
				continue next
			}
		}
		for j := range m.query {
			if !queryMatches(&m.query[j], query) {
				continue next
			}
		}
		return i
	}
	return -1
}

// Sort orders matches by Gateway API's HTTPRoute precedence: an exact path,
// then (implementation-specific there) a regular expression path, which
// spans the whole path, then the longest prefix; then a method; then the
// most header matches; then the most query parameter matches. The sort is
// stable: ties keep the order given, so the caller breaks them by the order
// it collects matches in (authz: routes as received; route: oldest route
// first, then namespace/name, then rule order).
func Sort(ms []Match) { slices.SortStableFunc(ms, byPrecedence) }

func byPrecedence(a, b Match) int {
	if ra, rb := rank(a.path.kind), rank(b.path.kind); ra != rb {
		return rb - ra
	}
	if rank(a.path.kind) == rank(pathPrefix) && len(a.path.value) != len(b.path.value) {
		return len(b.path.value) - len(a.path.value) // pathAny's value is ""
	}
	if (a.method != "") != (b.method != "") {
		if a.method != "" {
			return -1
		}
		return 1
	}
	if len(a.headers) != len(b.headers) {
		return len(b.headers) - len(a.headers)
	}
	return len(b.query) - len(a.query)
}

// rank orders path kinds; no path match is the prefix "/", shorter than
// any other prefix.
func rank(k pathKind) int {
	switch k {
	case pathExact:
		return 3
	case pathRegex:
		return 2
	}
	return 1
}
