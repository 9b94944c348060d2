package stats

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
)

// A scraped page is reduced, line by line, to the few numbers `stat` and
// `edges` read: per group of series that they cannot tell apart (the
// labels they filter and group by), HTTP request and response counts,
// response latency buckets, TCP counters and the open-connections gauge;
// per pod, the inbound HTTP authorization decisions; per outbound route,
// its retries. Every other family of
// the page (process_*, histograms' _sum and _count, tcp_connection_duration,
// TCP authorization, …) is skipped after reading its name, and no label of
// a kept line is copied unless its group is new.

// slot is what a kept sample counts within its group.
type slot uint8

const (
	slotNone slot = iota
	slotRequests
	slotSuccess    // response_total{classification="success"}
	slotFailure    // any other response_total
	slotBucket     // response_latency_ms_bucket, with its le
	slotOpened     // tcp_open_total
	slotClosed     // tcp_close_total
	slotRead       // tcp_read_bytes_total
	slotWritten    // tcp_write_bytes_total
	slotOpen       // tcp_open_connections: a gauge
	slotAllowed    // inbound_http_authz_allow_total
	slotDenied     // inbound_http_authz_deny_total
	slotTCPAllowed // inbound_tcp_authz_allow_total: connections
	slotTCPDenied  // inbound_tcp_authz_deny_total
	slotOther      // conduit_proxy_{errors,panics}_total: activity, not shown
	slotStart      // process_start_time_seconds: tells a restarted proxy
	// slotTimeout counts the outbound responses that timed out (status
	// 504 or grpc-status 4), also counted as slotFailure.
	slotTimeout
	slotRetries       // outbound_http_route_retry_requests_total
	slotRetryLimit    // outbound_http_route_retry_limit_exceeded_total
	slotRetryOverflow // outbound_http_route_retry_overflow_total
	numSlots
)

// slotOf maps a sample's metric name to its slot; slotNone is skipped.
func slotOf(name []byte) slot {
	switch string(name) {
	case "request_total":
		return slotRequests
	case "response_total":
		return slotSuccess // or slotFailure, by classification
	case "response_latency_ms_bucket":
		return slotBucket
	case "tcp_open_total":
		return slotOpened
	case "tcp_close_total":
		return slotClosed
	case "tcp_read_bytes_total":
		return slotRead
	case "tcp_write_bytes_total":
		return slotWritten
	case "tcp_open_connections":
		return slotOpen
	case authzAllowMetric:
		return slotAllowed
	case authzDenyMetric:
		return slotDenied
	case authzTCPAllowMetric:
		return slotTCPAllowed
	case authzTCPDenyMetric:
		return slotTCPDenied
	case "conduit_proxy_errors_total", "conduit_proxy_panics_total":
		return slotOther
	case "process_start_time_seconds":
		return slotStart
	case retryRequestsMetric:
		return slotRetries
	case retryLimitMetric:
		return slotRetryLimit
	case retryOverflowMetric:
		return slotRetryOverflow
	}
	return slotNone
}

// The proxy's counters of an outbound route's retries (no direction
// label: authority, route_kind and route_name only).
const (
	retryRequestsMetric = "outbound_http_route_retry_requests_total"
	retryLimitMetric    = "outbound_http_route_retry_limit_exceeded_total"
	retryOverflowMetric = "outbound_http_route_retry_overflow_total"
)

// Group keys: the label values queries read, in this order, after a
// direction byte; inbound series keep only their authority (stat reads
// nothing else of them), outbound ones the destination, TLS and route
// labels too, retry series their authority and route.
const (
	dirInbound  = 'i'
	dirOutbound = 'o'
	dirAuthz    = 'a' // the pod's authorization decisions
	dirRetry    = 'r' // an outbound route's retries
	keySep      = 0xff
)

// The labels queries read: an outbound group's key is the first
// numKeyLabels of them, in this order.
const (
	lAuthority = iota
	lDstNamespace
	lDstDeployment
	lDstPod
	lDstService
	lTLS
	lServerID
	lClientID
	lRouteKind
	lRouteName
	numKeyLabels
)

// The other labels queries read.
const (
	lDirection = numKeyLabels + iota
	lClassification
	lLe
	lStatusCode
	lGRPCStatus
	numLabels
)

