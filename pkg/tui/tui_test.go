package tui

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/muesli/termenv"
)

func TestMain(m *testing.M) {
	// Golden files hold plain text: no colour whatever the terminal.
	lipgloss.SetColorProfile(termenv.Ascii)
	os.Exit(m.Run())
}

var t0 = time.Date(2026, 11, 25, 16, 0, 0, 0, time.UTC)

// request returns the three events of one request.
func request(n int, src, dst, method, path string, status, grpcStatus int, lat time.Duration) []TapEvent {
	id := fmt.Sprintf("%d:%d", 1, n)
	at := t0.Add(time.Duration(n) * 100 * time.Millisecond)
	req := TapEvent{ID: id, Kind: RequestInit, Time: at, Source: src, Destination: dst,
		Direction: "outbound", TLS: true, Method: method, Authority: "books.demo:7001", Path: path,
		Headers: []Header{{"user-agent", "demo"}, {"authorization", "<redacted>"}}}
	rsp := req
	rsp.Kind, rsp.Time, rsp.Status, rsp.Latency = ResponseInit, at.Add(lat), status, lat
	rsp.ResponseHeaders = []Header{{"content-type", "application/grpc"}}
	end := req
	end.Kind, end.Time, end.GRPCStatus, end.Duration, end.ResponseBytes = ResponseEnd, at.Add(lat+time.Millisecond), grpcStatus, lat+time.Millisecond, 42
	return []TapEvent{req, rsp, end}
}

// sampleEvents: four calls of /books.Books/List, which match the
// GRPCRoute books, and two failed calls of /authors.Authors/Get, which
// match no route.
func sampleEvents() []TapEvent {
	var evs []TapEvent
	for i := 0; i < 6; i++ {
		path := "/books.Books/List"
		gs := 0
		if i%3 == 2 {
			path, gs = "/authors.Authors/Get", 13
		}
		req := request(i, "deploy/web", "deploy/books", "POST", path, 200, gs, time.Duration(i+1)*time.Millisecond)
		if gs == 0 {
			req[0].RouteKind, req[0].RouteName = "grpcroute", "books"
		}
		evs = append(evs, req...)
	}
	return evs
}

func send(m tea.Model, msgs ...tea.Msg) tea.Model {
	for _, msg := range msgs {
		m, _ = m.Update(msg)
	}
	return m
}

func keys(s string) []tea.Msg {
	var out []tea.Msg
	for _, r := range s {
		switch r {
		case ' ':
			out = append(out, tea.KeyMsg{Type: tea.KeySpace, Runes: []rune{' '}})
		case '\n':
			out = append(out, tea.KeyMsg{Type: tea.KeyEnter})
		case '\x1b':
			out = append(out, tea.KeyMsg{Type: tea.KeyEsc})
		default:
			out = append(out, tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}})
		}
	}
	return out
}

func eventMsgs(evs []TapEvent) []tea.Msg {
	out := make([]tea.Msg, len(evs))
	for i, e := range evs {
		out[i] = TapEventMsg(e)
	}
	return out
}

