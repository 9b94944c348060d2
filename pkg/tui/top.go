package tui

import (
	"cmp"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	tea "github.com/charmbracelet/bubbletea"
)

// TopRow is one line of `conduit top`: every request between two peers with
// one method and path (and outbound route).
type TopRow struct {
	Source      string `json:"source"`
	Destination string `json:"destination"`
	Method      string `json:"method"`
	Path        string `json:"path"`
	// Route is the name of the outbound route the requests matched, ""
	// for none; RouteKind its kind (httproute, grpcroute).
	Route     string        `json:"route,omitempty"`
	RouteKind string        `json:"routeKind,omitempty"`
	Count     int64         `json:"count"`
	Best      time.Duration `json:"bestNs"`
	Worst     time.Duration `json:"worstNs"`
	Last      time.Duration `json:"lastNs"`
	Successes int64         `json:"successes"`
}

// SuccessRate is the share of successful requests.
func (r TopRow) SuccessRate() float64 {
	if r.Count == 0 {
		return 0
	}
	return float64(r.Successes) / float64(r.Count)
}

type topKey struct{ src, dst, method, path, routeKind, route string }

// maxOpenRequests bounds requests seen starting but not yet finished (a
// stream that lost their end events must not grow memory without bound).
const maxOpenRequests = 10000

type openRequest struct {
	key     topKey
	latency time.Duration
	status  int
}

// TopTable aggregates tap events into top rows. A request counts when it
// ends; its latency is the time to the response's start.
type TopTable struct {
	rows  map[topKey]*TopRow
	open  map[string]*openRequest
	order []string // open IDs, oldest first, for eviction
	total int64
}

// NewTopTable returns an empty table.
func NewTopTable() *TopTable {
	return &TopTable{rows: map[topKey]*TopRow{}, open: map[string]*openRequest{}}
}

// Total is the number of finished requests counted.
func (t *TopTable) Total() int64 { return t.total }

// Add records one tap event.
func (t *TopTable) Add(e TapEvent) {
	switch e.Kind {
	case RequestInit:
		if len(t.open) >= maxOpenRequests {
			t.evict()
		}
		if _, dup := t.open[e.ID]; !dup {
			t.order = append(t.order, e.ID)
		}
		t.open[e.ID] = &openRequest{key: topKey{e.Source, e.Destination, e.Method, e.Path, e.RouteKind, e.RouteName}}
	case ResponseInit:
		if o := t.open[e.ID]; o != nil {
			o.latency, o.status = e.Latency, e.Status
		}
	case ResponseEnd:
		o := t.open[e.ID]
		if o == nil {
			return
		}
		delete(t.open, e.ID)
		status := o.status
		if status == 0 {
			status = e.Status
		}
		t.count(o.key, o.latency, Success(status, e.GRPCStatus))
	}
}

func (t *TopTable) evict() {
	for len(t.order) > 0 && len(t.open) >= maxOpenRequests {
		id := t.order[0]
		t.order = t.order[1:]
		delete(t.open, id)
	}
	if len(t.order) > 2*maxOpenRequests {
		t.order = slices.DeleteFunc(t.order, func(id string) bool { return t.open[id] == nil })
	}
}

func (t *TopTable) count(k topKey, lat time.Duration, ok bool) {
	t.total++
	r := t.rows[k]
	if r == nil {
		r = &TopRow{Source: k.src, Destination: k.dst, Method: k.method, Path: k.path, Route: k.route, RouteKind: k.routeKind, Best: lat, Worst: lat}
		t.rows[k] = r
	}
	r.Count++
	r.Best = min(r.Best, lat)
	r.Worst = max(r.Worst, lat)
	r.Last = lat
	if ok {
		r.Successes++
	}
}

// TopColumn names a column of the top table, for sorting.
type TopColumn int

// The top table's columns in display order; keys 1-9 and 0 sort by them.
const (
	ColSource TopColumn = iota
	ColDestination
	ColMethod
	ColPath
	ColCount
	ColBest
	ColWorst
	ColLast
	ColSuccess
	ColRoute
)

// Rows returns the rows sorted by col (descending when desc), ties broken
// by count then path so the order is stable.
func (t *TopTable) Rows(col TopColumn, desc bool) []TopRow {
	out := make([]TopRow, 0, len(t.rows))
	for _, r := range t.rows {
		out = append(out, *r)
	}
	slices.SortFunc(out, func(a, b TopRow) int {
		c := compareTop(a, b, col)
		if desc {
			c = -c
		}
		if c != 0 {
			return c
		}
		if c = cmp.Compare(b.Count, a.Count); c != 0 {
			return c
		}
		return cmp.Or(strings.Compare(a.Path, b.Path), strings.Compare(a.Source, b.Source),
			strings.Compare(a.Destination, b.Destination), strings.Compare(a.Method, b.Method),
			strings.Compare(a.Route, b.Route), strings.Compare(a.RouteKind, b.RouteKind))
	})
	return out
}

func compareTop(a, b TopRow, col TopColumn) int {
	switch col {
	case ColSource:
		return strings.Compare(a.Source, b.Source)
	case ColDestination:
		return strings.Compare(a.Destination, b.Destination)
	case ColMethod:
		return strings.Compare(a.Method, b.Method)
	case ColPath:
		return strings.Compare(a.Path, b.Path)
	case ColCount:
		return cmp.Compare(a.Count, b.Count)
	case ColBest:
		return cmp.Compare(a.Best, b.Best)
	case ColWorst:
		return cmp.Compare(a.Worst, b.Worst)
	case ColLast:
		return cmp.Compare(a.Last, b.Last)
	case ColSuccess:
		return cmp.Compare(a.SuccessRate(), b.SuccessRate())
	case ColRoute:
		return strings.Compare(a.Route, b.Route)
	}
	return 0
}