// labelID is the id of a label queries read, or -1.
func labelID(name []byte) int {
	switch string(name) {
	case "authority":
		return lAuthority
	case "dst_namespace":
		return lDstNamespace
	case "dst_deployment":
		return lDstDeployment
	case "dst_pod":
		return lDstPod
	case "dst_service":
		return lDstService
	case "tls":
		return lTLS
	case "server_id":
		return lServerID
	case "client_id":
		return lClientID
	case "direction":
		return lDirection
	case "classification":
		return lClassification
	case "le":
		return lLe
	case "route_kind":
		return lRouteKind
	case "route_name":
		return lRouteName
	case "status_code":
		return lStatusCode
	case "grpc_status":
		return lGRPCStatus
	}
	return -1
}

// pageEntry is one kept sample of a page.
type pageEntry struct {
	key, keyLen int32 // its group key: page.keys[key:key+keyLen]
	slot        slot
	le          float64 // slotBucket only
	v           float64
}

// page is a scraped page reduced to entries. Reused from one scrape to
// the next, it does not allocate once grown.
type page struct {
	keys    []byte
	entries []pageEntry
	start   float64 // process_start_time_seconds, NaN when absent
	authz   bool    // the page has inbound HTTP authorization series

	// scratch for one line
	lv    [numLabels][]byte // the values of the labels queries read, unescaped
	unesc []byte
	key   []byte
	long  []byte // a line longer than the reader's buffer
	// same is the last bucket line fully parsed, whose next buckets
	// take the fast way in line.
	same struct {
		ok           bool
		name, prefix []byte
		key, keyLen  int32
	}
}

func (pg *page) reset() {
	pg.keys, pg.entries, pg.same.ok = pg.keys[:0], pg.entries[:0], false
	pg.start, pg.authz = math.NaN(), false
}

// add records one sample whose labels are in pg.lv.
func (pg *page) add(name []byte, v float64, lineNo int) error {
	sl := slotOf(name)
	if sl == slotNone || math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	key := pg.key[:0]
	var le float64
	switch sl {
	case slotStart:
		pg.start = v
		return nil
	case slotAllowed, slotDenied, slotTCPAllowed, slotTCPDenied:
		pg.authz = true
		key = append(key, dirAuthz)
	case slotRetries, slotRetryLimit, slotRetryOverflow:
		key = append(key, dirRetry)
		for l := range numKeyLabels {
			key = append(key, keySep)
			if l == lAuthority || l == lRouteKind || l == lRouteName {
				key = append(key, pg.lv[l]...)
			}
		}
	default:
		switch string(pg.lv[lDirection]) {
		case "inbound":
			key = append(key, dirInbound, keySep)
			if sl != slotOther {
				key = append(key, pg.lv[lAuthority]...)
			}
		case "outbound":
			key = append(key, dirOutbound)
			for l := range numKeyLabels {
				key = append(key, keySep)
				if sl != slotOther {
					key = append(key, pg.lv[l]...)
				}
			}
		default:
			return nil // no query reads a series without a direction
		}
		switch sl {
		case slotSuccess:
			if string(pg.lv[lClassification]) != "success" {
				sl = slotFailure
			}
		case slotBucket:
			s := pg.lv[lLe]
			if s == nil {
				return fmt.Errorf("line %d: %s without le", lineNo, name)
			}
			var err error
			if le, err = parseLeBytes(s); err != nil {
				return fmt.Errorf("line %d: le %q: %w", lineNo, s, err)
			}
		}
	}
	pg.key = key
	e := pageEntry{slot: sl, le: le, v: v}
	// Consecutive samples of one series (a histogram's buckets) share a key.
	if n := len(pg.entries); n > 0 {
		last := pg.entries[n-1]
		if bytes.Equal(pg.keys[last.key:last.key+last.keyLen], key) {
			e.key, e.keyLen = last.key, last.keyLen
		}
	}
	if e.keyLen == 0 {
		e.key, e.keyLen = int32(len(pg.keys)), int32(len(key))
		pg.keys = append(pg.keys, key...)
	}
	pg.entries = append(pg.entries, e)
	if sl == slotFailure && key[0] == dirOutbound && timedOut(pg.lv[lStatusCode], pg.lv[lGRPCStatus]) {
		e.slot = slotTimeout
		pg.entries = append(pg.entries, e)
	}
	return nil
}

// timedOut reports whether a response's status_code and grpc_status say it
// timed out: 504 Gateway Timeout or DEADLINE_EXCEEDED.
func timedOut(status, grpcStatus []byte) bool {
	return string(status) == "504" || string(grpcStatus) == "4"
}

func parseLeBytes(s []byte) (float64, error) {
	if string(s) == "+Inf" {
		return math.Inf(1), nil
	}
	return parseValue(s) // the proxy's bounds are integers
}

// errNoFinalNewline: a page cut short is not read as if it were whole.
var errNoFinalNewline = errors.New("the page does not end with a line feed (cut short?)")