func TestTapModelUpdate(t *testing.T) {
	tests := []struct {
		name        string
		msgs        []tea.Msg
		wantLen     int
		wantPaused  bool
		wantFilter  string
		wantContain []string
		wantAbsent  []string
	}{
		{name: "events fill rows", msgs: eventMsgs(sampleEvents()), wantLen: 6,
			wantContain: []string{"/books.Books/List", "LIVE", "6 requests"}},
		{name: "filter narrows", msgs: append(eventMsgs(sampleEvents()), keys("/authors\n")...), wantLen: 2,
			wantFilter: "authors", wantContain: []string{"filter: authors"}, wantAbsent: []string{"/books.Books/List"}},
		{name: "filter terms all match", msgs: append(eventMsgs(sampleEvents()), keys("/LIST 200\n")...), wantLen: 4, wantFilter: "LIST 200"},
		{name: "slash and text in one read", msgs: append(eventMsgs(sampleEvents()), tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("/authors")}, tea.KeyMsg{Type: tea.KeyEnter}),
			wantLen: 2, wantFilter: "authors"},
		{name: "esc clears filter while typing", msgs: append(eventMsgs(sampleEvents()), keys("/auth\x1b")...), wantLen: 6},
		{name: "pause holds new events", msgs: append(append(eventMsgs(sampleEvents()[:3]), keys(" ")...), eventMsgs(sampleEvents()[3:])...),
			wantLen: 1, wantPaused: true, wantContain: []string{"PAUSED (15 new events)"}},
		{name: "unpause applies held events", msgs: append(append(append(eventMsgs(sampleEvents()[:3]), keys(" ")...), eventMsgs(sampleEvents()[3:])...), keys(" ")...),
			wantLen: 6},
		{name: "enter opens details", msgs: append(append(eventMsgs(sampleEvents()), keys("k")...), keys("\n")...), wantLen: 6,
			wantContain: []string{"Request headers", "authorization: <redacted>", "grpc-status 0", "content-type: application/grpc"}},
		{name: "stream end shown", msgs: append(eventMsgs(sampleEvents()), StreamEndMsg{Err: fmt.Errorf("controller went away")}), wantLen: 6,
			wantContain: []string{"ENDED: controller went away"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := send(NewTapModel("deploy/web"), append([]tea.Msg{tea.WindowSizeMsg{Width: 120, Height: 20}}, tc.msgs...)...).(*TapModel)
			if m.Len() != tc.wantLen {
				t.Errorf("Len() = %d, want %d", m.Len(), tc.wantLen)
			}
			if m.Paused() != tc.wantPaused {
				t.Errorf("Paused() = %v, want %v", m.Paused(), tc.wantPaused)
			}
			if m.Filter() != tc.wantFilter {
				t.Errorf("Filter() = %q, want %q", m.Filter(), tc.wantFilter)
			}
			v := m.View()
			for _, s := range tc.wantContain {
				if !bytes.Contains([]byte(v), []byte(s)) {
					t.Errorf("view lacks %q:\n%s", s, v)
				}
			}
			for _, s := range tc.wantAbsent {
				if bytes.Contains([]byte(v), []byte(s)) {
					t.Errorf("view has %q:\n%s", s, v)
				}
			}
		})
	}
}

func TestTapModelQuits(t *testing.T) {
	for _, k := range []tea.KeyMsg{{Type: tea.KeyRunes, Runes: []rune("q")}, {Type: tea.KeyCtrlC}} {
		_, cmd := NewTapModel("x").Update(k)
		if cmd == nil {
			t.Fatalf("%v: no command", k)
		}
		if _, ok := cmd().(tea.QuitMsg); !ok {
			t.Errorf("%v: command is not tea.Quit", k)
		}
	}
	// While filtering, q is text.
	m := send(NewTapModel("x"), keys("/")...)
	if _, cmd := m.Update(keys("q")[0]); cmd != nil {
		t.Errorf("q while filtering quit")
	}
}

func TestTapModelBoundsRows(t *testing.T) {
	m := NewTapModel("x")
	for i := 0; i < maxTapRows+10; i++ {
		m.Update(TapEventMsg(request(i, "a", "b", "GET", "/", 200, -1, time.Millisecond)[0]))
	}
	if m.Len() != maxTapRows {
		t.Errorf("Len() = %d, want %d", m.Len(), maxTapRows)
	}
}

func TestTopTable(t *testing.T) {
	tt := NewTopTable()
	for _, e := range sampleEvents() {
		tt.Add(e)
	}
	// An unfinished request does not count.
	tt.Add(request(99, "deploy/web", "deploy/books", "POST", "/books.Books/List", 200, 0, time.Millisecond)[0])
	rows := tt.Rows(ColCount, true)
	if len(rows) != 2 || tt.Total() != 6 {
		t.Fatalf("rows = %+v, total %d", rows, tt.Total())
	}
	want := TopRow{Source: "deploy/web", Destination: "deploy/books", Method: "POST", Path: "/books.Books/List",
		Route: "books", RouteKind: "grpcroute", Count: 4, Best: time.Millisecond, Worst: 5 * time.Millisecond, Last: 5 * time.Millisecond, Successes: 4}
	if rows[0] != want {
		t.Errorf("rows[0] = %+v\nwant %+v", rows[0], want)
	}
	if rows[1].Successes != 0 || rows[1].Count != 2 {
		t.Errorf("failed gRPC calls counted as success: %+v", rows[1])
	}
	if got := tt.Rows(ColPath, false); got[0].Path != "/authors.Authors/Get" {
		t.Errorf("sort by path: first %q", got[0].Path)
	}
	if got := tt.Rows(ColRoute, true); got[0].Route != "books" || got[1].Route != "" {
		t.Errorf("sort by route: %+v", got)
	}
}

