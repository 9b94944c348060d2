package main

// Added to conduit-proxy by the bench (go build -overlay) for the system
// conduit-promclient; never part of the product. It links
// prometheus/client_golang and uses it the way the proxy would for its own
// metrics: a registry (no Go or process collectors) holding the proxy's
// main families with a few series each — the response latency histogram
// with the proxy's buckets — served by promhttp on $BENCH_METRICS_LISTEN.
// The series are made at start: updating a counter or a histogram does not
// allocate, so traffic would not change their memory.

import (
	"fmt"
	"net"
	"net/http"
	"os"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

func init() {
	listen := os.Getenv("BENCH_METRICS_LISTEN")
	if listen == "" {
		fmt.Fprintln(os.Stderr, "bench client_golang variant: BENCH_METRICS_LISTEN is not set")
		os.Exit(2)
	}
	reg := prometheus.NewRegistry()
	labels := []string{"direction", "authority", "tls", "classification", "status_code"}
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "request_total", Help: "Total count of HTTP requests."}, labels[:3])
	responses := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "response_total", Help: "Total count of HTTP responses."}, labels)
	latency := prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "response_latency_ms", Help: "Elapsed times between a request's headers being received and its response stream completing.",
		Buckets: []float64{1, 2, 3, 4, 5, 10, 20, 30, 40, 50, 100, 200, 300, 400, 500, 1000, 2000, 3000, 4000, 5000, 10000, 20000, 30000, 40000, 50000}}, labels)
	open := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "tcp_open_connections", Help: "Number of currently-open connections."}, []string{"direction", "tls"})
	reg.MustRegister(requests, responses, latency, open)
	for _, dir := range []string{"inbound", "outbound"} {
		for _, authority := range []string{"web.demo.svc.cluster.local:80", "books.demo.svc.cluster.local:7001"} {
			requests.WithLabelValues(dir, authority, "true").Add(1000)
			for _, code := range []string{"200", "500"} {
				class := map[string]string{"200": "success", "500": "failure"}[code]
				responses.WithLabelValues(dir, authority, "true", class, code).Add(500)
				latency.WithLabelValues(dir, authority, "true", class, code).Observe(3)
			}
		}
		open.WithLabelValues(dir, "true").Set(4)
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "bench client_golang variant: %v\n", err)
		os.Exit(2)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	go http.Serve(ln, mux)
}
