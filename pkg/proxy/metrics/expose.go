package metrics

import (
	"bufio"
	"io"
	"math"
	"strconv"
)

// ContentType is the exposition format's media type.
const ContentType = "text/plain; version=0.0.4; charset=utf-8"

// WriteTo writes every series in the Prometheus text format.
func (r *Registry) WriteTo(w io.Writer) (int64, error) {
	cw := &countWriter{w: w}
	bw := bufio.NewWriterSize(cw, 4096)
	r.mu.Lock()
	routes := append([]*Route(nil), r.routeOrd...)
	tcps := append([]*TCP(nil), r.tcpOrd...)
	errKeys := append([]errorKey(nil), r.errOrd...)
	errVals := make([]uint64, len(errKeys))
	for i, k := range errKeys {
		errVals[i] = r.errors[k].Load()
	}
	authz := append([]*authzSeries(nil), r.authzOrd...)
	retries := append([]*Retries(nil), r.retryOrd...)
	awaits := append([]*Await(nil), r.awaitOrd...)
	panicDirs := append([]string(nil), r.panicOrd...)
	panicVals := make([]uint64, len(panicDirs))
	for i, d := range panicDirs {
		panicVals[i] = r.panics[d].Load()
	}
	r.mu.Unlock()

	var responses []*response
	for _, rt := range routes {
		rt.mu.Lock()
		responses = append(responses, rt.respOrd...)
		rt.mu.Unlock()
	}

	header(bw, "request_total", "counter", "Total count of HTTP requests.")
	for _, rt := range routes {
		sample(bw, "request_total", rt.labels, "", rt.requests.Load())
	}
	header(bw, "response_total", "counter", "Total count of HTTP responses.")
	for _, s := range responses {
		sample(bw, "response_total", s.labels, "", s.count.Load())
	}
	header(bw, "response_latency_ms", "histogram", "Elapsed times between a request's headers being received and its response's headers being sent, in milliseconds.")
	for _, s := range responses {
		writeHistogram(bw, "response_latency_ms", s.labels, &s.latency)
	}

	header(bw, "tcp_open_total", "counter", "Total count of opened connections.")
	for _, t := range tcps {
		sample(bw, "tcp_open_total", t.labels, "", t.opened.Load())
	}
	header(bw, "tcp_open_connections", "gauge", "Number of currently-open connections.")
	for _, t := range tcps {
		sampleInt(bw, "tcp_open_connections", t.labels, t.open.Load())
	}
	header(bw, "tcp_close_total", "counter", "Total count of closed connections.")
	for _, t := range tcps {
		sample(bw, "tcp_close_total", t.labels, `classification="success"`, t.closedOK.Load())
		sample(bw, "tcp_close_total", t.labels, `classification="failure"`, t.closedKO.Load())
	}
	header(bw, "tcp_read_bytes_total", "counter", "Total count of bytes read from peers.")
	for _, t := range tcps {
		sample(bw, "tcp_read_bytes_total", t.labels, "", t.read.Load())
	}
	header(bw, "tcp_write_bytes_total", "counter", "Total count of bytes written to peers.")
	for _, t := range tcps {
		sample(bw, "tcp_write_bytes_total", t.labels, "", t.written.Load())
	}
	header(bw, "tcp_connection_duration_ms", "histogram", "Connection lifetimes, in milliseconds.")
	for _, t := range tcps {
		writeHistogram(bw, "tcp_connection_duration_ms", t.labels, &t.duration)
	}

	for _, name := range authzNames {
		first := true
		for _, s := range authz {
			if s.name != name {
				continue
			}
			if first {
				header(bw, name, "counter", authzHelp[name])
				first = false
			}
			sample(bw, name, s.labels, "", s.n.Load())
		}
	}

	if len(retries) > 0 {
		for _, f := range retryFamilies {
			header(bw, f.name, "counter", f.help)
			for _, s := range retries {
				sample(bw, f.name, s.labels, "", f.v(s))
			}
		}
	}

	if len(awaits) > 0 {
		header(bw, "outbound_endpoint_waiting", "gauge", "Requests and connections held now for a Service without a ready endpoint.")
		for _, s := range awaits {
			sampleInt(bw, "outbound_endpoint_waiting", s.labels, s.waiting.Load())
		}
		header(bw, "outbound_endpoint_wait_total", "counter", "Waits for a ready endpoint, by how they ended: ready, no_endpoints (the fail-fast timeout passed), timeout (the route's timeout passed), canceled.")
		for _, s := range awaits {
			for i, res := range awaitResults {
				sample(bw, "outbound_endpoint_wait_total", s.labels, `result="`+res+`"`, s.results[i].Load())
			}
		}
		header(bw, "outbound_endpoint_wait_ms", "histogram", "How long requests and connections waited for a ready endpoint, in milliseconds.")
		for _, s := range awaits {
			writeHistogram(bw, "outbound_endpoint_wait_ms", s.labels, &s.wait)
		}
	}

	header(bw, "conduit_proxy_errors_total", "counter", "Errors made or met by the proxy, by reason.")
	for i, k := range errKeys {
		sample(bw, "conduit_proxy_errors_total", `direction="`+k.direction+`",error="`+k.reason+`"`, "", errVals[i])
	}
	header(bw, "conduit_proxy_panics_total", "counter", "Panics recovered while serving a connection (each closed its connection or stream).")
	for i, d := range panicDirs {
		sample(bw, "conduit_proxy_panics_total", `direction="`+d+`"`, "", panicVals[i])
	}
	if r.Process {
		writeProcess(bw, r.start)
	}
	err := bw.Flush()
	return cw.n, err
}