// scan reduces a /metrics page in the Prometheus text format (0.0.4),
// read line by line from r. Lines of families no query reads are skipped
// by their name; kept lines are checked as the format says (names, quoted
// and escaped label values, a float value, an optional integer timestamp)
// and an error names the line.
func (pg *page) scan(r *bufio.Reader) error {
	pg.reset()
	for lineNo := 1; ; lineNo++ {
		line, err := r.ReadSlice('\n')
		if err == bufio.ErrBufferFull { // a line longer than the buffer
			pg.long = append(pg.long[:0], line...)
			for err == bufio.ErrBufferFull {
				line, err = r.ReadSlice('\n')
				pg.long = append(pg.long, line...)
			}
			line = pg.long
		}
		switch {
		case err == io.EOF && len(line) == 0:
			return nil
		case err == io.EOF:
			return fmt.Errorf("line %d: %w", lineNo, errNoFinalNewline)
		case err != nil:
			return err
		}
		if err := pg.line(line[:len(line)-1], lineNo); err != nil {
			return err
		}
	}
}

func isBlank(c byte) bool { return c == ' ' || c == '\t' }

func isNameStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c == ':'
}

func isNameByte(c byte) bool { return isNameStart(c) || c >= '0' && c <= '9' }

func (pg *page) line(line []byte, lineNo int) error {
	p := 0
	for p < len(line) && isBlank(line[p]) {
		p++
	}
	if p == len(line) || line[p] == '#' {
		return nil // blank, HELP, TYPE or a comment
	}
	start := p
	if !isNameStart(line[p]) {
		return fmt.Errorf("line %d: invalid metric name", lineNo)
	}
	for p < len(line) && isNameByte(line[p]) {
		p++
	}
	name, rest := line[start:p], line[p:]
	sl := slotOf(name)
	if sl == slotNone {
		return nil
	}
	if sl == slotBucket && pg.same.ok && bytes.Equal(name, pg.same.name) {
		// A histogram's next bucket, written as the proxy writes them: its
		// labels but le are those of the previous line, so is its group.
		if prefix, le, after, ok := bucketPrefix(rest); ok && bytes.Equal(prefix, pg.same.prefix) {
			bound, err := parseLeBytes(le)
			if err != nil {
				return fmt.Errorf("line %d: le %q: %w", lineNo, le, err)
			}
			v, err := parseTail(after)
			if err != nil {
				return fmt.Errorf("line %d: %w", lineNo, err)
			}
			if !math.IsNaN(v) && !math.IsInf(v, 0) {
				pg.entries = append(pg.entries, pageEntry{key: pg.same.key, keyLen: pg.same.keyLen, slot: slotBucket, le: bound, v: v})
			}
			return nil
		}
	}
	pg.same.ok = false
	pg.lv, pg.unesc = [numLabels][]byte{}, pg.unesc[:0]
	for p < len(line) && isBlank(line[p]) {
		p++
	}
	if p < len(line) && line[p] == '{' {
		var err error
		if p, err = pg.parseLabels(line, p+1); err != nil {
			return fmt.Errorf("line %d: %w", lineNo, err)
		}
	}
	v, err := parseTail(line[p:])
	if err != nil {
		return fmt.Errorf("line %d: %w", lineNo, err)
	}
	n := len(pg.entries)
	if err := pg.add(name, v, lineNo); err != nil {
		return err
	}
	if sl == slotBucket && len(pg.entries) > n {
		if prefix, _, _, ok := bucketPrefix(rest); ok {
			pg.same.name = append(pg.same.name[:0], name...)
			pg.same.prefix = append(pg.same.prefix[:0], prefix...)
			last := pg.entries[len(pg.entries)-1]
			pg.same.key, pg.same.keyLen, pg.same.ok = last.key, last.keyLen, true
		}
	}
	return nil
}

// bucketPrefix splits a bucket line's labels, when they end with le and
// its plain value (`{…,le="10"} 3`), into the block before le, le's value
// and what follows the block. It looks from the end: what follows the
// block is short.
func bucketPrefix(rest []byte) (prefix, le, after []byte, ok bool) {
	if len(rest) == 0 || rest[0] != '{' {
		return nil, nil, nil, false
	}
	end := bytes.LastIndexByte(rest, '}') // a value and a timestamp have none
	if end < 2 || rest[end-1] != '"' {
		return nil, nil, nil, false
	}
	q := bytes.LastIndexByte(rest[:end-1], '"')
	if q < 4 || string(rest[q-3:q]) != "le=" || rest[q-4] != ',' && rest[q-4] != '{' || bytes.IndexByte(rest[q:end], '\\') >= 0 {
		return nil, nil, nil, false
	}
	return rest[:q-3], rest[q+1 : end-1], rest[end+1:], true
}

