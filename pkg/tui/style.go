package tui

import "github.com/charmbracelet/lipgloss"

// styles are the views' colours. They degrade to plain text where the
// terminal has no colour (and in golden tests).
type styles struct {
	title    lipgloss.Style
	header   lipgloss.Style
	selected lipgloss.Style
	fail     lipgloss.Style
	dim      lipgloss.Style
	paused   lipgloss.Style
	live     lipgloss.Style
	label    lipgloss.Style
}

func defaultStyles() styles {
	return styles{
		title:    lipgloss.NewStyle().Bold(true),
		header:   lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("12")),
		selected: lipgloss.NewStyle().Reverse(true),
		fail:     lipgloss.NewStyle().Foreground(lipgloss.Color("9")),
		dim:      lipgloss.NewStyle().Faint(true),
		paused:   lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("11")),
		live:     lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("10")),
		label:    lipgloss.NewStyle().Bold(true),
	}
}
