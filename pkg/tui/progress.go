package tui

import (
	"context"
	"io"
	"strings"

	"github.com/charmbracelet/bubbles/spinner"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
)

// StepState is where one step of a long operation (install, upgrade,
// uninstall) is.
type StepState int

// Step states.
const (
	StepRunning StepState = iota
	StepDone
	StepFailed
)

// ProgressMsg reports that a step started, changed its detail, or ended.
// Steps are identified by their title and listed in the order they start.
type ProgressMsg struct {
	Step   string
	State  StepState
	Detail string
}

// progressDoneMsg ends the view once the work has returned.
type progressDoneMsg struct{}

type progressStep struct {
	title  string
	state  StepState
	detail string
}

// ProgressModel is a step list with a spinner on the running step.
type ProgressModel struct {
	title   string
	steps   []*progressStep
	spinner spinner.Model
	done    bool
	st      styles
}

// NewProgressModel returns an empty step list under title.
func NewProgressModel(title string) *ProgressModel {
	return &ProgressModel{
		title:   title,
		spinner: spinner.New(spinner.WithSpinner(spinner.Dot)),
		st:      defaultStyles(),
	}
}

// Init starts the spinner.
func (m *ProgressModel) Init() tea.Cmd { return m.spinner.Tick }

// Update applies progress, spinner ticks and the end of the work.
func (m *ProgressModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case ProgressMsg:
		m.apply(msg)
	case progressDoneMsg:
		m.done = true
		return m, tea.Quit
	case spinner.TickMsg:
		var cmd tea.Cmd
		m.spinner, cmd = m.spinner.Update(msg)
		return m, cmd
	}
	return m, nil
}

func (m *ProgressModel) apply(msg ProgressMsg) {
	for _, s := range m.steps {
		if s.title == msg.Step {
			s.state, s.detail = msg.State, msg.Detail
			return
		}
	}
	m.steps = append(m.steps, &progressStep{title: msg.Step, state: msg.State, detail: msg.Detail})
}

// View renders the title and one line per step (two for a failed one).
func (m *ProgressModel) View() string {
	var b strings.Builder
	b.WriteString(m.st.title.Render(m.title))
	b.WriteString("\n")
	ok := lipgloss.NewStyle().Foreground(lipgloss.Color("10"))
	for _, s := range m.steps {
		switch s.state {
		case StepDone:
			b.WriteString(ok.Render("✓") + " " + s.title + "\n")
		case StepFailed:
			b.WriteString(m.st.fail.Render("✗") + " " + s.title + "\n")
			if s.detail != "" {
				b.WriteString("  " + m.st.fail.Render(s.detail) + "\n")
			}
		default:
			mark := m.spinner.View()
			if m.done {
				mark = "•"
			}
			b.WriteString(mark + " " + s.title)
			if s.detail != "" {
				b.WriteString(" " + m.st.dim.Render(s.detail))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// RunProgress runs work while showing its steps on out (a terminal). It
// returns work's error once both work and the view have ended; the view
// never reads input, so Ctrl-C reaches the command's context as usual.
func RunProgress(ctx context.Context, out io.Writer, title string, work func(ctx context.Context, send func(ProgressMsg)) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	p := tea.NewProgram(NewProgressModel(title), tea.WithOutput(out), tea.WithInput(nil), tea.WithContext(ctx), tea.WithoutSignalHandler())
	workErr := make(chan error, 1)
	go func() {
		err := work(ctx, func(m ProgressMsg) { p.Send(m) })
		workErr <- err
		p.Send(progressDoneMsg{})
	}()
	_, _ = p.Run() // ends on progressDoneMsg, or when ctx is cancelled
	cancel()
	return <-workErr
}
