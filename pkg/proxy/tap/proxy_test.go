package tap

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	tapv1 "github.com/conduitmesh/conduit/pkg/api/tap/v1"
	"github.com/conduitmesh/conduit/pkg/proxy"
)

// TestThroughProxy taps requests carried by a real proxy's inbound side.
func TestThroughProxy(t *testing.T) {
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			http.Error(w, "nope", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Length", "5")
		io.WriteString(w, "hello")
	}))
	defer backend.Close()
	ts := NewServer(Config{})
	p, err := proxy.New(proxy.Config{InboundAddr: "127.0.0.1:0", InboundTarget: strings.TrimPrefix(backend.URL, "http://"), Observer: ts})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() { cancel(); <-done }()

	sub := &subscriber{match: matchAll, ch: make(chan []byte, 16)}
	ts.add(sub)
	client := &http.Client{Timeout: 10 * time.Second}
	for _, path := range []string{"/ok", "/fail"} {
		req, _ := http.NewRequest(http.MethodGet, "http://"+p.InboundAddr()+path, nil)
		req.Header.Set("Cookie", "session=secret")
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	var got []string
	for len(got) < 6 {
		var ev tapv1.TapEvent
		select {
		case b := <-sub.ch:
			if err := proto.Unmarshal(b, &ev); err != nil {
				t.Fatal(err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("events so far: %v", got)
		}
		h := ev.GetHttp()
		switch {
		case h.GetRequestInit() != nil:
			ri := h.GetRequestInit()
			for _, hd := range ri.GetHeaders() {
				if hd.GetName() == "cookie" && string(hd.GetValue()) != Redacted {
					t.Errorf("cookie leaked: %s", hd.GetValue())
				}
			}
			if ev.GetDirection() != tapv1.Direction_DIRECTION_INBOUND {
				t.Errorf("direction %v", ev.GetDirection())
			}
			got = append(got, "req "+ri.GetMethod()+" "+ri.GetPath())
		case h.GetResponseInit() != nil:
			got = append(got, "rsp "+http.StatusText(int(h.GetResponseInit().GetHttpStatus())))
		case h.GetResponseEnd() != nil:
			e := h.GetResponseEnd()
			got = append(got, "end "+strings.Repeat("x", int(e.GetResponseBytes())))
		}
	}
	want := "req GET /ok|rsp OK|end xxxxx|req GET /fail|rsp Service Unavailable|end "
	if g := strings.Join(got, "|"); !strings.HasPrefix(g, "req GET /ok|rsp OK|end xxxxx|req GET /fail|rsp Service Unavailable|end") {
		t.Errorf("events:\n%s\nwant:\n%s", g, want)
	}
}
