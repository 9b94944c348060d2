package stats

import (
	"fmt"
	"io"
	"sort"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// Sample is one line of a proxy's /metrics page: a histogram is flattened
// into its _bucket (with an "le" label), _sum and _count samples.
type Sample struct {
	Name   string
	Type   MetricType // the type of the sample's family
	Labels map[string]string
	Value  float64
}

// MetricType is a family's type from its "# TYPE" line.
type MetricType string

// The types a proxy exposes; a family without a TYPE line is untyped.
const (
	Counter   MetricType = "counter"
	Gauge     MetricType = "gauge"
	Histogram MetricType = "histogram"
	Summary   MetricType = "summary"
	Untyped   MetricType = "untyped"
)

var metricTypes = map[dto.MetricType]MetricType{
	dto.MetricType_COUNTER:   Counter,
	dto.MetricType_GAUGE:     Gauge,
	dto.MetricType_HISTOGRAM: Histogram,
	dto.MetricType_SUMMARY:   Summary,
}

// ParseMetrics parses a /metrics page in the Prometheus text format (0.0.4)
// with prometheus/common's expfmt, names validated as in that format (no
// quoted UTF-8 names). Timestamps are ignored. Malformed input, including a
// last line without its line feed, is an error naming the line. The
// samples come sorted by family name.
func ParseMetrics(r io.Reader) ([]Sample, error) {
	p := expfmt.NewTextParser(model.LegacyValidation)
	families, err := p.TextToMetricFamilies(r)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(families))
	for name := range families {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []Sample
	for _, name := range names {
		f := families[name]
		typ, ok := metricTypes[f.GetType()]
		if !ok {
			typ = Untyped
		}
		vec, err := expfmt.ExtractSamples(&expfmt.DecodeOptions{}, f)
		if err != nil {
			return nil, fmt.Errorf("metric %s: %w", name, err)
		}
		for _, s := range vec {
			smp := Sample{Type: typ, Labels: make(map[string]string, len(s.Metric)-1), Value: float64(s.Value)}
			for k, v := range s.Metric {
				if k == model.MetricNameLabel {
					smp.Name = string(v)
				} else {
					smp.Labels[string(k)] = string(v)
				}
			}
			out = append(out, smp)
		}
	}
	return out, nil
}
