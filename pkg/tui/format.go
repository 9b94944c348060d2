package tui

import (
	"fmt"
	"strconv"
	"time"
)

// FormatLatency prints a latency compactly with about three significant
// digits: 850µs, 1.25ms, 12ms, 1.50s. Zero prints as "-".
func FormatLatency(d time.Duration) string {
	switch {
	case d <= 0:
		return "-"
	case d < time.Millisecond:
		return fmt.Sprintf("%dµs", d.Microseconds())
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.2fms", float64(d)/float64(time.Millisecond))
	case d < time.Second:
		return fmt.Sprintf("%.0fms", float64(d)/float64(time.Millisecond))
	default:
		return fmt.Sprintf("%.2fs", d.Seconds())
	}
}

// FormatMillis prints a latency given in milliseconds (as the stats API
// reports it), "-" when unknown.
func FormatMillis(ms float64, known bool) string {
	if !known {
		return "-"
	}
	if ms < 10 && ms != float64(int64(ms)) {
		return strconv.FormatFloat(ms, 'f', 2, 64) + "ms"
	}
	return strconv.FormatFloat(ms, 'f', 0, 64) + "ms"
}

// FormatPercent prints a ratio in [0,1] as "99.50%", "-" when unknown.
func FormatPercent(r float64, known bool) string {
	if !known {
		return "-"
	}
	return strconv.FormatFloat(r*100, 'f', 2, 64) + "%"
}

// FormatRate prints a per-second rate as "12.3rps".
func FormatRate(r float64) string {
	return strconv.FormatFloat(r, 'f', 1, 64) + "rps"
}

func statusText(status int) string {
	if status == 0 {
		return "-"
	}
	return strconv.Itoa(status)
}

func tlsText(tls bool) string {
	if tls {
		return "true"
	}
	return "false"
}
