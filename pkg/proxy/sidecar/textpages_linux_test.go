package sidecar

import (
	"bytes"
	"hash/adler32"
	"hash/crc32"
	"hash/fnv"
	"os"
	"runtime"
	"runtime/debug"
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

// TestSplitMappings: once releaseCode has run, the executable's read-only
// mappings are cut into single pages, so that a fault maps no neighbour
// (fault-around); a page the process runs faults back in alone.
func TestSplitMappings(t *testing.T) {
	exe, err := os.Readlink("/proc/self/exe")
	if err != nil {
		t.Fatal(err)
	}
	releaseCode()
	b, err := os.ReadFile("/proc/self/maps")
	if err != nil {
		t.Fatal(err)
	}
	var n, size uint64
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) < 6 || f[5] != exe || (f[1] != "r-xp" && f[1] != "r--p") {
			continue
		}
		lo, hi, _ := strings.Cut(f[0], "-")
		start, _ := strconv.ParseUint(lo, 16, 64)
		end, _ := strconv.ParseUint(hi, 16, 64)
		n, size = n+1, size+end-start
	}
	page := uint64(os.Getpagesize())
	if size == 0 || n < size/page-4 {
		t.Fatalf("%d read-only mappings of %s for %d bytes: want one per page", n, exe, size)
	}

	// Touching one page now maps that page only: the file-backed RSS
	// grows by a page or a few, where fault-around mapped 16. Three
	// calls of code nothing else here has run: together they fault in
	// about 3–6 pages, and any one fault at 64 KiB is 16.
	// No collection in the window: the first one would fault in the
	// collector's code (the maps read above allocates enough to start it).
	runtime.GC()
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	fileRSS() // its own code faulted in
	before := fileRSS()
	sum := crc32.ChecksumIEEE([]byte("x")) + adler32.Checksum([]byte("x"))
	h := fnv.New32a()
	h.Write([]byte("x"))
	sum += h.Sum32()
	grew := fileRSS() - before
	if grew > 12*int64(page) {
		t.Errorf("three calls (%x) mapped %d bytes of the executable", sum, grew)
	}
	t.Logf("%d mappings for %d bytes; three calls mapped %d bytes", n, size, grew)
}
