package sidecar

import (
	"bytes"
	"os"
	"strconv"
	"testing"
)

// fileRSS is the process's resident file-backed memory in kB.
func fileRSS(t *testing.T) int64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range bytes.Split(b, []byte{'\n'}) {
		if f := bytes.Fields(line); len(f) >= 2 && string(f[0]) == "RssFile:" {
			n, _ := strconv.ParseInt(string(f[1]), 10, 64)
			return n
		}
	}
	t.Fatal("no RssFile in /proc/self/status")
	return 0
}

// TestReleaseCode: the executable's code pages leave the RSS, and the
// process runs on (its code faults back in).
func TestReleaseCode(t *testing.T) {
	before := fileRSS(t)
	released := releaseCode()
	after := fileRSS(t)
	if released == 0 {
		t.Fatal("nothing released")
	}
	if after >= before {
		t.Errorf("file-backed RSS %d kB before, %d kB after releasing %d bytes: want less", before, after, released)
	}
	// Still running: code that was unmapped works.
	if got := strconv.Itoa(42) + string(bytes.ToUpper([]byte("ok"))); got != "42OK" {
		t.Errorf("got %q", got)
	}
	t.Logf("file-backed RSS %d kB → %d kB (%d bytes of mappings released)", before, after, released)
}
