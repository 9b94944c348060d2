// Command residence measures how long requests and responses stay inside a
// proxy, from a `perf trace` of its socket system calls: a request from the
// client read that brought it to the next write on the upstream connection,
// a response from the upstream read that brought it to the first write on
// each client connection after it (bench/notes.md, "One hop against
// HAProxy", follow-up). Both proxies are traced the same way, so that the
// tracing's own cost, which is large, is shared.
//
//	pid=$(pgrep -f '^[^ ]*conduit-proxy' | head -1)
//	ss -tnpH state established | grep "pid=$pid,"   # the upstream connection's fd
//	perf trace -p $pid -e read,write -o conduit.trace -- sleep 5   # HAProxy: recvfrom,sendto
//	go run ./cmd/residence -upstream 16 conduit.trace
package main

import (
	"bufio"
	"cmp"
	"flag"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

// A line of `perf trace`: "0.116 ( 0.016 ms): comm/tid read(fd: 14, ...) = 52".
var line = regexp.MustCompile(`^\s*([\d.]+) \(\s*([\d.]+) ms\): (?:\S+ )?(read|write|recvfrom|sendto)\(fd: (\d+),.*\)\s+= (-?\d+)`)

type event struct {
	start, end float64 // ms
	read       bool
	fd         int
}

func main() {
	upstream := flag.String("upstream", "", "comma-separated file descriptors of the upstream connections")
	flag.Parse()
	if flag.NArg() != 1 || *upstream == "" {
		fmt.Fprintln(os.Stderr, "usage: residence -upstream FD[,FD...] TRACE-FILE")
		os.Exit(2)
	}
	ups := map[int]bool{}
	for _, s := range strings.Split(*upstream, ",") {
		fd, err := strconv.Atoi(s)
		if err != nil {
			fmt.Fprintf(os.Stderr, "residence: -upstream %q: not a file descriptor number\n", s)
			os.Exit(2)
		}
		ups[fd] = true
	}
	evs, err := parse(flag.Arg(0))
	if err != nil {
		fmt.Fprintf(os.Stderr, "residence: %v\n", err)
		os.Exit(1)
	}
	req, rsp := residence(evs, ups)
	for _, r := range []struct {
		name string
		d    []float64
	}{{"request", req}, {"response", rsp}} {
		fmt.Printf("%-9s n=%6d p50=%v p90=%v p99=%v p99.9=%v\n", r.name, len(r.d),
			quantile(r.d, 0.5), quantile(r.d, 0.9), quantile(r.d, 0.99), quantile(r.d, 0.999))
	}
}

// parse reads the system calls that moved bytes, in time order.
func parse(path string) ([]event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var evs []event
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		m := line.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		start, _ := strconv.ParseFloat(m[1], 64)
		dur, _ := strconv.ParseFloat(m[2], 64)
		fd, _ := strconv.Atoi(m[4])
		if n, _ := strconv.Atoi(m[5]); n <= 0 {
			continue
		}
		evs = append(evs, event{start, start + dur, m[3] == "read" || m[3] == "recvfrom", fd})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	if len(evs) == 0 {
		return nil, fmt.Errorf("%s: no read, write, recvfrom or sendto that moved bytes; is it `perf trace` output?", path)
	}
	slices.SortFunc(evs, func(a, b event) int { return cmp.Compare(a.start, b.start) })
	return evs, nil
}

// residence pairs the reads with the writes that passed their bytes on.
func residence(evs []event, ups map[int]bool) (req, rsp []float64) {
	var pending []float64 // client reads not yet followed by an upstream write
	var upRead float64 = -1
	written := map[int]bool{} // client connections written since upRead
	for _, e := range evs {
		switch {
		case e.read && !ups[e.fd]:
			pending = append(pending, e.start)
		case !e.read && ups[e.fd]:
			for _, t := range pending {
				req = append(req, e.end-t)
			}
			pending = pending[:0]
		case e.read:
			upRead = e.start
			clear(written)
		case upRead >= 0 && !written[e.fd]:
			written[e.fd] = true
			rsp = append(rsp, e.end-upRead)
		}
	}
	return req, rsp
}

func quantile(ms []float64, q float64) time.Duration {
	if len(ms) == 0 {
		return 0
	}
	s := slices.Clone(ms)
	slices.Sort(s)
	v := s[min(len(s)-1, int(q*float64(len(s))))]
	return time.Duration(v * float64(time.Millisecond)).Round(time.Microsecond)
}
