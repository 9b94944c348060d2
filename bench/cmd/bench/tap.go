package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// Tapped systems: one conduit-proxy (as "conduit") with one tap stream open
// on its admin port, matching every request, like `conduit tap` with no
// filter and no rate limit. "conduit-tap" reads the events as fast as they
// come; "conduit-tap-stalled" never reads, so the proxy's per-subscriber
// buffer fills and it must drop events instead of slowing traffic.
//
// The reader stands in for the controller, which runs elsewhere in a
// cluster: it is pinned to the load generator's CPU at normal priority (the
// measured processes run at real-time priority), so its own work does not
// count against the proxy; encoding and writing the events does.
func startTapped(stall bool) func(context.Context, *benchEnv, protocol, string) (*deployment, error) {
	return func(ctx context.Context, e *benchEnv, _ protocol, target string) (*deployment, error) {
		p, l, err := e.startConduitProxy(ctx, target)
		if err != nil {
			return nil, err
		}
		d := &deployment{addr: l.in, measured: []*proc{p}}
		statsFile := filepath.Join(e.dir, "tap-"+strconv.FormatInt(time.Now().UnixNano(), 36)+".stats")
		args := []string{"taskset", "-c", e.opts.loadCPU, e.bins.tapreader, "--admin", l.admin, "--stats", statsFile}
		if stall {
			args = append(args, "--stall")
		}
		r, err := start(e.dir, nil, args...)
		if err != nil {
			d.stop()
			return nil, err
		}
		d.helpers = append(d.helpers, r)
		metricsURL := "http://" + l.admin + "/metrics"
		if err := waitTapSubscribed(ctx, r, metricsURL); err != nil {
			d.stop()
			return nil, err
		}
		d.verify = func(s *sample) error {
			if r.exited() {
				return fmt.Errorf("the tap reader stopped during the run: %s", r.tail())
			}
			m, err := scrape(metricsURL)
			if err != nil {
				return err
			}
			if m["tap_subscribers"] != 1 {
				return fmt.Errorf("the proxy has %v tap subscribers after the run, want 1", m["tap_subscribers"])
			}
			s.TapDropped = int64(m["tap_events_dropped_total"])
			// The reader rewrites its file every 200 ms: give it one more turn.
			time.Sleep(300 * time.Millisecond)
			if s.TapEvents, err = readTapEvents(statsFile); err != nil {
				return err
			}
			if !stall && s.TapEvents == 0 {
				return fmt.Errorf("the tap reader received no event: the row would not measure tapping")
			}
			if stall && s.TapDropped == 0 {
				return fmt.Errorf("the proxy dropped no event for a subscriber that never reads")
			}
			return nil
		}
		return d, nil
	}
}

// waitTapSubscribed waits until the proxy counts the reader's stream.
func waitTapSubscribed(ctx context.Context, r *proc, metricsURL string) error {
	deadline := time.Now().Add(10 * time.Second)
	for {
		m, err := scrape(metricsURL)
		if err == nil && m["tap_subscribers"] >= 1 {
			return nil
		}
		if r.exited() {
			return fmt.Errorf("the tap reader exited: %s", r.tail())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the proxy counts no tap subscriber after 10s (%v)", err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// scrape reads a Prometheus text page's unlabelled series.
func scrape(url string) (map[string]float64, error) {
	resp, err := http.Get(url)
	if err != nil {
		return nil, fmt.Errorf("reading the proxy's metrics: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("reading the proxy's metrics: %w", err)
	}
	m := map[string]float64{}
	for _, line := range strings.Split(string(body), "\n") {
		name, val, ok := strings.Cut(line, " ")
		if !ok || strings.HasPrefix(line, "#") || strings.Contains(name, "{") {
			continue
		}
		if v, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			m[name] = v
		}
	}
	return m, nil
}

// readTapEvents reads the reader's "events N bytes B" file.
func readTapEvents(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("reading the tap reader's count: %w", err)
	}
	var events, size int64
	if _, err := fmt.Sscanf(string(b), "events %d bytes %d", &events, &size); err != nil {
		return 0, fmt.Errorf("the tap reader's count %q: %w", strings.TrimSpace(string(b)), err)
	}
	return events, nil
}
