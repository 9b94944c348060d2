package metrics

import (
	"bufio"
	"bytes"
	"os"
	"strconv"
	"time"
)

// writeProcess writes Linkerd's process_* metrics, read from /proc/self at
// scrape time; where /proc is missing it writes only the start time.
func writeProcess(w *bufio.Writer, start time.Time) {
	header(w, "process_start_time_seconds", "gauge", "Time that the process started (in seconds since the UNIX epoch).")
	w.WriteString("process_start_time_seconds " + strconv.FormatInt(start.Unix(), 10) + "\n")
	stat, err := os.ReadFile("/proc/self/stat")
	if err != nil {
		return
	}
	// Fields after the command name, which is in parentheses and may
	// contain spaces: state is field 3; utime 14, stime 15, vsize 23,
	// rss 24 (in pages).
	i := bytes.LastIndexByte(stat, ')')
	if i < 0 {
		return
	}
	f := bytes.Fields(stat[i+1:])
	field := func(n int) uint64 {
		if n-3 >= len(f) {
			return 0
		}
		v, _ := strconv.ParseUint(string(f[n-3]), 10, 64)
		return v
	}
	const ticks = 100 // USER_HZ on Linux
	cpu := float64(field(14)+field(15)) / ticks
	header(w, "process_cpu_seconds_total", "counter", "Total user and system CPU time spent in seconds.")
	w.WriteString("process_cpu_seconds_total " + strconv.FormatFloat(cpu, 'f', -1, 64) + "\n")
	header(w, "process_virtual_memory_bytes", "gauge", "Virtual memory size in bytes.")
	w.WriteString("process_virtual_memory_bytes " + strconv.FormatUint(field(23), 10) + "\n")
	header(w, "process_resident_memory_bytes", "gauge", "Resident memory size in bytes.")
	w.WriteString("process_resident_memory_bytes " + strconv.FormatUint(field(24)*uint64(os.Getpagesize()), 10) + "\n")
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		header(w, "process_open_fds", "gauge", "Number of open file descriptors.")
		w.WriteString("process_open_fds " + strconv.Itoa(len(fds)) + "\n")
	}
}
