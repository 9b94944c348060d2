package tui

import (
	"fmt"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// maxTapRows bounds the requests a tap view remembers; older ones scroll
// away for good.
const maxTapRows = 2000

// tapRow is one request in the tap table, filled in as its events arrive.
type tapRow struct {
	first TapEvent // the RequestInit event (or the first one seen)
	start time.Time
	rsp   *TapEvent
	end   *TapEvent
}

func (r *tapRow) status() int {
	if r.rsp != nil {
		return r.rsp.Status
	}
	return 0
}

// failed: the request failed, or the inbound policy refused it.
func (r *tapRow) failed() bool {
	if a := r.first.Authz; a != nil && !a.Allowed {
		return true
	}
	if r.rsp == nil {
		return false
	}
	gs := NoGRPCStatus
	if r.end != nil {
		gs = r.end.GRPCStatus
	}
	return !Success(r.rsp.Status, gs)
}

var tapColumns = []column{
	{title: "TIME", min: 12},
	{title: "FROM", min: 10, flex: 2},
	{title: "TO", min: 10, flex: 2},
	{title: "METHOD", min: 6},
	{title: "PATH", min: 10, flex: 4},
	{title: "STATUS", min: 6, right: true},
	{title: "LATENCY", min: 8, right: true},
	{title: "TLS", min: 5},
}

// tapColumnsAuthz are the columns once some request had a policy decision.
var tapColumnsAuthz = append(tapColumns[:len(tapColumns):len(tapColumns)], column{title: "AUTHZ", min: 10, flex: 2})

func (m *TapModel) columns() []column {
	if m.authz {
		return tapColumnsAuthz
	}
	return tapColumns
}

// values are the row's cells, with the AUTHZ column's when authz.
func (r *tapRow) values(authz bool) []string {
	lat := "-"
	if r.rsp != nil {
		lat = FormatLatency(r.rsp.Latency)
	}
	e := r.first
	v := []string{
		r.start.Format("15:04:05.000"),
		e.Source, e.Destination, e.Method, e.Path,
		statusText(r.status()), lat, tlsText(e.TLS),
	}
	if authz {
		v = append(v, e.Authz.Short())
	}
	return v
}

// TapModel is the interactive `conduit tap` view: a live scrolling table of
// requests with a filter, pause and a detail pane.
type TapModel struct {
	title string
	st    styles

	rows []*tapRow
	byID map[string]*tapRow

	paused  bool
	pending []TapEvent // events that arrived while paused

	filtering bool   // the filter input has focus
	filter    string // case-insensitive terms, all must match

	cursor int  // index into the visible rows
	offset int  // first visible row on screen
	follow bool // the cursor sticks to the newest row
	detail bool

	width, height int
	streamErr     error
	streamDone    bool
	// authz is set once a request had an inbound policy decision: the
	// table shows the AUTHZ column from then on.
	authz bool
}

// NewTapModel returns a tap view titled with what is tapped.
func NewTapModel(title string) *TapModel {
	return &TapModel{
		title:  title,
		st:     defaultStyles(),
		byID:   map[string]*tapRow{},
		follow: true,
		width:  80,
		height: 24,
	}
}

// Init implements tea.Model.
func (m *TapModel) Init() tea.Cmd { return nil }

// Paused reports whether the view is paused.
func (m *TapModel) Paused() bool { return m.paused }

// Filter is the current filter text.
func (m *TapModel) Filter() string { return m.filter }

// Len is the number of requests shown with the current filter.
func (m *TapModel) Len() int { return len(m.visible()) }

// Update implements tea.Model.
func (m *TapModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	cmd := m.update(msg)
	m.settle()
	return m, cmd
}

func (m *TapModel) update(msg tea.Msg) tea.Cmd {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case TapEventMsg:
		if m.paused {
			m.pending = append(m.pending, TapEvent(msg))
			if len(m.pending) > maxTapRows*3 {
				m.pending = m.pending[len(m.pending)-maxTapRows*3:]
			}
			return nil
		}
		m.apply(TapEvent(msg))
	case StreamEndMsg:
		m.streamDone, m.streamErr = true, msg.Err
	case tea.KeyMsg:
		return m.key(msg)
	}
	return nil
}