// parseTail reads what follows a sample's name and labels: its value and
// an optional integer timestamp (ignored).
func parseTail(b []byte) (float64, error) {
	p := 0
	for p < len(b) && isBlank(b[p]) {
		p++
	}
	vs := p
	for p < len(b) && !isBlank(b[p]) {
		p++
	}
	v, err := parseValue(b[vs:p])
	if err != nil {
		return 0, fmt.Errorf("value %q: %w", b[vs:p], err)
	}
	for p < len(b) && isBlank(b[p]) {
		p++
	}
	if p < len(b) {
		ts := p
		if b[p] == '-' || b[p] == '+' {
			p++
		}
		digits := p
		for p < len(b) && b[p] >= '0' && b[p] <= '9' {
			p++
		}
		if digits == p {
			return 0, fmt.Errorf("invalid timestamp %q", b[ts:])
		}
		for p < len(b) && isBlank(b[p]) {
			p++
		}
		if p < len(b) {
			return 0, fmt.Errorf("invalid timestamp %q", b[ts:])
		}
	}
	return v, nil
}

// parseLabels reads name="value" pairs after a '{' up to its '}', and
// returns the position after it. Escaped values are unescaped into
// pg.unesc, which the pairs may point into: it is sized up front so that
// appending never moves it.
func (pg *page) parseLabels(line []byte, p int) (int, error) {
	if cap(pg.unesc) < len(line) {
		pg.unesc = make([]byte, 0, max(len(line), 2*cap(pg.unesc)))
	}
	for {
		for p < len(line) && isBlank(line[p]) {
			p++
		}
		if p == len(line) {
			return p, errors.New("labels not closed")
		}
		if line[p] == '}' {
			return p + 1, nil
		}
		start := p
		if isNameStart(line[p]) && line[p] != ':' {
			p++
			for p < len(line) && isNameByte(line[p]) && line[p] != ':' {
				p++
			}
		}
		if start == p {
			return p, errors.New("invalid label name")
		}
		name := line[start:p]
		for p < len(line) && isBlank(line[p]) {
			p++
		}
		if p == len(line) || line[p] != '=' {
			return p, fmt.Errorf("label %s: want =", name)
		}
		p++
		for p < len(line) && isBlank(line[p]) {
			p++
		}
		if p == len(line) || line[p] != '"' {
			return p, fmt.Errorf("label %s: want a quoted value", name)
		}
		p++
		vs, escaped := p, false
		for p < len(line) && line[p] != '"' {
			if line[p] == '\\' {
				escaped = true
				p++
			}
			p++
		}
		if p >= len(line) {
			return p, fmt.Errorf("label %s: value not closed", name)
		}
		value := line[vs:p]
		p++
		if escaped {
			u := len(pg.unesc)
			for i := 0; i < len(value); i++ {
				c := value[i]
				if c == '\\' {
					i++
					switch value[i] {
					case '\\', '"':
						c = value[i]
					case 'n':
						c = '\n'
					default:
						return p, fmt.Errorf("label %s: invalid escape \\%c", name, value[i])
					}
				}
				pg.unesc = append(pg.unesc, c)
			}
			value = pg.unesc[u:len(pg.unesc):len(pg.unesc)]
		}
		if id := labelID(name); id >= 0 {
			pg.lv[id] = value
		}
		for p < len(line) && isBlank(line[p]) {
			p++
		}
		if p < len(line) && line[p] == ',' {
			p++
			continue
		}
		if p < len(line) && line[p] == '}' {
			return p + 1, nil
		}
		return p, fmt.Errorf("label %s: want , or }", name)
	}
}

// parseValue reads a sample value; plain integers, the proxy's usual
// values, are read without strconv.
func parseValue(s []byte) (float64, error) {
	if len(s) == 0 {
		return 0, errors.New("missing")
	}
	if len(s) <= 15 {
		var n uint64
		i := 0
		for ; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
			n = n*10 + uint64(s[i]-'0')
		}
		if i == len(s) {
			return float64(n), nil
		}
	}
	return strconv.ParseFloat(string(s), 64)
}

// addSample adds a parsed Sample (ParseMetrics's) to the page, as scan
// would have added its line: Ingest's way in.
func (pg *page) addSample(smp Sample) error {
	pg.lv = [numLabels][]byte{}
	for k, v := range smp.Labels {
		if id := labelID([]byte(k)); id >= 0 {
			pg.lv[id] = []byte(v)
		}
	}
	return pg.add([]byte(smp.Name), smp.Value, 0)
}
