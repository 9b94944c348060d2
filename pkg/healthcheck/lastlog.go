package healthcheck

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode"

	corev1 "k8s.io/api/core/v1"
)

// Bounds of reading the last log lines of failing containers.
const (
	// logReadTimeout bounds one read: the kubelet serves logs, and an
	// unreachable node must not hold the check.
	logReadTimeout = 5 * time.Second
	// logReaders is how many logs are read at once.
	logReaders = 8
	// runningLogTTL is how long the last line of a running container is
	// reused by the retries of --wait; a container that exited logs nothing
	// more, so its line is kept for the run.
	runningLogTTL = 10 * time.Second
	// maxLogLine bounds a line in the output.
	maxLogLine = 300
)

// logKey names one instance of a container.
type logKey struct {
	uid       string
	container string
	restarts  int32
	previous  bool
}

type cachedLine struct {
	line string
	read time.Time
	// final: the instance exited, its log no longer changes.
	final bool
}

// lastLines sets the lastLine of each failure whose container ran: the
// last line of its log (the previous instance's when it waits to restart)
// from the API server, or, when the log cannot be read (the kubelet serves
// it) or is empty, the last line of its termination message. Lines read
// before are reused (see runningLogTTL).
func (s *state) lastLines(ctx context.Context, failures []*podFailure) {
	type read struct {
		f    *podFailure
		key  logKey
		line string
	}
	var reads []*read
	s.logMu.Lock()
	for _, f := range failures {
		if !f.hasLog {
			continue
		}
		key := logKey{uid: string(f.pod.UID), container: f.container, restarts: f.restarts, previous: f.previous}
		if c, ok := s.logCache[key]; ok && (c.final || s.now().Sub(c.read) < runningLogTTL) {
			f.lastLine = c.line
			continue
		}
		reads = append(reads, &read{f: f, key: key})
	}
	s.logMu.Unlock()

	sem := make(chan struct{}, logReaders)
	var wg sync.WaitGroup
	for _, r := range reads {
		wg.Add(1)
		sem <- struct{}{}
		go func() { // joined below
			defer func() { <-sem; wg.Done() }()
			r.line, _ = s.readLastLine(ctx, r.f.pod, r.f.container, r.f.previous)
		}()
	}
	wg.Wait()

	s.logMu.Lock()
	defer s.logMu.Unlock()
	if s.logCache == nil {
		s.logCache = map[logKey]cachedLine{}
	}
	for _, r := range reads {
		fromLog := r.line != ""
		if !fromLog {
			r.line = lastNonEmptyLine(r.f.message)
		}
		if fromLog || r.f.exited {
			s.logCache[r.key] = cachedLine{line: r.line, read: s.now(), final: r.f.exited}
		}
		r.f.lastLine = r.line
	}
}

// readLastLine reads the last line a container logged.
func (s *state) readLastLine(ctx context.Context, pod *corev1.Pod, container string, previous bool) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, logReadTimeout)
	defer cancel()
	tail, limit := int64(1), int64(4096)
	opts := &corev1.PodLogOptions{Container: container, Previous: previous, TailLines: &tail, LimitBytes: &limit}
	b, err := s.client.CoreV1().Pods(pod.Namespace).GetLogs(pod.Name, opts).DoRaw(ctx)
	if err != nil {
		return "", fmt.Errorf("reading the log of %s/%s -c %s: %w", pod.Namespace, pod.Name, container, err)
	}
	line := lastNonEmptyLine(string(b))
	if strings.HasPrefix(line, kubeletNoLog) {
		// The kubelet answers 200 with this text when the instance's log
		// is gone (a restarted container's previous run, removed): no log.
		return "", nil
	}
	return line, nil
}

// kubeletNoLog starts what the kubelet sends instead of a log it no longer has.
const kubeletNoLog = "unable to retrieve container logs for "

// lastNonEmptyLine is the last line of text with content, without control
// characters (a log may color its output) and shortened to maxLogLine.
func lastNonEmptyLine(text string) string {
	lines := strings.Split(text, "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(strings.Map(func(r rune) rune {
			if unicode.IsControl(r) && r != '\t' {
				return -1
			}
			return r
		}, stripANSI(lines[i])))
		if l == "" {
			continue
		}
		if r := []rune(l); len(r) > maxLogLine {
			l = string(r[:maxLogLine]) + "…"
		}
		return l
	}
	return ""
}

// stripANSI removes ANSI escape sequences (ESC [ … final byte).
func stripANSI(s string) string {
	if !strings.Contains(s, "\x1b[") {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == 0x1b && i+1 < len(s) && s[i+1] == '[' {
			j := i + 2
			for j < len(s) && (s[j] < 0x40 || s[j] > 0x7e) {
				j++
			}
			i = j
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