func TestTopModelSortAndPause(t *testing.T) {
	m := send(NewTopModel("deploy/web"), append([]tea.Msg{tea.WindowSizeMsg{Width: 120, Height: 10}}, eventMsgs(sampleEvents())...)...).(*TopModel)
	if c, d := m.Sort(); c != ColCount || !d {
		t.Fatalf("default sort %v %v", c, d)
	}
	send(m, keys("4")...)
	if c, d := m.Sort(); c != ColPath || d {
		t.Errorf("after 4: %v %v", c, d)
	}
	send(m, keys("4")...)
	if _, d := m.Sort(); !d {
		t.Errorf("4 again did not reverse")
	}
	send(m, keys("0")...)
	if c, d := m.Sort(); c != ColRoute || d {
		t.Errorf("after 0: %v %v, want by route, A→Z", c, d)
	}
	send(m, keys(" ")...)
	send(m, eventMsgs(request(50, "deploy/web", "deploy/authors", "GET", "/new", 200, -1, time.Millisecond))...)
	if bytes.Contains([]byte(m.View()), []byte("/new")) {
		t.Errorf("paused view shows a new row")
	}
	send(m, keys(" ")...)
	if !bytes.Contains([]byte(m.View()), []byte("/new")) {
		t.Errorf("resumed view lacks the new row")
	}
}

func TestTapTeatest(t *testing.T) {
	tm := teatest.NewTestModel(t, NewTapModel("deploy/web"), teatest.WithInitialTermSize(110, 14))
	for _, e := range sampleEvents() {
		tm.Send(TapEventMsg(e))
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("6 requests")) },
		teatest.WithDuration(5*time.Second))
	tm.Type("/authors")
	tm.Send(tea.KeyMsg{Type: tea.KeyEnter})
	tm.Type("q")
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*TapModel)
	teatest.RequireEqualOutput(t, []byte(fm.View()))
}

func TestTapDetailTeatest(t *testing.T) {
	tm := teatest.NewTestModel(t, NewTapModel("deploy/web"), teatest.WithInitialTermSize(90, 24))
	for _, e := range sampleEvents()[:3] {
		tm.Send(TapEventMsg(e))
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("1 requests")) },
		teatest.WithDuration(5*time.Second))
	tm.Send(tea.KeyMsg{Type: tea.KeyEnter})
	tm.Type("q")
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*TapModel)
	teatest.RequireEqualOutput(t, []byte(fm.View()))
}

// authzEvents are inbound requests under a policy: admitted ones, and one
// the policy refused (answered 403 by the proxy).
func authzEvents() []TapEvent {
	var evs []TapEvent
	for i := 0; i < 3; i++ {
		status := 200
		a := &Authz{Allowed: true, Server: "server/web-http", Route: "httproute/books", Authorization: "authorizationpolicy/web-get"}
		if i == 1 {
			status = 403
			a = &Authz{Status: 403, Server: "server/web-http", Route: "httproute/books",
				Reason: "unauthorized: server web-http requires mesh TLS (client 10.0.0.7 is not meshed)"}
		}
		req := request(i, "deploy/traffic", "deploy/web", "GET", "/books", status, NoGRPCStatus, time.Millisecond)
		for j := range req {
			req[j].Direction, req[j].Authz = "inbound", a
		}
		evs = append(evs, req...)
	}
	return evs
}

func TestTapAuthz(t *testing.T) {
	// Without policy decisions there is no AUTHZ column.
	plain := send(NewTapModel("deploy/web"), append([]tea.Msg{tea.WindowSizeMsg{Width: 120, Height: 20}}, eventMsgs(sampleEvents())...)...).(*TapModel)
	if v := plain.View(); bytes.Contains([]byte(v), []byte("AUTHZ")) {
		t.Errorf("AUTHZ column without policy:\n%s", v)
	}
	m := send(NewTapModel("deploy/web"), append([]tea.Msg{tea.WindowSizeMsg{Width: 120, Height: 20}}, eventMsgs(authzEvents())...)...).(*TapModel)
	send(m, keys("/deny\n")...)
	if m.Len() != 1 {
		t.Errorf("filter deny: %d rows, want 1:\n%s", m.Len(), m.View())
	}
	send(m, keys("\x1bk\n")...) // clear, select the refused request, details
	v := m.View()
	for _, s := range []string{"authz            deny server/web-http (403)", "route          httproute/books", "reason         unauthorized: server web-http requires mesh TLS"} {
		if !bytes.Contains([]byte(v), []byte(s)) {
			t.Errorf("details lack %q:\n%s", s, v)
		}
	}
}