func header(w *bufio.Writer, name, typ, help string) {
	w.WriteString("# HELP ")
	w.WriteString(name)
	w.WriteByte(' ')
	w.WriteString(help)
	w.WriteString("\n# TYPE ")
	w.WriteString(name)
	w.WriteByte(' ')
	w.WriteString(typ)
	w.WriteByte('\n')
}

func writeLabels(w *bufio.Writer, labels, extra string) {
	if labels == "" && extra == "" {
		return
	}
	w.WriteByte('{')
	w.WriteString(labels)
	if extra != "" {
		if labels != "" {
			w.WriteByte(',')
		}
		w.WriteString(extra)
	}
	w.WriteByte('}')
}

func sample(w *bufio.Writer, name, labels, extra string, v uint64) {
	w.WriteString(name)
	writeLabels(w, labels, extra)
	w.WriteByte(' ')
	w.WriteString(strconv.FormatUint(v, 10))
	w.WriteByte('\n')
}

func sampleInt(w *bufio.Writer, name, labels string, v int64) {
	w.WriteString(name)
	writeLabels(w, labels, "")
	w.WriteByte(' ')
	w.WriteString(strconv.FormatInt(v, 10))
	w.WriteByte('\n')
}

func writeHistogram(w *bufio.Writer, name, labels string, h *histogram) {
	var cum uint64
	for i, b := range h.bounds {
		cum += h.counts[i].Load()
		sample(w, name+"_bucket", labels, `le="`+strconv.FormatFloat(b, 'f', -1, 64)+`"`, cum)
	}
	cum += h.counts[len(h.bounds)].Load()
	sample(w, name+"_bucket", labels, `le="+Inf"`, cum)
	w.WriteString(name + "_sum")
	writeLabels(w, labels, "")
	w.WriteByte(' ')
	w.WriteString(strconv.FormatFloat(math.Float64frombits(h.sum.Load()), 'g', -1, 64))
	w.WriteByte('\n')
	// The count is the +Inf bucket so that the two always agree in a scrape.
	sample(w, name+"_count", labels, "", cum)
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// authzNames are the authorization series' names, in exposition order.
var authzNames = []string{"inbound_http_authz_allow_total", "inbound_http_authz_deny_total",
	"inbound_tcp_authz_allow_total", "inbound_tcp_authz_deny_total"}

var authzHelp = map[string]string{
	"inbound_http_authz_allow_total": "Inbound HTTP requests an authorization admitted.",
	"inbound_http_authz_deny_total":  "Inbound HTTP requests denied by the port's policy.",
	"inbound_tcp_authz_allow_total":  "Inbound TCP connections an authorization admitted.",
	"inbound_tcp_authz_deny_total":   "Inbound TCP connections denied by the port's policy.",
}