// settle keeps the cursor on a visible row and the screen around the cursor.
func (m *TapModel) settle() {
	n := len(m.visible())
	if m.follow || m.cursor >= n {
		m.cursor = max(n-1, 0)
	}
	h := m.tableHeight()
	if m.cursor < m.offset {
		m.offset = m.cursor
	}
	if m.cursor >= m.offset+h {
		m.offset = m.cursor - h + 1
	}
	m.offset = clamp(m.offset, 0, max(n-h, 0))
}

func (m *TapModel) key(k tea.KeyMsg) tea.Cmd {
	if k.Type == tea.KeyCtrlC {
		return tea.Quit
	}
	if m.filtering {
		switch k.Type {
		case tea.KeyEnter:
			m.filtering = false
		case tea.KeyEsc:
			m.filtering, m.filter = false, ""
		case tea.KeyBackspace:
			if r := []rune(m.filter); len(r) > 0 {
				m.filter = string(r[:len(r)-1])
			}
		case tea.KeyRunes, tea.KeySpace:
			m.filter += string(k.Runes)
		}
		m.follow = true
		return nil
	}
	if m.detail {
		switch k.String() {
		case "q":
			return tea.Quit
		case "esc", "enter", "backspace":
			m.detail = false
		}
		return nil
	}
	if k.Type == tea.KeyRunes && len(k.Runes) > 1 && k.Runes[0] == '/' {
		// "/" and what follows read in one go (fast typing, a paste).
		m.filtering, m.filter, m.follow = true, string(k.Runes[1:]), true
		return nil
	}
	n := len(m.visible())
	switch k.String() {
	case "q":
		return tea.Quit
	case " ":
		m.paused = !m.paused
		if !m.paused {
			for _, e := range m.pending {
				m.apply(e)
			}
			m.pending = nil
		}
	case "/":
		m.filtering = true
	case "esc":
		m.filter = ""
	case "enter":
		if n > 0 {
			m.detail = true
		}
	case "up", "k":
		m.follow = false
		m.cursor = clamp(m.cursor-1, 0, n-1)
	case "down", "j":
		m.cursor = clamp(m.cursor+1, 0, n-1)
		m.follow = m.cursor == n-1
	case "pgup":
		m.follow = false
		m.cursor = clamp(m.cursor-m.tableHeight(), 0, n-1)
	case "pgdown":
		m.cursor = clamp(m.cursor+m.tableHeight(), 0, n-1)
		m.follow = m.cursor == n-1
	case "home", "g":
		m.follow, m.cursor = false, 0
	case "end", "G":
		m.follow = true
	}
	return nil
}

// apply records one event.
func (m *TapModel) apply(e TapEvent) {
	r, ok := m.byID[e.ID]
	if !ok {
		r = &tapRow{first: e, start: e.Time}
		m.byID[e.ID] = r
		m.rows = append(m.rows, r)
		if len(m.rows) > maxTapRows {
			old := m.rows[0]
			delete(m.byID, old.first.ID)
			m.rows = m.rows[1:]
			m.cursor = max(m.cursor-1, 0)
		}
	}
	switch e.Kind {
	case RequestInit:
		r.first, r.start = e, e.Time
		m.authz = m.authz || e.Authz != nil
	case ResponseInit:
		r.rsp = &e
	case ResponseEnd:
		r.end = &e
	}
}

func (m *TapModel) matches(r *tapRow) bool {
	if m.filter == "" {
		return true
	}
	hay := strings.ToLower(strings.Join(r.values(true), " ") + " " + r.first.Authority)
	for _, term := range strings.Fields(strings.ToLower(m.filter)) {
		if !strings.Contains(hay, term) {
			return false
		}
	}
	return true
}

func (m *TapModel) visible() []*tapRow {
	if m.filter == "" {
		return m.rows
	}
	var out []*tapRow
	for _, r := range m.rows {
		if m.matches(r) {
			out = append(out, r)
		}
	}
	return out
}

// tableHeight is the number of request rows that fit: the screen less the
// title, the column header, the blank line and the footer.
func (m *TapModel) tableHeight() int { return max(m.height-4, 1) }