func TestTapAuthzTeatest(t *testing.T) {
	tm := teatest.NewTestModel(t, NewTapModel("deploy/web"), teatest.WithInitialTermSize(130, 8))
	for _, e := range authzEvents() {
		tm.Send(TapEventMsg(e))
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("3 requests")) },
		teatest.WithDuration(5*time.Second))
	tm.Type("q")
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*TapModel)
	teatest.RequireEqualOutput(t, []byte(fm.View()))
}

func TestTopTeatest(t *testing.T) {
	tm := teatest.NewTestModel(t, NewTopModel("deploy/web"), teatest.WithInitialTermSize(120, 8))
	for _, e := range sampleEvents() {
		tm.Send(TapEventMsg(e))
	}
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("6 requests")) },
		teatest.WithDuration(5*time.Second))
	tm.Type("6 q")
	fm := tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).(*TopModel)
	teatest.RequireEqualOutput(t, []byte(fm.View()))
}

func TestStatTables(t *testing.T) {
	var b bytes.Buffer
	rows := []StatRow{
		{Namespace: "demo", Name: "web", MeshedPods: 1, TotalPods: 1, HasTraffic: true, SuccessRate: 0.95, RPS: 10.5, P50: 1.5, P95: 4, P99: 12, TCPConns: 3, ReadBPS: 100, WriteBPS: 200},
		{Namespace: "demo", Name: "idle", MeshedPods: 0, TotalPods: 2},
		{Namespace: "demo", Name: "web.demo.svc.cluster.local:8080", HasTraffic: true, SuccessRate: 1, RPS: 1, P50: 1, P95: 2, P99: 3},
	}
	if err := WriteStatTable(&b, rows, StatTableOptions{AllNamespaces: true, Wide: true}); err != nil {
		t.Fatal(err)
	}
	b.WriteString("--\n")
	if err := WriteEdgesTable(&b, []EdgeRow{
		{Src: "web", Dst: "books", SrcNamespace: "demo", DstNamespace: "demo", Secured: true, ClientID: "spiffe://cluster.local/ns/demo/sa/web", ServerID: "spiffe://cluster.local/ns/demo/sa/books"},
		{Src: "load", Dst: "web", SrcNamespace: "demo", DstNamespace: "demo", NoTLSReason: "source not meshed"},
	}, true); err != nil {
		t.Fatal(err)
	}
	teatest.RequireEqualOutput(t, b.Bytes())
}

// TestStatTablesAuthz: ALLOWED and DENIED appear once some row is under a
// policy, "-" for the rows that are not.
func TestStatTablesAuthz(t *testing.T) {
	var b bytes.Buffer
	rows := []StatRow{
		{Namespace: "demo", Name: "web", MeshedPods: 1, TotalPods: 1, HasTraffic: true, SuccessRate: 1, RPS: 10.5, P50: 1.5, P95: 4, P99: 12, TCPConns: 3,
			Authz: true, Allowed: 615, Denied: 15},
		{Namespace: "demo", Name: "quiet", MeshedPods: 1, TotalPods: 1, Authz: true},
		{Namespace: "demo", Name: "legacy", MeshedPods: 0, TotalPods: 2},
	}
	if err := WriteStatTable(&b, rows, StatTableOptions{}); err != nil {
		t.Fatal(err)
	}
	b.WriteString("--\n")
	if err := WriteStatTable(&b, rows, StatTableOptions{AllNamespaces: true, Wide: true}); err != nil {
		t.Fatal(err)
	}
	// A row whose policy decided opaque connections adds TCP_ALLOWED and
	// TCP_DENIED.
	rows = append(rows, StatRow{Namespace: "demo", Name: "cache", MeshedPods: 1, TotalPods: 1, TCPConns: 4, Authz: true, TCPAllowed: 40, TCPDenied: 2})
	b.WriteString("--\n")
	if err := WriteStatTable(&b, rows, StatTableOptions{}); err != nil {
		t.Fatal(err)
	}
	teatest.RequireEqualOutput(t, b.Bytes())
}

func TestFormatLatency(t *testing.T) {
	for d, want := range map[time.Duration]string{
		0: "-", 850 * time.Microsecond: "850µs", 1250 * time.Microsecond: "1.25ms",
		12 * time.Millisecond: "12ms", 1500 * time.Millisecond: "1.50s",
	} {
		if got := FormatLatency(d); got != want {
			t.Errorf("FormatLatency(%v) = %q, want %q", d, got, want)
		}
	}
}
