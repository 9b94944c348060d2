package tui

import (
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/ansi"
)

// column is one column of a live table: a header, a minimum width and a
// share of whatever width is left over.
type column struct {
	title string
	min   int
	flex  int  // share of spare width; 0 = fixed at min
	right bool // right-aligned (numbers)
}

// layout gives each column its width for a terminal width.
func layout(cols []column, width int) []int {
	ws := make([]int, len(cols))
	used, flex := 0, 0
	for i, c := range cols {
		ws[i] = c.min
		used += c.min + 1
		flex += c.flex
	}
	spare := width - used
	if spare <= 0 || flex == 0 {
		return ws
	}
	given := 0
	last := -1
	for i, c := range cols {
		if c.flex == 0 {
			continue
		}
		add := spare * c.flex / flex
		ws[i] += add
		given += add
		last = i
	}
	ws[last] += spare - given
	return ws
}

// cell fits s into w cells, truncating with an ellipsis.
func cell(s string, w int, right bool) string {
	s = ansi.Truncate(s, w, "…")
	pad := w - lipgloss.Width(s)
	if pad <= 0 {
		return s
	}
	if right {
		return strings.Repeat(" ", pad) + s
	}
	return s + strings.Repeat(" ", pad)
}

// row renders cells separated by one space.
func row(cols []column, ws []int, vals []string) string {
	var b strings.Builder
	for i, c := range cols {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(cell(vals[i], ws[i], c.right))
	}
	return b.String()
}

// headerRow renders the column titles; mark decorates the title of column
// sorted (−1 for none).
func headerRow(cols []column, ws []int, sorted int, mark string) string {
	vals := make([]string, len(cols))
	for i, c := range cols {
		vals[i] = c.title
		if i == sorted {
			vals[i] += mark
		}
	}
	return row(cols, ws, vals)
}

// clamp bounds v to [lo, hi].
func clamp(v, lo, hi int) int {
	if v > hi {
		v = hi
	}
	if v < lo {
		v = lo
	}
	return v
}
