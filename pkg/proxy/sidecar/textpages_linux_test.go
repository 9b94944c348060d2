package sidecar

import (
	"bytes"
	"strconv"
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
