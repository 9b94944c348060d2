package stats

import (
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

func TestParseMetrics(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		want     []Sample
	}{{
		name: "counter with labels, timestamp ignored",
		in: `# HELP request_total Total count of HTTP requests.
# TYPE request_total counter
request_total{direction="inbound",authority="web.demo:80",tls="true"} 12 1700000000
`,
		want: []Sample{{Name: "request_total", Type: Counter, Value: 12,
			Labels: map[string]string{"direction": "inbound", "authority": "web.demo:80", "tls": "true"}}},
	}, {
		name: "histogram flattened into buckets, sum and count",
		in: `# TYPE response_latency_ms histogram
response_latency_ms_bucket{direction="inbound",le="1"} 2
response_latency_ms_bucket{direction="inbound",le="10"} 3
response_latency_ms_bucket{direction="inbound",le="+Inf"} 3
response_latency_ms_sum{direction="inbound"} 7.5
response_latency_ms_count{direction="inbound"} 3
`,
		want: []Sample{
			{Name: "response_latency_ms_bucket", Type: Histogram, Value: 2, Labels: map[string]string{"direction": "inbound", "le": "1"}},
			{Name: "response_latency_ms_bucket", Type: Histogram, Value: 3, Labels: map[string]string{"direction": "inbound", "le": "10"}},
			{Name: "response_latency_ms_bucket", Type: Histogram, Value: 3, Labels: map[string]string{"direction": "inbound", "le": "+Inf"}},
			{Name: "response_latency_ms_sum", Type: Histogram, Value: 7.5, Labels: map[string]string{"direction": "inbound"}},
			{Name: "response_latency_ms_count", Type: Histogram, Value: 3, Labels: map[string]string{"direction": "inbound"}},
		},
	}, {
		name: "escapes, a trailing comma, exponent, NaN, untyped, gauge",
		in: `weird{a="x\"y\\z\nw" , b="2",} 1.5e3
nolabels NaN
# TYPE tcp_open_connections gauge
tcp_open_connections{direction="inbound"} 3
`,
		want: []Sample{
			{Name: "nolabels", Type: Untyped, Value: math.NaN(), Labels: map[string]string{}},
			{Name: "tcp_open_connections", Type: Gauge, Value: 3, Labels: map[string]string{"direction": "inbound"}},
			{Name: "weird", Type: Untyped, Value: 1500, Labels: map[string]string{"a": "x\"y\\z\nw", "b": "2"}},
		},
	}, {
		name: "a family without samples is left out",
		in:   "# TYPE response_total counter\n",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseMetrics(strings.NewReader(tc.in))
			if err != nil {
				t.Fatal(err)
			}
			// Samples of one family come in the library's order.
			less := func(a, b Sample) bool { return a.Name+a.Labels["le"] < b.Name+b.Labels["le"] }
			if diff := cmp.Diff(tc.want, got, cmpopts.EquateNaNs(), cmpopts.SortSlices(less), cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("ParseMetrics (-want +got):\n%s", diff)
			}
		})
	}
}

// A proxy's garbage is an error naming the line, not samples. So is a
// last line without its line feed (the format requires one; a proxy's page
// cut short is not read as if it were whole).
func TestParseMetricsErrors(t *testing.T) {
	for _, in := range []string{
		`x{a="b"`, "x 1", "x{a=b} 1\n", "x 1 2 3\n", "x abc\n", "1x 2\n", `x{a="b} 1`, "{a=\"b\"} 1\n",
		"# TYPE x histogram\nx_bucket{le=\"abc\"} 1\n", "# TYPE x counter\n# TYPE x gauge\nx 1\n",
		"ok 1\nx{\"quoted.name\"} 1\n",
	} {
		want := "line 1"
		if strings.HasPrefix(in, "ok") || strings.HasPrefix(in, "# TYPE") {
			want = "line 2"
		}
		if _, err := ParseMetrics(strings.NewReader(in)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("ParseMetrics(%q) err = %v, want an error naming %s", in, err, want)
		}
	}
}

// FuzzParseMetrics: a proxy's garbage is an error, never a panic.
func FuzzParseMetrics(f *testing.F) {
	f.Add(webPage)
	f.Add(`x{a="b\"c",} 1 2`)
	f.Add("# TYPE x histogram\nx_bucket{le=\"+Inf\"} NaN\n")
	f.Add("# TYPE x summary\nx{quantile=\"0.5\"} 1\nx_sum 2\nx_count 3\n")
	f.Fuzz(func(t *testing.T, in string) {
		samples, err := ParseMetrics(strings.NewReader(in))
		if err != nil {
			return
		}
		for _, s := range samples {
			if s.Name == "" {
				t.Fatalf("empty name from %q", in)
			}
		}
	})
}