// topColumns leave room for the sort mark (" ▼") after each title.
var topColumns = []column{
	{title: "SOURCE", min: 10, flex: 2},
	{title: "DESTINATION", min: 13, flex: 2},
	{title: "METHOD", min: 8},
	{title: "PATH", min: 10, flex: 4},
	{title: "COUNT", min: 7, right: true},
	{title: "BEST", min: 8, right: true},
	{title: "WORST", min: 8, right: true},
	{title: "LAST", min: 8, right: true},
	{title: "SUCCESS", min: 9, right: true},
	{title: "ROUTE", min: 10},
}

func topValues(r TopRow) []string {
	return []string{
		r.Source, r.Destination, r.Method, r.Path,
		strconv.FormatInt(r.Count, 10),
		FormatLatency(r.Best), FormatLatency(r.Worst), FormatLatency(r.Last),
		FormatPercent(r.SuccessRate(), r.Count > 0),
		dash(r.Route),
	}
}

// TopModel is the interactive `conduit top` view.
type TopModel struct {
	title string
	st    styles
	table *TopTable

	paused      bool
	frozen      []TopRow // the rows shown while paused
	frozenTotal int64
	sortBy      TopColumn
	desc        bool

	width, height int
	streamErr     error
	streamDone    bool
}

// NewTopModel returns a top view sorted by count, busiest first.
func NewTopModel(title string) *TopModel {
	return &TopModel{title: title, st: defaultStyles(), table: NewTopTable(),
		sortBy: ColCount, desc: true, width: 80, height: 24}
}

// Init implements tea.Model.
func (m *TopModel) Init() tea.Cmd { return nil }

// Table is the aggregate behind the view.
func (m *TopModel) Table() *TopTable { return m.table }

// Sort reports the sort column and direction.
func (m *TopModel) Sort() (TopColumn, bool) { return m.sortBy, m.desc }

// Paused reports whether the view is paused.
func (m *TopModel) Paused() bool { return m.paused }

// Update implements tea.Model. Keys 1–9 and 0 sort by that column (again
// to reverse), "r" reverses, space pauses the display (counting goes on).
func (m *TopModel) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.width, m.height = msg.Width, msg.Height
	case TapEventMsg:
		m.table.Add(TapEvent(msg))
	case StreamEndMsg:
		m.streamDone, m.streamErr = true, msg.Err
	case tea.KeyMsg:
		switch k := msg.String(); k {
		case "q", "ctrl+c":
			return m, tea.Quit
		case " ":
			m.paused = !m.paused
			m.frozen, m.frozenTotal = m.table.Rows(m.sortBy, m.desc), m.table.Total()
		case "r":
			m.desc = !m.desc
		case "1", "2", "3", "4", "5", "6", "7", "8", "9", "0":
			c := TopColumn(k[0] - '1')
			if k == "0" {
				c = ColRoute
			}
			if c == m.sortBy {
				m.desc = !m.desc
			} else {
				// Names read best A→Z; numbers busiest/slowest first.
				m.sortBy, m.desc = c, c >= ColCount && c != ColRoute
			}
		}
		if m.paused {
			m.frozen = sortedCopy(m.frozen, m.sortBy, m.desc)
		}
	}
	return m, nil
}

func sortedCopy(rows []TopRow, col TopColumn, desc bool) []TopRow {
	t := NewTopTable()
	for _, r := range rows {
		r := r
		t.rows[topKey{r.Source, r.Destination, r.Method, r.Path, r.RouteKind, r.Route}] = &r
	}
	return t.Rows(col, desc)
}

// View implements tea.Model.
func (m *TopModel) View() string {
	rows, total := m.frozen, m.frozenTotal
	if !m.paused {
		rows, total = m.table.Rows(m.sortBy, m.desc), m.table.Total()
	}
	state := m.st.live.Render("LIVE")
	if m.paused {
		state = m.st.paused.Render("PAUSED")
	}
	switch {
	case m.streamErr != nil:
		state = m.st.fail.Render("ENDED: " + m.streamErr.Error())
	case m.streamDone:
		state = m.st.dim.Render("ENDED")
	}
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %d requests  %s\n", m.st.title.Render("top "+m.title), total, state)
	ws := layout(topColumns, m.width)
	mark := " ▲"
	if m.desc {
		mark = " ▼"
	}
	b.WriteString(m.st.header.Render(headerRow(topColumns, ws, int(m.sortBy), mark)))
	b.WriteByte('\n')
	h := max(m.height-3, 1)
	for i := 0; i < h; i++ {
		if i < len(rows) {
			line := row(topColumns, ws, topValues(rows[i]))
			if rows[i].Successes < rows[i].Count {
				line = m.st.fail.Render(line)
			}
			b.WriteString(line)
		}
		b.WriteByte('\n')
	}
	b.WriteString(m.st.dim.Render("1-9,0 sort by column • r reverse • space pause • q quit"))
	return b.String()
}

var _ tea.Model = (*TopModel)(nil)
