package inject

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"
)

// FuzzInject feeds arbitrary bytes through the parsing path: it must never
// panic, malformed input must be a *ParseError without output, and whatever
// it accepts must be accepted again and be stable under a second injection.
func FuzzInject(f *testing.F) {
	for _, b := range inputs(f) {
		f.Add(b, true)
		f.Add(b, false)
	}
	f.Add([]byte("---\n---\n"), true)
	f.Add([]byte("a: &x {b: 1}\nc: *x\n"), true)
	f.Add([]byte("apiVersion: v1\nkind: List\nitems: [{apiVersion: v1, kind: Pod, metadata: &m {name: a}, spec: {containers: []}}, {kind: Pod, metadata: *m}]\n"), true)
	f.Add([]byte(`{"kind":"Pod","spec":{"containers":[]}}{"kind":`), false)
	f.Fuzz(func(t *testing.T, data []byte, manual bool) {
		checkSharedParse(t, data)
		out, _, err := Inject(data, testOptions(manual))
		if err != nil {
			var pe *ParseError
			if errors.As(err, &pe) && out != nil {
				t.Fatalf("output with a parse error: %v", err)
			}
			return
		}
		spliceMatchesEncode(t, data, testOptions(manual))
		again, _, err := Inject(out, testOptions(manual))
		if err != nil {
			t.Fatalf("output not accepted again: %v\n%s", err, out)
		}
		if _, _, err := Uninject(again, Options{}); err != nil {
			t.Fatalf("uninject of the output failed: %v", err)
		}
		uninjectMatchesEncode(t, out)
		uninjectMatchesEncode(t, data)
	})
}

// manifest10k is a stream of 10,000 small Deployments.
func manifest10k() []byte {
	var b strings.Builder
	for i := range 10000 {
		fmt.Fprintf(&b, `---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: app-%d
  namespace: bench
  labels:
    app: app-%d
spec:
  replicas: 2
  selector:
    matchLabels:
      app: app-%d
  template:
    metadata:
      labels:
        app: app-%d
    spec:
      containers:
      - name: app
        image: nginx:1.27
        ports:
        - containerPort: 8080
          name: http
        resources:
          requests:
            cpu: 100m
`, i, i, i, i)
	}
	return []byte(b.String())
}

// cpuTime is the process's user+system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkInject10k injects a 10,000-object multi-document file; the
// product target is well under 2 s per operation.
func BenchmarkInject10k(b *testing.B) {
	data := manifest10k()
	for _, manual := range []bool{false, true} {
		b.Run(map[bool]string{false: "annotate", true: "manual"}[manual], func(b *testing.B) {
			b.SetBytes(int64(len(data)))
			start := cpuTime()
			for b.Loop() {
				_, res, err := Inject(data, testOptions(manual))
				if err != nil || len(res) != 10000 {
					b.Fatalf("%v, %d results", err, len(res))
				}
			}
			// CPU time is the figure that does not depend on how busy the
			// machine is (wall time does, a lot, on shared CI runners).
			b.ReportMetric(float64((cpuTime()-start).Nanoseconds())/float64(b.N), "cpu-ns/op")
		})
	}
}
