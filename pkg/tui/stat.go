package tui

import (
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
)

// StatRow is one resource in `conduit stat`.
type StatRow struct {
	Namespace string
	Name      string // "web", shown as is (the type is in the command)
	// MeshedPods of TotalPods run a proxy.
	MeshedPods, TotalPods int
	// HasTraffic is false when no request was seen in the window: success
	// and latencies print "-".
	HasTraffic    bool
	SuccessRate   float64
	RPS           float64
	P50, P95, P99 float64 // milliseconds
	TCPConns      int64
	ReadBPS       float64 // bytes per second, wide only
	WriteBPS      float64
	// Authz is true when an inbound policy decides the resource's
	// traffic; Allowed and Denied count its decisions on HTTP requests in
	// the window, TCPAllowed and TCPDenied those on opaque connections.
	Authz                 bool
	Allowed, Denied       uint64
	TCPAllowed, TCPDenied uint64
}

// StatTableOptions choose the columns of a stat table.
type StatTableOptions struct {
	AllNamespaces bool // a NAMESPACE column first
	Wide          bool // READ_BYTES/SEC and WRITE_BYTES/SEC columns
}

// WriteStatTable prints rows as an aligned table, kubectl style. ALLOWED
// and DENIED columns appear when some row is under an inbound policy, and
// TCP_ALLOWED and TCP_DENIED when some row's policy decided connections.
func WriteStatTable(w io.Writer, rows []StatRow, o StatTableOptions) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	h := []string{"NAME", "MESHED", "SUCCESS", "RPS", "LATENCY_P50", "LATENCY_P95", "LATENCY_P99", "TCP_CONN"}
	if o.AllNamespaces {
		h = append([]string{"NAMESPACE"}, h...)
	}
	authz, tcpAuthz := false, false
	for _, r := range rows {
		authz = authz || r.Authz
		tcpAuthz = tcpAuthz || r.TCPAllowed+r.TCPDenied > 0
	}
	if authz {
		h = append(h, "ALLOWED", "DENIED")
	}
	if tcpAuthz {
		h = append(h, "TCP_ALLOWED", "TCP_DENIED")
	}
	if o.Wide {
		h = append(h, "READ_BYTES/SEC", "WRITE_BYTES/SEC")
	}
	fmt.Fprintln(tw, strings.Join(h, "\t"))
	for _, r := range rows {
		meshed := fmt.Sprintf("%d/%d", r.MeshedPods, r.TotalPods)
		if r.TotalPods == 0 {
			meshed = "-" // authorities, or traffic to something without pods
		}
		v := []string{
			r.Name,
			meshed,
			FormatPercent(r.SuccessRate, r.HasTraffic),
			FormatRate(r.RPS),
			FormatMillis(r.P50, r.HasTraffic),
			FormatMillis(r.P95, r.HasTraffic),
			FormatMillis(r.P99, r.HasTraffic),
			strconv.FormatInt(r.TCPConns, 10),
		}
		if o.AllNamespaces {
			v = append([]string{r.Namespace}, v...)
		}
		if authz {
			allowed, denied := "-", "-"
			if r.Authz {
				allowed, denied = strconv.FormatUint(r.Allowed, 10), strconv.FormatUint(r.Denied, 10)
			}
			v = append(v, allowed, denied)
		}
		if tcpAuthz {
			allowed, denied := "-", "-"
			if r.Authz {
				allowed, denied = strconv.FormatUint(r.TCPAllowed, 10), strconv.FormatUint(r.TCPDenied, 10)
			}
			v = append(v, allowed, denied)
		}
		if o.Wide {
			v = append(v, strconv.FormatFloat(r.ReadBPS, 'f', 1, 64)+"B/s", strconv.FormatFloat(r.WriteBPS, 'f', 1, 64)+"B/s")
		}
		fmt.Fprintln(tw, strings.Join(v, "\t"))
	}
	return tw.Flush()
}

// EdgeRow is one source → destination pair in `conduit edges`.
type EdgeRow struct {
	Src, Dst     string
	SrcNamespace string
	DstNamespace string
	ClientID     string
	ServerID     string
	Secured      bool
	// NoTLSReason says why an edge is not secured, e.g. "not meshed".
	NoTLSReason string
}

// WriteEdgesTable prints edges as an aligned table; wide adds the identities.
func WriteEdgesTable(w io.Writer, rows []EdgeRow, wide bool) error {
	tw := tabwriter.NewWriter(w, 0, 8, 3, ' ', 0)
	h := "SRC\tDST\tSRC_NS\tDST_NS\tSECURED"
	if wide {
		h += "\tCLIENT_ID\tSERVER_ID\tMSG"
	}
	fmt.Fprintln(tw, h)
	for _, r := range rows {
		sec := "√"
		if !r.Secured {
			sec = "×"
		}
		line := strings.Join([]string{r.Src, r.Dst, r.SrcNamespace, r.DstNamespace, sec}, "\t")
		if wide {
			line += "\t" + dash(r.ClientID) + "\t" + dash(r.ServerID) + "\t" + dash(r.NoTLSReason)
		}
		fmt.Fprintln(tw, line)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
