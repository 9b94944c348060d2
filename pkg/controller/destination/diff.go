package destination

import (
	"maps"
	"net/netip"
	"slices"

	destinationv1 "github.com/conduitmesh/conduit/pkg/api/destination/v1"
	netv1 "github.com/conduitmesh/conduit/pkg/api/net/v1"
	"github.com/conduitmesh/conduit/pkg/controller/discovery"
)

// Diff returns the updates that take a stream from prev (nil before the
// first update) to next: removes first, then adds; or one no_endpoints.
func Diff(prev *discovery.Snapshot, next discovery.Snapshot) []*destinationv1.Update {
	if len(next.Endpoints) == 0 {
		if prev != nil && len(prev.Endpoints) == 0 && prev.Exists == next.Exists {
			return nil
		}
		return []*destinationv1.Update{{Update: &destinationv1.Update_NoEndpoints{
			NoEndpoints: &destinationv1.NoEndpoints{Exists: next.Exists, Reason: next.Reason},
		}}}
	}

	var updates []*destinationv1.Update
	hadEndpoints := prev != nil && len(prev.Endpoints) > 0
	if hadEndpoints {
		var removed []*netv1.TcpAddress
		for _, addr := range sortedAddrs(prev.Endpoints) {
			if _, ok := next.Endpoints[addr]; !ok {
				removed = append(removed, netv1.FromAddrPort(addr))
			}
		}
		if len(removed) > 0 {
			updates = append(updates, &destinationv1.Update{Update: &destinationv1.Update_Remove{
				Remove: &destinationv1.AddrSet{Addrs: removed},
			}})
		}
	}

	// An address announced again replaces its earlier announcement, so when
	// the set's labels change every address is announced again.
	all := !hadEndpoints || !maps.Equal(prev.Labels, next.Labels)
	var added []*destinationv1.WeightedAddr
	for _, addr := range sortedAddrs(next.Endpoints) {
		ep := next.Endpoints[addr]
		if !all {
			if old, ok := prev.Endpoints[addr]; ok && old.Equal(ep) {
				continue
			}
		}
		added = append(added, &destinationv1.WeightedAddr{
			Addr:         netv1.FromAddrPort(addr),
			Weight:       weight(ep.Weight),
			Identity:     ep.Identity,
			MetricLabels: ep.Labels,
		})
	}
	if len(added) > 0 {
		updates = append(updates, &destinationv1.Update{Update: &destinationv1.Update_Add{
			Add: &destinationv1.WeightedAddrSet{Addrs: added, MetricLabels: next.Labels},
		}})
	}
	return updates
}

func weight(w uint32) uint32 {
	if w == 0 {
		return 1
	}
	return w
}

func sortedAddrs(m map[netip.AddrPort]discovery.Endpoint) []netip.AddrPort {
	addrs := slices.Collect(maps.Keys(m))
	slices.SortFunc(addrs, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return addrs
}
