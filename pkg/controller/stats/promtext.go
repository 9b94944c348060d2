package stats

import (
	"bufio"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
)

// Sample is one line of the Prometheus text format.
type Sample struct {
	Name   string
	Labels map[string]string
	Value  float64
}

// MetricType is a family's type from its "# TYPE" line.
type MetricType string

// The types that matter here; anything else is treated as untyped.
const (
	Counter   MetricType = "counter"
	Gauge     MetricType = "gauge"
	Histogram MetricType = "histogram"
	Untyped   MetricType = "untyped"
)

// Exposition is a parsed /metrics page.
type Exposition struct {
	Samples []Sample
	// Types maps a family name (e.g. response_latency_ms) to its type.
	Types map[string]MetricType
}

// TypeOf returns the type of a sample's family, looking through the
// _bucket/_sum/_count suffixes of histograms.
func (e *Exposition) TypeOf(name string) MetricType {
	if t, ok := e.Types[name]; ok {
		return t
	}
	for _, suf := range []string{"_bucket", "_sum", "_count"} {
		if base, ok := strings.CutSuffix(name, suf); ok {
			if t, ok := e.Types[base]; ok {
				return t
			}
		}
	}
	return Untyped
}

// maxLineLen bounds one exposition line; a proxy's lines are far shorter.
const maxLineLen = 64 << 10

// ParseText parses the Prometheus text exposition format (version 0.0.4).
// Timestamps are ignored. A malformed line is an error naming the line.
func ParseText(r io.Reader) (*Exposition, error) {
	e := &Exposition{Types: map[string]MetricType{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 4096), maxLineLen)
	n := 0
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			f := strings.Fields(line)
			if len(f) >= 4 && f[1] == "TYPE" {
				e.Types[f[2]] = MetricType(f[3])
			}
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		e.Samples = append(e.Samples, s)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("line %d: %w", n+1, err)
	}
	return e, nil
}

func parseSample(line string) (Sample, error) {
	s := Sample{}
	i := strings.IndexAny(line, "{ \t")
	if i <= 0 {
		return s, fmt.Errorf("want NAME VALUE, got %q", truncate(line))
	}
	s.Name = line[:i]
	if !validName(s.Name) {
		return s, fmt.Errorf("invalid metric name %q", s.Name)
	}
	rest := line[i:]
	if rest[0] == '{' {
		labels, n, err := parseLabels(rest)
		if err != nil {
			return s, fmt.Errorf("metric %s: %w", s.Name, err)
		}
		s.Labels = labels
		rest = rest[n:]
	}
	f := strings.Fields(rest)
	if len(f) < 1 || len(f) > 2 {
		return s, fmt.Errorf("metric %s: want a value (and an optional timestamp), got %q", s.Name, truncate(rest))
	}
	v, err := parseValue(f[0])
	if err != nil {
		return s, fmt.Errorf("metric %s: %w", s.Name, err)
	}
	s.Value = v
	return s, nil
}

func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf", "Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, fmt.Errorf("value %q is not a number", truncate(s))
	}
	return v, nil
}

// parseLabels parses {a="x",b="y"} at the start of s and returns the labels
// and the number of bytes consumed.
func parseLabels(s string) (map[string]string, int, error) {
	labels := map[string]string{}
	i := 1
	for {
		for i < len(s) && (s[i] == ' ' || s[i] == ',') {
			i++
		}
		if i >= len(s) {
			return nil, 0, fmt.Errorf("unterminated label set")
		}
		if s[i] == '}' {
			return labels, i + 1, nil
		}
		j := i
		for j < len(s) && s[j] != '=' && s[j] != ' ' {
			j++
		}
		name := s[i:j]
		if !validName(name) {
			return nil, 0, fmt.Errorf("invalid label name %q", truncate(name))
		}
		for j < len(s) && s[j] == ' ' {
			j++
		}
		if j+1 >= len(s) || s[j] != '=' || s[j+1] != '"' {
			return nil, 0, fmt.Errorf("label %s: want =\"value\"", name)
		}
		var b strings.Builder
		k := j + 2
		for ; k < len(s) && s[k] != '"'; k++ {
			c := s[k]
			if c == '\\' && k+1 < len(s) {
				k++
				switch s[k] {
				case 'n':
					c = '\n'
				default:
					c = s[k]
				}
			}
			b.WriteByte(c)
		}
		if k >= len(s) {
			return nil, 0, fmt.Errorf("label %s: unterminated value", name)
		}
		labels[name] = b.String()
		i = k + 1
	}
}

func validName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

func truncate(s string) string {
	if len(s) > 60 {
		return s[:60] + "…"
	}
	return s
}