// View implements tea.Model.
func (m *TapModel) View() string {
	rows := m.visible()
	n := len(rows)
	h := m.tableHeight()

	var b strings.Builder
	b.WriteString(m.titleLine(n))
	b.WriteByte('\n')
	if m.detail && n > 0 {
		b.WriteString(m.detailView(rows[m.cursor], m.height-2))
	} else {
		cols := m.columns()
		ws := layout(cols, m.width)
		b.WriteString(m.st.header.Render(headerRow(cols, ws, -1, "")))
		b.WriteByte('\n')
		end := min(m.offset+h, n)
		for i := m.offset; i < end; i++ {
			line := row(cols, ws, rows[i].values(m.authz))
			switch {
			case i == m.cursor && !m.follow:
				line = m.st.selected.Render(line)
			case rows[i].failed():
				line = m.st.fail.Render(line)
			}
			b.WriteString(line)
			b.WriteByte('\n')
		}
		for i := end - m.offset; i < h; i++ {
			b.WriteByte('\n')
		}
	}
	b.WriteString(m.footer())
	return b.String()
}

func (m *TapModel) titleLine(n int) string {
	state := m.st.live.Render("LIVE")
	if m.paused {
		state = m.st.paused.Render(fmt.Sprintf("PAUSED (%d new events)", len(m.pending)))
	}
	switch {
	case m.streamErr != nil:
		state = m.st.fail.Render("ENDED: " + m.streamErr.Error())
	case m.streamDone:
		state = m.st.dim.Render("ENDED")
	}
	s := fmt.Sprintf("%s  %d requests  %s", m.st.title.Render("tap "+m.title), n, state)
	if m.filter != "" && !m.filtering {
		s += "  filter: " + m.filter
	}
	return s
}

func (m *TapModel) footer() string {
	switch {
	case m.filtering:
		return "/" + m.filter + "█  " + m.st.dim.Render("enter apply • esc clear")
	case m.detail:
		return m.st.dim.Render("esc back • q quit")
	}
	return m.st.dim.Render("↑/↓ select • enter details • / filter • space pause • q quit")
}

// detailView shows one request's headers and timings in h lines.
func (m *TapModel) detailView(r *tapRow, h int) string {
	e := r.first
	var lines []string
	add := func(label, val string) {
		lines = append(lines, fmt.Sprintf("  %-16s %s", label, val))
	}
	section := func(s string) { lines = append(lines, m.st.label.Render(s)) }

	section("Request")
	add("method", e.Method)
	add("authority", e.Authority)
	add("path", e.Path)
	add("from", e.Source)
	add("to", e.Destination)
	add("direction", e.Direction)
	add("tls", tlsText(e.TLS))
	if e.RouteName != "" {
		add("route", e.RouteKind+"/"+e.RouteName)
	}
	if a := e.Authz; a != nil {
		v := "allow " + a.Server
		if !a.Allowed {
			v = fmt.Sprintf("deny %s (%d)", a.Server, a.Status)
		}
		add("authz", v)
		if a.Route != "" {
			add("  route", a.Route)
		}
		if a.Authorization != "" {
			add("  authorization", a.Authorization)
		}
		if a.Reason != "" {
			add("  reason", a.Reason)
		}
	}
	section("Timings")
	add("request start", r.start.Format("15:04:05.000000"))
	if r.rsp != nil {
		add("response start", "+"+FormatLatency(r.rsp.Latency)+"  status "+statusText(r.rsp.Status))
	} else {
		add("response start", "(waiting)")
	}
	if r.end != nil {
		gs := "-"
		if r.end.GRPCStatus >= 0 {
			gs = fmt.Sprint(r.end.GRPCStatus)
		}
		add("end", fmt.Sprintf("+%s  grpc-status %s  %d bytes", FormatLatency(r.end.Duration), gs, r.end.ResponseBytes))
	} else {
		add("end", "(streaming)")
	}
	section("Request headers")
	for _, hd := range e.Headers {
		lines = append(lines, "  "+hd.Name+": "+hd.Value)
	}
	if r.rsp != nil && len(r.rsp.ResponseHeaders) > 0 {
		section("Response headers")
		for _, hd := range r.rsp.ResponseHeaders {
			lines = append(lines, "  "+hd.Name+": "+hd.Value)
		}
	}
	if len(lines) > h {
		lines = lines[:h]
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	for i, l := range lines {
		lines[i] = cell(l, m.width, false)
	}
	return strings.Join(lines, "\n") + "\n"
}

var _ tea.Model = (*TapModel)(nil)
