// Command tapreader opens one tap stream on a conduit-proxy's admin port, as
// the controller does, matching every request, and either reads its events
// as fast as they come (the "tapped at full rate" system) or never reads
// them (a stalled subscriber: the proxy must drop and count events rather
// than slow its traffic).
//
// It speaks gRPC by hand over the standard library's h2c client, so the
// bench module needs none of conduit's packages: the request is an empty
// conduit.tap.v1.ObserveRequest (no limit, match everything), and events are
// counted as gRPC messages without being decoded. With --stats it rewrites
// the file every 200 ms with "events N bytes B".
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"time"
)

const observePath = "/conduit.tap.v1.Tap/Observe"

func main() {
	admin := flag.String("admin", "", "HOST:PORT of the proxy's admin listener (plaintext h2c from loopback)")
	stall := flag.Bool("stall", false, "open the stream but never read it")
	stats := flag.String("stats", "", "file to keep the event count in")
	flag.Parse()
	if *admin == "" {
		fmt.Fprintln(os.Stderr, "tapreader: --admin HOST:PORT is required")
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, *admin, *stall, *stats); err != nil {
		fmt.Fprintf(os.Stderr, "tapreader: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, admin string, stall bool, statsPath string) error {
	var protos http.Protocols
	protos.SetUnencryptedHTTP2(true)
	tr := &http.Transport{Protocols: &protos}
	if stall {
		// The smallest windows HTTP/2 allows, so that the proxy's writes
		// block soon and its buffer fills.
		tr.HTTP2 = &http.HTTP2Config{MaxReceiveBufferPerStream: 64 << 10, MaxReceiveBufferPerConnection: 64 << 10}
	}
	defer tr.CloseIdleConnections()
	// An empty ObserveRequest in one uncompressed gRPC frame.
	frame := make([]byte, 5)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+admin+observePath, bytes.NewReader(frame))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/grpc")
	req.Header.Set("TE", "trailers")
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return fmt.Errorf("opening the tap stream on %s: %w", admin, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("tap stream on %s: status %s", admin, resp.Status)
	}
	if s := resp.Header.Get("Grpc-Status"); s != "" && s != "0" {
		return fmt.Errorf("tap stream on %s refused: grpc-status %s: %s", admin, s, resp.Header.Get("Grpc-Message"))
	}
	var events, nbytes atomic.Int64
	if statsPath != "" {
		done := make(chan struct{})
		defer func() { close(done); writeStats(statsPath, events.Load(), nbytes.Load()) }()
		go func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				writeStats(statsPath, events.Load(), nbytes.Load())
				select {
				case <-done:
					return
				case <-t.C:
				}
			}
		}()
	}
	if stall {
		<-ctx.Done()
		return nil
	}
	var hdr [5]byte
	buf := make([]byte, 32<<10)
	for {
		if _, err := io.ReadFull(resp.Body, hdr[:]); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("the proxy ended the tap stream: grpc-status %q %s", resp.Trailer.Get("Grpc-Status"), resp.Trailer.Get("Grpc-Message"))
			}
			return fmt.Errorf("reading the tap stream: %w", err)
		}
		n := int64(binary.BigEndian.Uint32(hdr[1:]))
		if _, err := io.CopyBuffer(io.Discard, io.LimitReader(resp.Body, n), buf); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("reading a tap event: %w", err)
		}
		events.Add(1)
		nbytes.Add(5 + n)
	}
}

// writeStats replaces path atomically, so a reader never sees half a line.
func writeStats(path string, events, size int64) {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if os.WriteFile(tmp, fmt.Appendf(nil, "events %d bytes %d\n", events, size), 0o644) == nil {
		os.Rename(tmp, path)
	}
}
