package main

import (
	"context"
	"embed"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Proxy variants are conduit-proxy with one more library linked in and used,
// to measure what that library would cost the sidecar (bench/notes.md). Each
// is the proxy's own source plus one file of testdata/proxyextra/, added to
// cmd/conduit-proxy with `go build -overlay`: the source tree is never
// written to, and the product never contains the file.
//
//go:embed testdata/proxyextra/*.go
var proxyExtras embed.FS

// proxyVariants maps a variant system to its extra file.
var proxyVariants = map[string]string{
	"conduit-grpcgo":     "grpcgo.go",
	"conduit-promclient": "promclient.go",
}

// variantBuildArgs writes the overlay that adds system's extra file to the
// conduit-proxy of proxySrc, and returns the `go build` arguments (without
// the release flags) that build it as out.
func variantBuildArgs(system, proxySrc, dir, out string) ([]string, error) {
	extra, err := proxyExtras.ReadFile("testdata/proxyextra/" + proxyVariants[system])
	if err != nil {
		return nil, err
	}
	src, err := filepath.Abs(proxySrc)
	if err != nil {
		return nil, err
	}
	extraPath := filepath.Join(dir, system+"-extra.go")
	if err := os.WriteFile(extraPath, extra, 0o644); err != nil {
		return nil, err
	}
	overlay, _ := json.Marshal(map[string]map[string]string{"Replace": {
		filepath.Join(src, "cmd", "conduit-proxy", "zz_bench_"+proxyVariants[system]): extraPath,
	}})
	overlayPath := filepath.Join(dir, system+"-overlay.json")
	if err := os.WriteFile(overlayPath, overlay, 0o644); err != nil {
		return nil, err
	}
	return []string{"build", "-overlay", overlayPath, "-o", out, "./cmd/conduit-proxy"}, nil
}

// startGRPCVariant runs conduit-grpcgo in front of target; its gRPC client
// connection goes to fortio's gRPC server.
func startGRPCVariant(ctx context.Context, e *benchEnv, _ protocol, target string) (*deployment, error) {
	p, l, err := e.startProxyBin(ctx, e.bins.variants["conduit-grpcgo"], []string{"BENCH_GRPC_TARGET=" + e.servers["grpc"]}, "", target)
	return single(p, l.in, err)
}

// startPromVariant runs conduit-promclient in front of target; after the
// load, its client_golang registry is scraped once, as Prometheus would.
func startPromVariant(ctx context.Context, e *benchEnv, _ protocol, target string) (*deployment, error) {
	metrics, err := freeAddr()
	if err != nil {
		return nil, err
	}
	p, l, err := e.startProxyBin(ctx, e.bins.variants["conduit-promclient"], []string{"BENCH_METRICS_LISTEN=" + metrics}, "", target)
	d, err := single(p, l.in, err)
	if err != nil {
		return nil, err
	}
	d.verify = func(*sample) error { return scrapeRegistry("http://" + metrics + "/metrics") }
	return d, nil
}

// scrapeRegistry reads a client_golang /metrics page and checks it holds
// the latency histogram.
func scrapeRegistry(url string) error {
	client := &http.Client{Timeout: 5 * time.Second}
	resp, err := client.Get(url)
	if err != nil {
		return fmt.Errorf("scraping the client_golang registry: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("scraping the client_golang registry: %w", err)
	}
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "response_latency_ms_bucket{") {
		return fmt.Errorf("the client_golang registry at %s answered %s without response_latency_ms_bucket", url, resp.Status)
	}
	return nil
}
