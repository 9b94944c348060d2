package healthcheck

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// The marks of the basic and short output.
const (
	markSuccess = "✔"
	markWarning = "‼"
	markError   = "×"
	markWaiting = "…"
)

// ANSI colors, used only when BasicPrinter.Color is set (a terminal).
const (
	ansiGreen  = "\x1b[32m"
	ansiYellow = "\x1b[33m"
	ansiRed    = "\x1b[31m"
	ansiDim    = "\x1b[2m"
	ansiReset  = "\x1b[0m"
)

// BasicPrinter prints results as they come, grouped under their category:
// the `basic` output, or with Short only the failures and warnings. It is
// an Observer, so it can print while the checks run.
type BasicPrinter struct {
	W     io.Writer
	Color bool
	// Short prints only warnings and failures.
	Short bool

	current CategoryID // category whose header was printed last
	printed bool       // anything printed yet
}

func (p *BasicPrinter) paint(color, s string) string {
	if !p.Color {
		return s
	}
	return color + s + ansiReset
}

func (p *BasicPrinter) header(cat CategoryID) {
	if p.current == cat && p.printed {
		return
	}
	if p.printed {
		fmt.Fprintln(p.W)
	}
	fmt.Fprintf(p.W, "%s\n%s\n", cat, strings.Repeat("-", len(cat)))
	p.current, p.printed = cat, true
}

// Retrying implements Observer: it says once that a check is being waited for.
func (p *BasicPrinter) Retrying(r Result, deadline time.Time) {
	if p.Short {
		return
	}
	p.header(r.Category)
	fmt.Fprintf(p.W, "%s %s %s\n", p.paint(ansiDim, markWaiting), r.Description,
		p.paint(ansiDim, fmt.Sprintf("(waiting until %s: %s)", deadline.Format("15:04:05"), firstLine(r.Error))))
}

// Done implements Observer: it prints one result, with the error and hint
// of a failure indented under it.
func (p *BasicPrinter) Done(r Result) {
	if p.Short && r.Status == StatusSuccess {
		return
	}
	p.header(r.Category)
	var mark string
	switch r.Status {
	case StatusSuccess:
		mark = p.paint(ansiGreen, markSuccess)
	case StatusWarning:
		mark = p.paint(ansiYellow, markWarning)
	default:
		mark = p.paint(ansiRed, markError)
	}
	fmt.Fprintf(p.W, "%s %s\n", mark, r.Description)
	if r.Status == StatusSuccess {
		return
	}
	writeIndented(p.W, "    ", r.Error)
	if r.Hint != "" {
		writeIndented(p.W, "    ", "hint: "+r.Hint)
	}
}

// Summary prints the closing line.
func (p *BasicPrinter) Summary(rep Report) {
	ok, warn, failed := rep.Counts()
	if p.printed {
		fmt.Fprintln(p.W)
	}
	mark := p.paint(ansiGreen, markSuccess)
	switch {
	case !rep.Success:
		mark = p.paint(ansiRed, markError)
	case warn > 0:
		mark = p.paint(ansiYellow, markWarning)
	}
	fmt.Fprintf(p.W, "Status check results are %s (%d passed, %s, %d failed)\n", mark, ok, plural(warn, "warning"), failed)
}

// PrintBasic prints a whole report in the basic (or short) format.
func PrintBasic(w io.Writer, rep Report, color, short bool) {
	p := &BasicPrinter{W: w, Color: color, Short: short}
	for _, c := range rep.Categories {
		for _, r := range c.Results {
			p.Done(r)
		}
	}
	p.Summary(rep)
}

func writeIndented(w io.Writer, indent, text string) {
	lines := strings.Split(strings.TrimRight(text, "\n"), "\n")
	for i, l := range lines {
		if i > 0 {
			l = "  " + l // continuation lines sit under the text, not the label
		}
		fmt.Fprintf(w, "%s%s\n", indent, l)
	}
}

func firstLine(s string) string {
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		return s[:i]
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}
