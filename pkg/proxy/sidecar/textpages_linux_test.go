package sidecar

import (
	"bytes"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestReleaseCode: the executable's code pages leave the RSS, and the
// process runs on (its code faults back in).
func TestReleaseCode(t *testing.T) {
	before := fileRSS()
	released := releaseCode()
	after := fileRSS()
	if released == 0 {
		t.Fatal("nothing released")
	}
	if after >= before {
		t.Errorf("file-backed RSS %d bytes before, %d after releasing %d bytes: want less", before, after, released)
	}
	// Still running: code that was unmapped works.
	if got := strconv.Itoa(42) + string(bytes.ToUpper([]byte("ok"))); got != "42OK" {
		t.Errorf("got %q", got)
	}
	t.Logf("file-backed RSS %d → %d bytes (%d bytes of mappings released)", before, after, released)
}

// TestFileRSS: the figure read from the open statm is the kernel's
// file-backed RSS (RssFile and RssShmem in /proc/self/status), read anew
// each time.
func TestFileRSS(t *testing.T) {
	status := func() int64 {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			t.Fatal(err)
		}
		var kb int64
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) >= 2 && (f[0] == "RssFile:" || f[0] == "RssShmem:") {
				n, _ := strconv.ParseInt(f[1], 10, 64)
				kb += n
			}
		}
		return kb << 10
	}
	for i := 0; i < 2; i++ { // the second read is of the file already open
		fileRSS() // their code faulted in, so that the two agree
		status()
		got, want := fileRSS(), status()
		if got <= 0 || got < want-256<<10 || got > want+256<<10 {
			t.Errorf("read %d: fileRSS %d bytes, status says %d", i, got, want)
		}
		releaseCode()
	}
}
