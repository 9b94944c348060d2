package destination

import (
	"fmt"
	"net/netip"
	"testing"

	"github.com/google/go-cmp/cmp"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

func snap(labels map[string]string, eps ...discovery.Endpoint) discovery.Snapshot {
	s := discovery.Snapshot{Exists: true, Labels: labels, Endpoints: map[netip.AddrPort]discovery.Endpoint{}}
	for _, e := range eps {
		s.Endpoints[e.Addr] = e
	}
	return s
}

func ep(addr, id string) discovery.Endpoint {
	return discovery.Endpoint{Addr: netip.MustParseAddrPort(addr), Identity: id, Labels: map[string]string{"pod": addr}}
}

// text renders updates compactly for comparison: one line per update.
func text(us []*destinationv1.Update) []string {
	var out []string
	for _, u := range us {
		switch x := u.Update.(type) {
		case *destinationv1.Update_Add:
			line := "add"
			for _, a := range x.Add.Addrs {
				ap, _ := a.Addr.AddrPort()
				line += " " + ap.String() + "/" + a.Identity
			}
			line += fmt.Sprint(" ", x.Add.MetricLabels)
			out = append(out, line)
		case *destinationv1.Update_Remove:
			line := "remove"
			for _, a := range x.Remove.Addrs {
				ap, _ := a.AddrPort()
				line += " " + ap.String()
			}
			out = append(out, line)
		case *destinationv1.Update_NoEndpoints:
			if x.NoEndpoints.Exists {
				out = append(out, "no_endpoints exists")
			} else {
				out = append(out, "no_endpoints")
			}
		}
	}
	return out
}

func TestDiff(t *testing.T) {
	svc := map[string]string{"service": "web"}
	svc2 := map[string]string{"service": "web2"}
	a, b, c := ep("10.0.0.1:80", "spiffe://td/ns/a/sa/a"), ep("10.0.0.2:80", ""), ep("10.0.0.3:80", "")
	a2 := a
	a2.Identity = "spiffe://td/ns/a/sa/other"
	absent := discovery.Snapshot{Reason: "no such service"}
	empty := discovery.Snapshot{Exists: true}

	tests := []struct {
		name string
		prev *discovery.Snapshot
		next discovery.Snapshot
		want []string
	}{
		{"first, unknown", nil, absent, []string{"no_endpoints"}},
		{"first, empty", nil, empty, []string{"no_endpoints exists"}},
		{"first, endpoints", nil, snap(svc, b, a), []string{`add 10.0.0.1:80/spiffe://td/ns/a/sa/a 10.0.0.2:80/ map[service:web]`}},
		{"empty to empty", &empty, empty, nil},
		{"absent to empty", &absent, empty, []string{"no_endpoints exists"}},
		{"one added", ptr(snap(svc, a)), snap(svc, a, b), []string{`add 10.0.0.2:80/ map[service:web]`}},
		{"one removed", ptr(snap(svc, a, b)), snap(svc, a), []string{"remove 10.0.0.2:80"}},
		{"replaced", ptr(snap(svc, a, b)), snap(svc, a, c), []string{"remove 10.0.0.2:80", `add 10.0.0.3:80/ map[service:web]`}},
		{"identity changed", ptr(snap(svc, a, b)), snap(svc, a2, b), []string{`add 10.0.0.1:80/spiffe://td/ns/a/sa/other map[service:web]`}},
		{"set labels changed", ptr(snap(svc, a, b)), snap(svc2, a), []string{"remove 10.0.0.2:80", `add 10.0.0.1:80/spiffe://td/ns/a/sa/a map[service:web2]`}},
		{"all gone", ptr(snap(svc, a)), empty, []string{"no_endpoints exists"}},
		{"back from empty", &empty, snap(svc, c), []string{`add 10.0.0.3:80/ map[service:web]`}},
		{"unchanged", ptr(snap(svc, a, b)), snap(svc, a, b), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, text(Diff(tt.prev, tt.next))); diff != "" {
				t.Errorf("Diff (-want +got):\n%s", diff)
			}
		})
	}
}

func ptr[T any](v T) *T { return &v }

func TestDiffCacheSharesUpdates(t *testing.T) {
	var c diffCache
	svc := map[string]string{"service": "web"}
	v1 := snap(svc, ep("10.0.0.1:80", ""))
	v1.Version = 1
	v2 := snap(svc, ep("10.0.0.1:80", ""), ep("10.0.0.2:80", ""))
	v2.Version = 2
	a, b := c.get(&v1, v2), c.get(&v1, v2)
	if len(a) != 1 || &a[0] != &b[0] {
		t.Errorf("the same step was diffed twice: %p %p", a, b)
	}
	if first := c.get(nil, v2); len(first) != 1 || len(first[0].GetAdd().GetAddrs()) != 2 {
		t.Errorf("a first update from the cache: %v", text(first))
	}
	unversioned := snap(svc, ep("10.0.0.3:80", ""))
	if got := text(c.get(&v1, unversioned)); len(got) != 2 {
		t.Errorf("unversioned snapshots are diffed directly: got %q", got)
	}
}
